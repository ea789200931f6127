"""Channel-pruning choices: filter norms, top-k, DCFF rate strings -> kept counts, re-initialisation.

The structure (channel groups, surgery, channel configs, ``IndexShortcut``) lives in models/channels.py, so
that models build compact forms without importing methods; it is re-exported here for the methods.
"""
from __future__ import annotations

import ast
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from torchvision.models import resnet as tv_resnet

from core.complexity import measure
from models.cifar_resnet import BasicBlockA
from models.resnet import BasicBlock
from models.channels import (Group, GroupSpec, IndexShortcut, ShortcutLink, _set_module, _shortcut_module,  # noqa: F401
                             apply_channel_config, canonical_shortcut_map, channel_groups, load_compact,
                             prune_channels, save_compact)

# ---------------------------------------------------------------------------------------------------
# choices: norms, rates
# ---------------------------------------------------------------------------------------------------
def filter_l1(model: nn.Module, group: Group) -> torch.Tensor:
    """Per-channel L1 norm of a group's producer filters (summed over its producers)."""
    modules = dict(model.named_modules())
    return sum(modules[p].weight.detach().abs().flatten(1).sum(1) for p in group.producers)


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores (ties to the lower index), sorted ascending."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def kept_width(width: int, rate: float) -> int:
    """DCFF's kept count: ``int(C * (1 - rate))`` with Python truncation (note: recomputed_channel_configs)."""
    return max(1, int(width * (1 - rate)))


def parse_rates(text) -> list[float]:
    """Parse a per-layer rate string such as ``"[0.5]*2+[0.4]*2+([0.1]+[0.2])*3"`` (lists, + and *)."""
    if isinstance(text, (list, tuple)):
        return [float(x) for x in text]

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [float(ev(e)) for e in node.elts]
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return ev(node.left) + ev(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return ev(node.left) * ev(node.right)
        raise ValueError(f"rate string may contain only lists, numbers, + and *: {ast.dump(node)[:60]}")

    try:
        tree = ast.parse(str(text), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"cannot parse rate string {text!r}: {e}") from e
    out = ev(tree)
    if not isinstance(out, list):
        raise ValueError(f"rate string {text!r} is not a list")
    return [float(x) for x in out]


def rate_layout(model: nn.Module, spec: GroupSpec | None = None) -> list[str]:
    """Group names in the order of DCFF's ``--cprate`` entries for this backbone.

    CIFAR ResNets: every block's conv1 (3n), then the three stage widths (the first shared by the stem).
    ResNet-50 (bottleneck): stem, every block's conv1, every block's conv2, then the four stage widths.
    CIFAR VGG: one entry per conv. Other models have no published layout."""
    spec = spec or channel_groups(model)
    names = spec.names()
    inner = spec.names("inner")
    stream = spec.names("stream")
    if spec.names("plain") and not stream:       # VGG
        return names
    if any(n.endswith(".conv2") for n in inner):  # bottleneck
        conv1 = [n for n in inner if n.endswith(".conv1")]
        conv2 = [n for n in inner if n.endswith(".conv2")]
        stem = ["conv1"] if "conv1" in spec.groups else []
        return stem + conv1 + conv2 + [n for n in stream if n != "conv1"]
    if stream and inner and all(n.endswith(".conv1") for n in inner):
        return inner + stream
    raise ValueError(f"no per-layer rate layout is defined for {type(model).__name__}")


def counts_from_rates(model: nn.Module, rates, spec: GroupSpec | None = None) -> dict[str, int]:
    """Kept count per group from a DCFF-style rate list (see ``rate_layout``)."""
    spec = spec or channel_groups(model)
    rates = parse_rates(rates)
    layout = rate_layout(model, spec)
    if len(rates) != len(layout):
        raise ValueError(f"rate list has {len(rates)} entries; {type(model).__name__} needs {len(layout)} "
                         f"(order: {layout[:4]}...)")
    bad = [r for r in rates if not 0.0 <= r < 1.0]
    if bad:
        raise ValueError(f"rates must lie in [0, 1), got {bad}")
    return {n: kept_width(spec[n].width, r) for n, r in zip(layout, rates)}


SCOPES = ("inner", "plain", "inner+plain", "all")


def scope_groups(spec, scope: str) -> list[str]:
    """Names of the groups a uniform rate applies to: inner | plain | inner+plain | all (with the stream groups and
    the ``head`` groups of an SSD backbone: the convs whose outputs the detection heads read)."""
    if scope not in SCOPES:
        raise ValueError(f"method.scope={scope!r}; choose one of {SCOPES}")
    kinds = {"inner": ("inner",), "plain": ("plain",), "inner+plain": ("inner", "plain"),
             "all": ("inner", "plain", "stream", "head")}[scope]
    return [n for n in spec.names() if spec[n].kind in kinds]


def uniform_rate_for_flops(model, target: float, input_shape, scope: str = "inner", tol: float = 1e-3) -> float:
    """The uniform rate over ``scope`` groups whose compact model removes ``target`` of the FLOPs (bisection;
    kept widths are integers, so the achieved share is the closest reachable from below)."""
    spec = channel_groups(model)
    names = scope_groups(spec, scope)
    dense = measure(model, input_shape).flops

    def removed(rate):
        counts = {n: kept_width(spec[n].width, rate) for n in names}
        return 1 - measure(apply_channel_config(model, counts), input_shape).flops / dense

    lo, hi = 0.0, 0.99
    if removed(hi) < target:
        raise ValueError(f"a FLOPs reduction of {target} is not reachable by pruning the {scope} groups; "
                         f"lower it or widen the scope")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if removed(mid) < target else (lo, mid)
    return hi


def _init_fan_out(m: nn.Module, g: torch.Generator | None) -> None:
    """Ours before issue 15: convs kaiming-normal over fan-out, linears kaiming-normal over fan-in, zero biases."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in", generator=g)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _init_dcff_official(m: nn.Module, g: torch.Generator | None) -> None:
    """lmbxmu/DCFF ``_weights_init`` (its Fused/CompactResNet): ``kaiming_normal_`` (fan-in) on every conv and
    linear weight; biases keep PyTorch's default draw."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, generator=g)
        _torch_default_bias(m, g)


def _init_ucp_resnet_official(m: nn.Module, g: torch.Generator | None) -> None:
    """JingfeiChang/UCP ``models/resnet.py``: convs N(0, sqrt(2 / (k*k*out))); linears keep PyTorch's default
    (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in)))."""
    if isinstance(m, nn.Conv2d):
        _normal_over_fan_out(m, g)
    elif isinstance(m, nn.Linear):
        nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5, generator=g)
        _torch_default_bias(m, g)


