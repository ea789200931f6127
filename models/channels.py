"""Compact (channel-pruned) forms of the backbones: channel groups, surgery and channel configs.

Lives with the models so that ``build_model(..., channel_config=...)`` builds a compact form without importing
any method (issue 15 broke the models <-> methods.common.channel_pruning cycle); the pruning *choices*
(filter norms, rates, re-initialisation) stay in methods/common/channel_pruning.py, which re-exports this module.

Structural channel pruning: kept-channel choices -> a physically smaller dense model.

The model is described by **channel groups**. A group is a set of tensor dimensions that must keep the
same channels: the output filters of its *producers* (convs / linears), the entries of its *norms*
(BatchNorm), depthwise convs that pass the channels through (*depthwise*), and the input channels of
its *consumers*. Residual streams make a group span several layers: every block of a ResNet stage
whose shortcut is the identity adds its last conv to the stream's group. Option-A (zero-padding)
shortcuts link two stream groups without parameters; they are handled exactly by an index map
(``IndexShortcut``), so surgery never changes what a kept channel computes.

``channel_groups(model)`` knows the suite's backbones, written out by hand per family:

- CIFAR ResNet-20..110 (option A), CIFAR ResNet-18/34 and torchvision ResNets (basic and bottleneck
  blocks with projection shortcuts);
- CIFAR VGG-16/19 (conv+bias -> BN -> ReLU, one Linear);
- torchvision MobileNetV2 (inverted residuals with depthwise convs);
- SSD detectors (``ssd_tiny`` and torchvision's ``ssd300_vgg16``, models/detection.py): the backbone's conv chain,
  with the convs that feed a detection head grouped together with that head's input channels (``_ssd_groups``).

Why not a dependency-tracing library: torch-pruning 1.6.1 treats the option-A ``F.pad`` as an
element-wise op, merges all three CIFAR stages into one group and prunes the classifier with the wrong
indices (the pruned ResNet-20 fails at its forward pass); see docs/pruning.md. The families here are
few and each group list is short and testable (tests/test_channel_pruning.py checks every backbone).

A **channel config** is a JSON-able dict ``{"groups": {name: kept count}, "shortcuts": {name: [src...]}}``;
``apply_channel_config`` rebuilds the compact architecture from it alone (kept channels become the
first ``k`` after surgery, and a non-canonical option-A map is stored under ``shortcuts``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn as nn


# ---------------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------------
class IndexShortcut(nn.Module):
    """Option-A shortcut after surgery: stride-2 subsampling, then output channel ``i`` takes input
    channel ``src[i]`` (or zeros where ``src[i] == -1``). The canonical zero-pad is one such map.

    The gather index (``-1`` -> 0) and the 0/1 channel mask are buffers made once: a forward is one
    ``index_select`` (plus one in-place multiply when some channels are zero), no per-call zeros, no boolean
    scatter (issue 15)."""

    def __init__(self, src: Iterable[int], stride: int = 2):
        super().__init__()
        src = torch.as_tensor(list(src), dtype=torch.long)
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("index", src.clamp(min=0), persistent=False)
        self.register_buffer("keep", (src >= 0).float().view(1, -1, 1, 1), persistent=False)
        self.has_zeros = bool((src < 0).any())
        self.stride = stride
        self.out_channels = len(src)

    def forward(self, x):
        out = x[:, :, ::self.stride, ::self.stride].index_select(1, self.index)
        if self.has_zeros:
            out.mul_(self.keep.to(out.dtype))
        return out

    def extra_repr(self):
        return f"src={self.src.tolist()}"


def canonical_shortcut_map(k_dst: int, k_src: int) -> list[int]:
    """The zero-pad map of a ``k_src -> k_dst`` option-A shortcut: ``(k_dst-k_src)//2`` zeros first."""
    half = max(k_dst - k_src, 0) // 2
    return [i - half if 0 <= i - half < k_src else -1 for i in range(k_dst)]


def _shortcut_module(src: list[int], k_src: int) -> nn.Module:
    from models.cifar_resnet import ZeroPadShortcut

    k_dst = len(src)
    if k_dst >= k_src and src == canonical_shortcut_map(k_dst, k_src):
        return ZeroPadShortcut(k_dst - k_src)
    return IndexShortcut(src)


