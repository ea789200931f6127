"""UCP: Uniform Channel Pruning for Deep CNN Compression and Acceleration (Chang et al., arXiv 2010.01251).

Paper note: ../shared/papers/ucp.md ("Algorithm", "Recipe"). Stages:

1. ``se_train``: MSEBs (``SEGate``) are inserted after a conv and before its BN (``gate_placement``):
   ``official`` (default; JingfeiChang/UCP models/se_resnet.py and se_vgg.py): basic-block ResNets get one gate
   after each block's conv1 (the channels UCP prunes), plain CNNs one after every prunable conv, bottlenecks
   one on the middle conv; ``every_conv`` (ours before issue 15: 19 gates on ResNet-20, incl. the stem and
   every conv2). The gate: g(x) = sigmoid(FC2(ReLU(FC1(GAP(x))))), hidden width C/16
   (no bias); when C <= 16 the hidden width is 1 and the FCs have bias. The network is trained with the gates.
2. **Channel importance** (Algorithm step 2), ``SEGate`` recording: s_{l,c} = E_x[g_{l,c}(x)], the gate averaged
   over a pass of the training data in eval mode (``channel_scores``). ``gate_training``: ``all`` (the official
   SE network trains every weight) or ``gates_only`` (backbone frozen during se_train: a short budget from a
   pretrained backbone goes into the gates only). ``selection``: ``se`` (the scores; default), ``random``
   or ``l1`` (filter L1 norm) choose the kept channels at the same widths - the controls that isolate the
   gates' choice. ``allocation``: ``ucp`` (the widths of step 3) or ``uniform`` (one rate over the inner groups
   removing the same share of FLOPs as UCP's widths, channels by score): in the retrain-from-scratch protocol only
   the widths matter, and this is the control that isolates UCP's width allocation. Golden: tests/golden/ucp/ (official SELayer, threshold and top-k blocks).
3. **Pruning rule** (step 3), ``threshold_count`` / ``ucp_keep``: keep channel c iff s_{l,c} > tau * mean_c s_{l,c}
   (tau = 0.999). Plain CNNs (VGG): per layer. ResNets with basic blocks (**uniform**): one kept width per stage
   for the block-inner channels — the stage's mean of the per-block threshold counts — with each block keeping
   its own top channels by importance; the residual width is not pruned. Bottleneck ResNets: only the middle
   3x3 conv of every block, per block, as for a plain CNN.
4. Gates removed, pruned channels cut (``prune_channels``), and the compact network **retrained from random
   initialisation** (``init: scratch``; ``init: inherit`` keeps the surviving weights for reduced budgets).

Interpretation (the note marks it unconfirmed): "uniform" is applied to the inner widths of basic blocks; the
official example hard-codes such widths (``stage_widths`` reproduces that form, e.g. [16, 32, 32]).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from methods import Method, register_method
from core.complexity import measure
from methods.common.channel_pruning import (apply_channel_config, channel_groups, filter_l1, kept_width,
                                            prune_channels, reinit_rule, reinitialize, top_k)
from methods.common.pruning_report import compression_report


class SEGate(nn.Module):
    """MSEB: channel gates from the global-average-pooled conv output; records their running sum when asked."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        small = channels <= reduction
        hidden = 1 if small else channels // reduction
        self.fc1 = nn.Linear(channels, hidden, bias=small)
        self.fc2 = nn.Linear(hidden, channels, bias=small)
        self.register_buffer("score_sum", torch.zeros(channels, dtype=torch.float64), persistent=False)
        self.register_buffer("score_count", torch.zeros((), dtype=torch.float64), persistent=False)
        self.recording = False

    def gates(self, x):
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))

    def forward(self, x):
        g = self.gates(x)
        if self.recording:
            self.score_sum += g.detach().double().sum(0)
            self.score_count += g.shape[0]
        return x * g[:, :, None, None]

    def score(self) -> torch.Tensor:
        if float(self.score_count) == 0:
            raise RuntimeError("SEGate.score(): no data was recorded")
        return (self.score_sum / self.score_count).float()


class SEConv(nn.Module):
    """conv -> MSEB (inserted before the conv's BN)."""

    def __init__(self, conv: nn.Conv2d, se: SEGate):
        super().__init__()
        self.conv, self.se = conv, se

    def forward(self, x):
        return self.se(self.conv(x))


def _set(model, name, module):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def insert_se(model: nn.Module, names, reduction: int = 16, generator: torch.Generator | None = None) -> nn.Module:
    mods = dict(model.named_modules())
    for n in names:
        conv = mods[n]
        se = SEGate(conv.out_channels, reduction)
        for fc in (se.fc1, se.fc2):
            bound = 1.0 / fc.in_features ** 0.5
            nn.init.uniform_(fc.weight, -bound, bound, generator=generator)
            if fc.bias is not None:
                nn.init.uniform_(fc.bias, -bound, bound, generator=generator)
        _set(model, n, SEConv(conv, se.to(conv.weight.device)))
    return model


def remove_se(model: nn.Module) -> nn.Module:
    for n, m in list(model.named_modules()):
        if isinstance(m, SEConv):
            _set(model, n, m.conv)
    return model