def _init_ucp_vgg_official(m: nn.Module, g: torch.Generator | None) -> None:
    """JingfeiChang/UCP ``models/vgg.py`` ``_initialize_weights``: convs N(0, sqrt(2 / (k*k*out))) with zero bias,
    BN weight 0.5 and bias 0, linears N(0, 0.01) with zero bias."""
    if isinstance(m, nn.Conv2d):
        _normal_over_fan_out(m, g)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
        nn.init.constant_(m.weight, 0.5)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.01, generator=g)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _normal_over_fan_out(m: nn.Conv2d, g: torch.Generator | None) -> None:
    """UCP's ``normal_(0, math.sqrt(2. / n))`` with its own arithmetic: ``kaiming_normal_(mode="fan_out")`` computes
    sqrt(2) / sqrt(n), which differs from sqrt(2 / n) in the last bit for about half of all n."""
    nn.init.normal_(m.weight, 0.0, (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5, generator=g)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def _torch_default_bias(m: nn.Module, g: torch.Generator | None) -> None:
    """PyTorch's default bias draw for a conv / linear, U(+-1/sqrt(fan_in)), from ``g``."""
    if m.bias is not None:
        bound = 1.0 / (m.weight[0].numel() ** 0.5)
        nn.init.uniform_(m.bias, -bound, bound, generator=g)


REINIT_RULES = {"fan_out": _init_fan_out, "dcff_official": _init_dcff_official,
                "ucp_resnet_official": _init_ucp_resnet_official, "ucp_vgg_official": _init_ucp_vgg_official}


def _checked_rule(rule: str | None) -> str | None:
    if rule is not None and rule not in REINIT_RULES:
        raise ValueError(f"method.reinit={rule!r}; choose one of {sorted(REINIT_RULES)} (or null: fan_out)")
    return rule


@dataclass(frozen=True)
class Reinit:
    """How a from-scratch method re-initialises: ``rule`` (``REINIT_RULES``; None: ``fan_out``) and
    ``zero_residual_bn``: the BN that ends each residual branch starts at weight 0, so every block starts as its
    shortcut (Goyal et al. 2017, torchvision's ``zero_init_residual``). In none of the suite's pruning papers: a
    labelled deviation that takes the seed-dependent init transient of short from-scratch runs out of a
    comparison (docs/pruning.md)."""
    rule: str | None = None
    zero_residual_bn: bool = False


def reinit_rule(cfg) -> Reinit:
    """``method.reinit`` and ``method.zero_residual_bn``, checked at construction (reinit None: ``fan_out``; both
    unset, they keep the config hash of every row made before them)."""
    return Reinit(_checked_rule(cfg.get("reinit")), bool(cfg.get("zero_residual_bn", False)))


def residual_branch_end_norms(model: nn.Module) -> list[nn.Module]:
    """The BN that ends each residual branch (``bn2`` of basic blocks, ``bn3`` of bottlenecks) of the suite's
    ResNets, compact forms included; fails naming the model when it has none."""
    blocks = (BasicBlockA, BasicBlock, tv_resnet.BasicBlock, tv_resnet.Bottleneck)
    norms = [m.bn3 if isinstance(m, tv_resnet.Bottleneck) else m.bn2 for m in model.modules() if isinstance(m, blocks)]
    if not norms:
        raise ValueError(f"method.zero_residual_bn=true: {type(model).__name__} has no residual blocks; "
                         "set it false for this model")
    return norms


def reinitialize(model: nn.Module, generator: torch.Generator | None = None,
                 rule: str | Reinit | None = None) -> nn.Module:
    """Fresh random weights for every layer (training a compact model from scratch) by ``rule`` (a ``Reinit``, or
    a ``REINIT_RULES`` name; None: ``fan_out``, the rule of every row made before the official rules); BN layers
    are reset (weight 1, bias 0, fresh running statistics) before the rule sees them. Draws from ``generator``
    when given (a method's own generator, so a resumed run repeats the same init)."""
    spec = rule if isinstance(rule, Reinit) else Reinit(rule)
    init = REINIT_RULES[_checked_rule(spec.rule) or "fan_out"]
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
        init(m, generator)
    if spec.zero_residual_bn:
        for bn in residual_branch_end_norms(model):
            nn.init.zeros_(bn.weight)
    return model


def dead_channel_model(model: nn.Module, keep: dict, spec: GroupSpec | None = None) -> nn.Module:
    """Copy of ``model`` whose not-kept channels output exactly zero (BN weight and bias zeroed).

    Surgery of such a model must not change its outputs; tests use it on every backbone."""
    spec = spec or channel_groups(model)
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    with torch.no_grad():
        for n, k in keep.items():
            g = spec[n]
            dead = torch.ones(g.width, dtype=torch.bool)
            dead[torch.as_tensor(list(k), dtype=torch.long)] = False
            if not g.norms:
                raise ValueError(f"group {n} has no norm to silence")
            for b in g.norms:
                modules[b].weight[dead] = 0
                modules[b].bias[dead] = 0
    return out


__all__ = ["Group", "GroupSpec", "ShortcutLink", "IndexShortcut", "channel_groups", "prune_channels",
           "apply_channel_config", "save_compact", "load_compact", "filter_l1", "top_k", "kept_width",
           "parse_rates", "rate_layout", "counts_from_rates", "SCOPES", "scope_groups", "uniform_rate_for_flops",
           "reinitialize", "reinit_rule", "Reinit", "REINIT_RULES", "residual_branch_end_norms",
           "canonical_shortcut_map", "dead_channel_model"]