# ---------------------------------------------------------------------------------------------------
# groups
# ---------------------------------------------------------------------------------------------------
@dataclass
class Group:
    name: str
    width: int = 0
    producers: list[str] = field(default_factory=list)   # conv/linear: output dim 0 (and bias)
    norms: list[str] = field(default_factory=list)       # BatchNorm over the channels
    depthwise: list[str] = field(default_factory=list)   # depthwise conv (groups == channels)
    consumers: list[str] = field(default_factory=list)   # conv/linear: input dim 1
    scales: list[str] = field(default_factory=list)      # 1-d parameters over the channels (SSD's L2Norm weight)
    kind: str = "inner"                                  # inner | stream | plain | head


@dataclass
class ShortcutLink:
    """An option-A shortcut module ``name`` mapping group ``src`` into group ``dst``."""

    name: str
    src: str
    dst: str


@dataclass
class GroupSpec:
    groups: dict[str, Group]
    shortcuts: list[ShortcutLink] = field(default_factory=list)

    def __getitem__(self, name):
        return self.groups[name]

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, g in self.groups.items() if kind is None or g.kind == kind]


def _resnet_groups(model: nn.Module) -> GroupSpec:
    """CIFAR option-A ResNets, CIFAR ResNet-18/34 and torchvision ResNets (basic and bottleneck)."""
    from models.cifar_resnet import ZeroPadShortcut

    groups: dict[str, Group] = {}
    links: list[ShortcutLink] = []
    stream = Group("conv1", producers=["conv1"], norms=["bn1"], kind="stream")
    groups[stream.name] = stream
    stages = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    for stage in stages:
        for j, block in enumerate(getattr(model, stage)):
            p = f"{stage}.{j}"
            bottleneck = hasattr(block, "conv3")
            stream.consumers.append(f"{p}.conv1")
            inner = ["conv1", "conv2"] if bottleneck else ["conv1"]
            for a, b in zip(inner, inner[1:] + ["conv3" if bottleneck else "conv2"]):
                g = Group(f"{p}.{a}", producers=[f"{p}.{a}"], norms=[f"{p}.bn{a[-1]}"], consumers=[f"{p}.{b}"])
                groups[g.name] = g
            last, last_bn = (f"{p}.conv3", f"{p}.bn3") if bottleneck else (f"{p}.conv2", f"{p}.bn2")
            down = getattr(block, "downsample", None)
            short = getattr(block, "shortcut", None)
            if down is not None:
                stream.consumers.append(f"{p}.downsample.0")
                stream = Group(stage, producers=[last, f"{p}.downsample.0"], norms=[last_bn, f"{p}.downsample.1"],
                               kind="stream")
                groups[stream.name] = stream
            elif isinstance(short, ZeroPadShortcut):
                new = Group(stage, producers=[last], norms=[last_bn], kind="stream")
                links.append(ShortcutLink(f"{p}.shortcut", stream.name, new.name))
                stream = new
                groups[stream.name] = stream
            elif isinstance(short, IndexShortcut):
                raise ValueError("channel_groups: model was already pruned with a non-canonical option-A map; "
                                 "prune the dense model once with all choices instead")
            else:
                if stream.name == "conv1":        # stem joins the first stage's stream
                    groups.pop("conv1")
                    stream.name = stage
                    groups[stage] = stream
                stream.producers.append(last)
                stream.norms.append(last_bn)
    stream.consumers.append("fc")
    return GroupSpec(groups, links)


def _chain_groups(named: Iterable[tuple[str, nn.Module]]) -> tuple[dict[str, Group], Group]:
    """A plain conv chain in execution order: one ``plain`` group per conv (the BNs after it as norms), read by the
    next conv. Returns the groups and the last one (its readers are the caller's to add)."""
    groups: dict[str, Group] = {}
    current = None
    for name, m in named:
        if isinstance(m, nn.Conv2d):
            if current is not None:
                current.consumers.append(name)
            current = Group(name, producers=[name], kind="plain")
            groups[name] = current
        elif isinstance(m, nn.BatchNorm2d):
            current.norms.append(name)
    return groups, current