def se_gates(model: nn.Module) -> dict[str, SEGate]:
    return {n: m.se for n, m in model.named_modules() if isinstance(m, SEConv)}


@torch.no_grad()
def channel_scores(model: nn.Module, loader, device, max_batches: int | None = None) -> dict[str, torch.Tensor]:
    """s_{l,c} = mean over the data of the gate g_{l,c}(x), model in eval mode (Algorithm step 2)."""
    gates = se_gates(model)
    was = model.training
    model.eval()
    for g in gates.values():
        g.score_sum.zero_()
        g.score_count.zero_()
        g.recording = True
    try:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(0)
        for i, (x, _) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            model(x.to(device))
    finally:
        for g in gates.values():
            g.recording = False
        model.train(was)
    return {n: g.score() for n, g in gates.items()}


def threshold_count(scores: torch.Tensor, tau: float) -> int:
    """Number of channels with s_c > tau * mean(s) (at least 1)."""
    return max(1, int((scores > tau * scores.mean()).sum()))


def ucp_keep(model: nn.Module, scores: dict[str, torch.Tensor], tau: float = 0.999,
             stage_widths=None, skip=()) -> dict[str, list[int]]:
    """Kept channel indices per group by the UCP rule (plain: per layer; basic blocks: uniform per stage;
    bottlenecks: the 3x3 conv per block). ``scores`` are keyed by producer conv name."""
    spec = channel_groups(model)
    groups = spec.names("plain") + spec.names("inner")
    if not groups:
        raise ValueError("ucp: the model has no prunable inner/plain channel groups")
    keep = {}
    bottleneck = any(n.endswith(".conv2") for n in spec.names("inner"))
    if spec.names("stream") and not bottleneck:                  # basic-block ResNet: uniform per stage
        stages: dict[str, list[str]] = {}
        for n in spec.names("inner"):
            stages.setdefault(n.split(".")[0], []).append(n)
        if stage_widths is not None and len(stage_widths) != len(stages):
            raise ValueError(f"ucp.stage_widths needs {len(stages)} entries (one per stage), got {list(stage_widths)}")
        for i, (stage, names) in enumerate(stages.items()):
            if stage_widths is not None:
                k = int(stage_widths[i])
            else:
                k = round(sum(threshold_count(scores[n], tau) for n in names) / len(names))
            for n in names:
                if not 1 <= k <= spec[n].width:
                    raise ValueError(f"ucp: stage {stage} width {k} outside [1, {spec[n].width}]")
                keep[n] = top_k(scores[n], k).tolist()
        return keep
    targets = [n for n in spec.names("inner") if n.endswith(".conv2")] if bottleneck else spec.names("plain")
    for i, n in enumerate(targets):
        if i in set(skip):
            continue
        s = scores[spec[n].producers[0]]
        keep[n] = top_k(s, threshold_count(s, tau)).tolist()
    return keep


GATE_PLACEMENTS = ("official", "every_conv")
GATE_TRAINING = ("all", "gates_only")
SELECTIONS = ("se", "random", "l1")
ALLOCATIONS = ("ucp", "uniform")


def score_targets(model: nn.Module, placement: str = "official") -> list[str]:
    """Convs that get an MSEB. ``official``: the producers of the groups UCP prunes (basic-block ResNets: each
    block's conv1; plain CNNs: every prunable conv; bottlenecks: the middle conv); ``every_conv``: every conv
    producing a channel group."""
    if placement not in GATE_PLACEMENTS:
        raise ValueError(f"method.gate_placement={placement!r}; choose one of {GATE_PLACEMENTS}")
    spec = channel_groups(model)
    mods = dict(model.named_modules())
    if placement == "every_conv":
        groups = list(spec.groups.values())
    else:
        inner = spec.names("inner")
        if any(n.endswith(".conv2") for n in inner):                # bottlenecks: the 3x3 conv only
            inner = [n for n in inner if n.endswith(".conv2")]
        groups = [spec[n] for n in inner + spec.names("plain")]
    return [p for g in groups for p in g.producers if isinstance(mods[p], nn.Conv2d)]


def reselect(model: nn.Module, keep: dict[str, list[int]], how: str, generator: torch.Generator) -> dict:
    """The same widths as ``keep``, channels chosen at random or by filter L1 norm (controls for ``se``)."""
    if how == "se":
        return keep
    spec = channel_groups(model)
    out = {}
    for n, idx in keep.items():
        k = len(idx)
        if how == "random":
            out[n] = sorted(torch.randperm(spec[n].width, generator=generator)[:k].tolist())
        else:
            out[n] = top_k(filter_l1(model, spec[n]), k).tolist()
    return out


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(1, len(a | b))