def _vgg_groups(model: nn.Module) -> GroupSpec:
    groups, last = _chain_groups((f"features.{i}", m) for i, m in enumerate(model.features))
    last.consumers.append("fc")
    return GroupSpec(groups)


def _mobilenetv2_groups(model: nn.Module) -> GroupSpec:
    from torchvision.models.mobilenetv2 import InvertedResidual

    groups: dict[str, Group] = {}
    stream = Group("features.0", producers=["features.0.0"], norms=["features.0.1"], kind="stream")
    groups[stream.name] = stream
    for i, block in enumerate(model.features):
        if not isinstance(block, InvertedResidual):
            continue
        p = f"features.{i}.conv"
        layers = list(block.conv)
        if len(layers) == 3:      # t = 1: depthwise on the stream itself, then projection
            stream.depthwise.append(f"{p}.0.0")
            stream.norms.append(f"{p}.0.1")
            stream.consumers.append(f"{p}.1")
            proj, proj_bn = f"{p}.1", f"{p}.2"
        else:
            stream.consumers.append(f"{p}.0.0")
            g = Group(f"{p}.0.0", producers=[f"{p}.0.0"], norms=[f"{p}.0.1", f"{p}.1.1"],
                      depthwise=[f"{p}.1.0"], consumers=[f"{p}.2"])
            groups[g.name] = g
            proj, proj_bn = f"{p}.2", f"{p}.3"
        if block.use_res_connect:
            stream.producers.append(proj)
            stream.norms.append(proj_bn)
        else:
            stream = Group(f"features.{i}", producers=[proj], norms=[proj_bn], kind="stream")
            groups[stream.name] = stream
    last = len(model.features) - 1
    stream.consumers.append(f"features.{last}.0")
    head = Group(f"features.{last}.0", producers=[f"features.{last}.0"], norms=[f"features.{last}.1"],
                 consumers=["classifier.1"], kind="plain")
    groups[head.name] = head
    return GroupSpec(groups)


def _ssd_groups(model: nn.Module) -> GroupSpec:
    """SSD (torchvision ``SSD`` with ``ssd_tiny``'s ``TinyBackbone`` or ``ssd300_vgg16``'s VGG extractor).

    The backbone is a plain chain of convs (BN after each in ``ssd_tiny``, none in SSD300). A conv whose only reader
    is the next conv makes a ``plain`` group, as in CIFAR VGG. A conv whose output is feature map ``i`` (the last
    conv of each feature segment: ``stem``/``down``; ``features`` = conv4_3 and ``extra.0..4``, ``extra.0`` ending
    in fc7) is also read by the classification and regression head convs ``i``; it makes a ``head`` group that
    holds those two head convs as consumers (input channels only: their outputs, anchors x classes and anchors x 4,
    are untouched, so the detector's outputs keep their shapes) and, for SSD300's conv4_3, the L2Norm scale
    ``backbone.scale_weight`` as a ``scales`` member.

    Choice (include rather than exclude): with the consumers and the scale in the group the surgery is exact for
    every conv of the backbone (a channel that outputs zero can be cut without changing any head output: zeros add
    nothing to SSD300's channel-wise L2 norm either), so nothing needs special-casing in the surgery or the
    complexity count. The ``head`` kind keeps these groups out of the default scopes (``inner``, ``plain``,
    ``inner+plain``): a uniform rate then prunes only the chain-internal convs, and ``scope=all`` adds the feature
    maps the heads read. What is not reproduced by this choice: pruning conv4_3 changes the L2 normaliser of the
    kept channels (their norm is over fewer channels), which fine-tuning absorbs like any other pruning error.
    """
    backbone = model.backbone
    segments = [f"levels.{i}" for i in range(len(backbone.levels))] if hasattr(backbone, "levels") else \
        ["features"] + [f"extra.{i}" for i in range(len(backbone.extra))]
    if len(segments) != len(model.head.classification_head.module_list):
        raise ValueError(f"channel pruning of {type(backbone).__name__}: {len(segments)} feature segments but "
                         f"{len(model.head.classification_head.module_list)} head levels")
    last_conv = {}
    for name, m in backbone.named_modules():
        if isinstance(m, nn.Conv2d):
            last_conv[next(s for s in segments if name.startswith(s + "."))] = name
    groups, _ = _chain_groups((f"backbone.{name}", m) for name, m in backbone.named_modules())
    for level, seg in enumerate(segments):
        g = groups[f"backbone.{last_conv[seg]}"]
        g.kind = "head"
        g.consumers += [f"head.classification_head.module_list.{level}", f"head.regression_head.module_list.{level}"]
        if level == 0 and hasattr(backbone, "scale_weight"):
            g.scales.append("backbone.scale_weight")
    return GroupSpec(groups)


def channel_groups(model: nn.Module) -> GroupSpec:
    """The channel groups of a supported backbone (widths filled in from the model)."""
    import torchvision
    from models.cifar_resnet import CifarResNet
    from models.resnet import CifarResNetB
    from models.vgg import CifarVGG

    if isinstance(model, (CifarResNet, CifarResNetB, torchvision.models.ResNet)):
        spec = _resnet_groups(model)
    elif isinstance(model, CifarVGG):
        spec = _vgg_groups(model)
    elif isinstance(model, torchvision.models.MobileNetV2):
        spec = _mobilenetv2_groups(model)
    elif isinstance(model, torchvision.models.detection.ssd.SSD):
        spec = _ssd_groups(model)
    else:
        raise ValueError(f"channel pruning does not know {type(model).__name__}; supported: CIFAR ResNet "
                         "(option A), ResNet-18/34 (CIFAR or torchvision), torchvision ResNet-50, CIFAR VGG-16/19, "
                         "torchvision MobileNetV2, SSD (ssd_tiny, ssd300_vgg16)")
    modules = dict(model.named_modules())
    for g in spec.groups.values():
        first = modules[g.producers[0]]
        g.width = first.out_features if isinstance(first, nn.Linear) else first.out_channels
    return spec


# ---------------------------------------------------------------------------------------------------
# surgery
# ---------------------------------------------------------------------------------------------------
def _param(t: torch.Tensor, like: torch.Tensor) -> nn.Parameter:
    """A new parameter from ``t``, frozen when the one it replaces (``like``) was (e.g. SSD300's conv1)."""
    return nn.Parameter(t.detach().clone(), requires_grad=like.requires_grad)


def _prune_out(m: nn.Module, idx: torch.Tensor) -> None:
    m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
    if m.bias is not None:
        m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
    if isinstance(m, nn.Linear):
        m.out_features = len(idx)
    else:
        m.out_channels = len(idx)


def _prune_in(m: nn.Module, idx: torch.Tensor) -> None:
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        raise ValueError(f"consumer conv with groups={m.groups} is not supported (only dense or depthwise)")
    m.weight = _param(m.weight.data.index_select(1, idx), m.weight)
    if isinstance(m, nn.Linear):
        m.in_features = len(idx)
    else:
        m.in_channels = len(idx)