@register_method("ucp")
class UCP(Method):
    family = "prune"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.init = cfg.get("init", "scratch")
        if self.init not in ("scratch", "inherit"):
            raise ValueError(f"method.init={self.init!r}; choose scratch (paper) or inherit (fine-tune)")
        self.reinit = reinit_rule(cfg)
        for key, allowed, default in (("gate_placement", GATE_PLACEMENTS, "official"),
                                      ("gate_training", GATE_TRAINING, "all"), ("selection", SELECTIONS, "se"),
                                      ("allocation", ALLOCATIONS, "ucp")):
            if cfg.get(key, default) not in allowed:
                raise ValueError(f"method.{key}={cfg.get(key)!r}; choose one of {allowed}")
        self.placement = cfg.get("gate_placement", "official")
        self.gate_training = cfg.get("gate_training", "all")
        self.selection = cfg.get("selection", "se")
        self.allocation = cfg.get("allocation", "ucp")
        self.signals: dict = {}
        names = [s["name"] for s in (cfg.get("stages") or [])]
        if names != ["se_train", "retrain"]:
            raise ValueError(f"method.stages for ucp must be [se_train, retrain] (in that order), got {names}")
        self.config = None
        self.scores = None
        self._dense = None
        self._input_shape = None

    def transform(self, model, ctx):
        self._input_shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        self._dense = copy.deepcopy(model)
        if self.config is not None:                     # finished run: the compact plain model
            return apply_channel_config(model, self.config)
        return insert_se(model, score_targets(model, self.placement), int(self.cfg.get("reduction", 16)),
                         self.generator)

    def on_stage_start(self, stage, model, ctx):
        if stage.name == "se_train" and self.gate_training == "gates_only":
            for n, p in model.named_parameters():
                p.requires_grad_(".se." in f".{n}")
        return model

    def on_stage_end(self, stage, model, ctx):
        if stage.name != "se_train":
            return model
        if self.scores is None:
            raw = channel_scores(model, ctx.train_loader, ctx.device, self.cfg.get("score_batches"))
            self.scores = {n: v.cpu() for n, v in raw.items()}
        for p in model.parameters():
            p.requires_grad_(True)
        plain = remove_se(model)
        keep = ucp_keep(plain, self.scores, float(self.cfg.get("threshold", 0.999)), self.cfg.get("stage_widths"),
                        self.cfg.get("skip_layers") or ())
        spec = channel_groups(plain)
        if self.allocation == "uniform":
            keep = self._uniform_keep(plain, keep, spec)
        l1 = {n: top_k(filter_l1(plain, spec[n]), len(v)).tolist() for n, v in keep.items()}
        chosen = reselect(plain, keep, self.selection, self.generator)
        # mechanism signals: how far the gates are from uniform (coefficient of variation of the scored
        # channels) and how much the SE choice overlaps the L1 choice at the same widths
        cv = [float(v.std() / v.mean()) for v in self.scores.values() if v.numel() > 1 and float(v.mean()) > 0]
        self.signals.update({
            "gate_score_cv_mean": sum(cv) / max(1, len(cv)),
            "se_l1_jaccard_mean": sum(jaccard(keep[n], l1[n]) for n in keep) / max(1, len(keep)),
            "chosen_se_jaccard_mean": sum(jaccard(keep[n], chosen[n]) for n in keep) / max(1, len(keep))})
        compact = prune_channels(plain, chosen)
        if self.init == "scratch":
            reinitialize(compact, self.generator, self.reinit)
        self.config = compact.channel_config
        return compact

    def _uniform_keep(self, plain, keep, spec):
        """Same FLOPs share as UCP's widths, one rate over the inner groups; top channels by score."""
        from methods.l1_prune import uniform_rate_for_flops

        shape = self._input_shape
        share = 1 - measure(prune_channels(plain, keep), shape).flops / measure(plain, shape).flops
        dense = measure(plain, shape).flops
        hi = uniform_rate_for_flops(plain, share, shape, "inner")

        def counts(rate):
            return {n: kept_width(spec[n].width, rate) for n in spec.names("inner")}

        def achieved(rate):
            return 1 - measure(apply_channel_config(plain, counts(rate)), shape).flops / dense

        # integer widths: the rate just below the bisection's bracket may land closer to UCP's share
        rate = min((hi, max(0.0, hi - 2e-3)), key=lambda r: abs(achieved(r) - share))
        self.signals.update(uniform_rate=rate, ucp_flops_share=share, uniform_flops_share=achieved(rate))
        return {n: top_k(self.scores[spec[n].producers[0]], k).tolist() for n, k in counts(rate).items()}

    def metrics(self, model):
        out = {"channel_config": self.config, "init": self.init,
               "threshold": float(self.cfg.get("threshold", 0.999)), "gate_placement": self.placement,
               "gate_training": self.gate_training, "selection": self.selection, "allocation": self.allocation,
               **self.signals}
        if self._dense is not None and self._input_shape is not None:
            out.update(compression_report(self._dense, model, self._input_shape, self.cfg.get("latency")))
        return out

    def state_dict(self):
        return {**super().state_dict(), "config": self.config, "signals": self.signals,
                "scores": {k: v.tolist() for k, v in self.scores.items()} if self.scores else None}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.config = state.get("config")
        self.signals = dict(state.get("signals") or {})
        s = state.get("scores")
        self.scores = {k: torch.tensor(v) for k, v in s.items()} if s else None