def _prune_norm(m: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    if m.affine:
        m.weight = _param(m.weight.data.index_select(0, idx), m.weight)
        m.bias = _param(m.bias.data.index_select(0, idx), m.bias)
    if m.track_running_stats:
        m.running_mean = m.running_mean.index_select(0, idx).clone()
        m.running_var = m.running_var.index_select(0, idx).clone()
    m.num_features = len(idx)


def _prune_depthwise(m: nn.Conv2d, idx: torch.Tensor) -> None:
    if m.groups != m.in_channels or m.in_channels != m.out_channels:
        raise ValueError("depthwise member must have groups == in_channels == out_channels")
    _prune_out(m, idx)
    m.in_channels = m.groups = len(idx)


def _prune_scale(model: nn.Module, name: str, idx: torch.Tensor) -> None:
    parent, _, leaf = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, leaf, _param(getattr(owner, leaf).data.index_select(0, idx), getattr(owner, leaf)))


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _as_index(keep, width: int, name: str) -> torch.Tensor:
    idx = torch.as_tensor(list(keep) if not torch.is_tensor(keep) else keep, dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise ValueError(f"group {name!r}: cannot keep zero channels")
    if int(idx.min()) < 0 or int(idx.max()) >= width or len(set(idx.tolist())) != idx.numel():
        raise ValueError(f"group {name!r}: kept indices must be distinct and in [0, {width}), got {idx.tolist()}")
    return torch.sort(idx).values


def prune_channels(model: nn.Module, keep: dict, spec: GroupSpec | None = None, inplace: bool = False) -> nn.Module:
    """A compact copy of ``model`` keeping channels ``keep[group] `` (indices) of each named group.

    Groups not named keep all channels. Weights, biases and BN statistics of kept channels are carried
    over; option-A shortcuts become exact index maps. The result carries ``channel_config``.
    """
    spec = spec or channel_groups(model)
    unknown = set(keep) - set(spec.groups)
    if unknown:
        raise ValueError(f"unknown channel groups {sorted(unknown)}; this model has {spec.names()}")
    out = model if inplace else copy.deepcopy(model)
    modules = dict(out.named_modules())
    idx = {n: _as_index(keep[n], g.width, n) if n in keep else torch.arange(g.width) for n, g in spec.groups.items()}
    for n, g in spec.groups.items():
        if n not in keep:
            continue
        i = idx[n]
        for p in g.producers:
            _prune_out(modules[p], i)
        for b in g.norms:
            _prune_norm(modules[b], i)
        for d in g.depthwise:
            _prune_depthwise(modules[d], i)
        for c in g.consumers:
            _prune_in(modules[c], i)
        for p in g.scales:
            _prune_scale(out, p, i)
    shortcuts = {}
    for link in spec.shortcuts:
        k_src, k_dst = idx[link.src], idx[link.dst]
        w_src, w_dst = spec[link.src].width, spec[link.dst].width
        half = (w_dst - w_src) // 2
        pos = {int(c): j for j, c in enumerate(k_src)}
        src = [pos.get(int(c) - half, -1) for c in k_dst]
        _set_module(out, link.name, _shortcut_module(src, len(k_src)))
        if src != canonical_shortcut_map(len(k_dst), len(k_src)):
            shortcuts[link.name] = src
    out.channel_config = {"groups": {n: len(idx[n]) for n in spec.groups}, "shortcuts": shortcuts}
    return out


def apply_channel_config(model: nn.Module, config: dict) -> nn.Module:
    """The compact architecture of ``config`` built from a dense ``model`` (weights: its first channels).

    This is what a saved compact model is rebuilt from before its state dict is loaded."""
    spec = channel_groups(model)
    counts = config.get("groups", config)
    keep = {}
    for n, k in counts.items():
        if n not in spec.groups:
            raise ValueError(f"channel config names group {n!r}; this model has {spec.names()}")
        if not 1 <= int(k) <= spec[n].width:
            raise ValueError(f"channel config: group {n!r} count {k} outside [1, {spec[n].width}]")
        if int(k) != spec[n].width:
            keep[n] = range(int(k))
    out = prune_channels(model, keep, spec)
    counts_full = out.channel_config["groups"]
    for link in spec.shortcuts:   # from counts alone: canonical zero-pad unless a map is stored
        src = list(config.get("shortcuts", {}).get(link.name, canonical_shortcut_map(counts_full[link.dst],
                                                                                       counts_full[link.src])))
        if len(src) != counts_full[link.dst]:
            raise ValueError(f"channel config: shortcut {link.name} map has {len(src)} entries, "
                             f"group {link.dst} has {counts_full[link.dst]}")
        _set_module(out, link.name, _shortcut_module(src, counts_full[link.src]))
    out.channel_config = {"groups": dict(counts_full), "shortcuts": dict(config.get("shortcuts", {}))}
    return out


def save_compact(model: nn.Module, path: str, arch: dict) -> None:
    """Save a compact model as ``{arch, channel_config, state_dict}``; ``arch`` = build_model kwargs."""
    torch.save({"arch": dict(arch), "channel_config": model.channel_config, "state_dict": model.state_dict()}, path)


def load_compact(path: str) -> nn.Module:
    """Rebuild a model saved by ``save_compact`` from its architecture and channel config alone."""
    from models import build_model

    blob = torch.load(path, map_location="cpu", weights_only=True)
    arch = dict(blob["arch"])
    dense = build_model(arch.pop("name"), **arch)
    model = apply_channel_config(dense, blob["channel_config"])
    model.load_state_dict(blob["state_dict"])
    return model
