"""DCFF: Training Compact CNNs for Image Classification using Dynamic-coded Filter Fusion (Lin et al., arXiv 2107.06916).

Paper note: ../shared/papers/dcff.md ("Algorithm", "Recipe", "Temperature schedule"). Every conv layer with
C_out filters keeps m = int(C_out (1 - rate)) output channels (``kept_width``); rates are the official
per-layer ``--cprate`` strings (``counts_from_rates`` maps them onto the backbone's channel groups).

- **Inter-similarity distribution** (Algorithm step 2), ``inter_similarity``:
  D(j,l) = ||W_j - W_l||_2,  p_j(l) = exp(-T D(j,l)) / sum_l' exp(-T D(j,l')).
- **Dynamic-coded importance** (step 3): s_j = sum_l KL(p_j || p_l); keep the m largest (``select``).
  Two rules (``method.score_rule``):
  * ``official`` (default; ``inter_similarity_official`` + ``importance_official``): what lmbxmu/DCFF
    main_cifar.py computes, in float32: D from scipy's cdist cast to float32, P = softmax(-D / (1/T)),
    KL_jl = mean_k p_j(k) log(p_j(k) / (p_l(k) + 1e-7)) (1e-7 in the denominator only, a mean over k),
    s_j = sum_l KL_jl. Once T is large (T(1) ~ 4600 with the default schedule) the off-diagonal p_j(l)
    underflow to 0 and 0 * log(0) = NaN; the official code then keeps the previous scores, so in effect the
    selection of epoch 0 (T = 1) is kept for the whole run, while P (the fusion weights) is recomputed every
    epoch and goes one-hot. Golden: tests/golden/dcff/ (the official code run on fixed filters).
  * ``recompute`` (our earlier rule, kept for the old rows): float64, 1e-7 inside both logs, a sum over k
    (``inter_similarity`` + ``dynamic_importance``); the scores stay finite but from epoch 1 all are equal
    ((C_out - 1) log 1e-7 + ...) and the choice is the tie-break: the lowest indices (``scratch``) or the
    inherited channels (``inherit``). In ``scratch`` mode the kept set jumps at epoch 1.
- **Filter fusion** (step 4), ``fuse``:  F_i = sum_l p_{j_i}(l) W_l for the m selected j_i — the selected rows of
  P (a constant buffer) times W, so gradients reach all C_out original filters. The bias is fused the same way.
- **Temperature schedule** ("Temperature schedule (code)"), ``temperature``:
  A = 2 (Te - Ts)(1 + e^{-kE}) / (1 - e^{-kE}),  T(e) = A / (1 + e^{-k e}) + Ts - A/2;  Ts=1, Te=10^4, k=1.
- P and the selection are recomputed at the start of every epoch (``FusedConv2d.refresh``), with T(e).
- **Export** (step 6): the compact model takes the fused filters (and fused bias), BN, FC, and plain
  ResNet-50 downsample convs; nothing is fine-tuned afterwards.

The compact model is trained from scratch (``init: scratch``, the paper's recipe). ``init: inherit`` starts
the fused model from the backbone's weights, for reduced-budget fine-tuning (our adaptation, not the paper's):
BN and the next layers inherit the L1-kept channels, and each fused layer breaks score ties in favour of those
channels (``FusedConv2d.prior``), so once P is one-hot the fused model is exactly the L1-pruned backbone. Before
that fix the tie-break took the lowest indices while the next layers held the L1 channels' weights, and the
fused model started at chance (scripts/dcff_fusion_probe.py, results/measurements/dcff_fusion_probe.csv).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from methods import Method, register_method
from methods.common.channel_pruning import (_shortcut_module, apply_channel_config, canonical_shortcut_map,
                                            channel_groups, counts_from_rates, filter_l1, prune_channels,
                                            reinit_rule, reinitialize, top_k)
from methods.common.pruning_report import compression_report


# ---------------------------------------------------------------------------------------------------
# the paper's equations
# ---------------------------------------------------------------------------------------------------
def temperature(epoch: float, epochs: int, t_start: float = 1.0, t_end: float = 1e4, k: float = 1.0) -> float:
    """T(e) = A / (1 + exp(-k e)) + Ts - A / 2 with A = 2 (Te - Ts)(1 + exp(-k E)) / (1 - exp(-k E))."""
    if epochs <= 0:
        raise ValueError(f"dcff temperature: epochs must be > 0, got {epochs}")
    a = 2.0 * (t_end - t_start) * (1.0 + math.exp(-k * epochs)) / (1.0 - math.exp(-k * epochs))
    return a / (1.0 + math.exp(-k * epoch)) + t_start - a / 2.0


def inter_similarity(weight: torch.Tensor, t: float) -> torch.Tensor:
    """P (C_out x C_out): row j is filter j's inter-similarity distribution softmax_l(-T ||W_j - W_l||)."""
    w = weight.detach().flatten(1).double()
    d = torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.softmax(-t * d, dim=1).to(weight.dtype)


def dynamic_importance(p: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """s_j = sum_l KL(p_j || p_l) = sum_l sum_k p_j(k) [log(p_j(k)+eps) - log(p_l(k)+eps)]."""
    p = p.double()
    logp = torch.log(p + eps)
    n = p.shape[0]
    return (n * (p * logp).sum(1) - (p * logp.sum(0, keepdim=True)).sum(1)).float()


def inter_similarity_official(weight: torch.Tensor, t: float) -> torch.Tensor:
    """P as the official code computes it: float64 Euclidean distances cast to float32, then a float32
    row-softmax of -D divided by 1/T."""
    w = weight.detach().flatten(1).double().cpu()
    d = torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist").float()
    return torch.softmax(-d / (1.0 / t), dim=1).to(weight.device)


def importance_official(p: torch.Tensor) -> torch.Tensor:
    """s_j = sum_l mean_k p_j(k) log(p_j(k) / (p_l(k) + 1e-7)), float32; NaN once off-diagonal entries of P
    underflow to 0 (0 * log 0)."""
    p = p.float()
    kl = (p[:, None, :] * (p[:, None, :] / (p + 1e-7)).log()).mean(2)
    return kl.sum(1)


SCORE_RULES = ("official", "recompute")


def select(scores: torch.Tensor, prior: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (ascending) of the ``k`` largest scores; equal scores go to the larger ``prior``, then the lower index."""
    by_prior = torch.sort(prior, descending=True, stable=True).indices
    order = by_prior[torch.sort(scores[by_prior], descending=True, stable=True).indices]
    return torch.sort(order[:k]).values


def fuse(weight: torch.Tensor, p_selected: torch.Tensor) -> torch.Tensor:
    """Fused filters F = P_sel W (m x C_in x k x k): weighted averages of all original filters."""
    return (p_selected @ weight.flatten(1)).view(p_selected.shape[0], *weight.shape[1:])


class FusedConv2d(nn.Conv2d):
    """A conv that holds all C_out original filters and outputs m fused ones (``out_channels`` = m).

    Buffers: ``fusion`` (P rows of the selected filters), ``selected``, ``scores``, ``prior`` (tie-break
    preference; default: lower index first), ``temperature`` and ``next_temperature`` (> 0: refresh P at the
    next training forward, i.e. at the start of the epoch; set it with :meth:`schedule_refresh`, which keeps a host
    copy so that the forward reads no device value)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kept: int, like: nn.Conv2d,
                 prior: torch.Tensor | None = None, score_rule: str = "official"):
        if score_rule not in SCORE_RULES:
            raise ValueError(f"dcff score_rule={score_rule!r}; choose one of {SCORE_RULES}")
        super().__init__(weight.shape[1] * like.groups, weight.shape[0], like.kernel_size, like.stride, like.padding,
                         like.dilation, like.groups, bias is not None, like.padding_mode)
        with torch.no_grad():
            self.weight.copy_(weight)
            if bias is not None:
                self.bias.copy_(bias)
        self.full_channels = weight.shape[0]
        self.out_channels = kept
        self.score_rule = score_rule
        self.register_buffer("fusion", torch.eye(self.full_channels)[:kept].clone())
        self.register_buffer("selected", torch.arange(kept))
        self.register_buffer("scores", torch.zeros(self.full_channels))
        self.register_buffer("prior", -torch.arange(self.full_channels, dtype=torch.float32) if prior is None
                             else prior.detach().float().clone())
        self.register_buffer("temperature", torch.tensor(0.0))
        self.register_buffer("next_temperature", torch.tensor(0.0))
        self._next_t = 0.0                         # host copy of next_temperature: no device sync per forward

    def schedule_refresh(self, t: float) -> None:
        """Refresh P at temperature ``t`` on the next training forward."""
        self._next_t = float(t)
        self.next_temperature.fill_(self._next_t)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "next_temperature" in state_dict:
            self._next_t = float(state_dict[prefix + "next_temperature"])

    @torch.no_grad()
    def refresh(self, t: float) -> None:
        if self.score_rule == "official":
            p = inter_similarity_official(self.weight, t)
            s = importance_official(p).to(self.scores.device)
        else:
            p = inter_similarity(self.weight, t)
            s = dynamic_importance(p)
        if torch.isfinite(s).all():
            self.scores.copy_(s)
        sel = select(self.scores, self.prior, self.out_channels)
        self.selected.copy_(sel)
        self.fusion.copy_(p[sel].to(self.fusion.dtype))
        self.temperature.fill_(t)

    def fused_weight(self):
        w = fuse(self.weight, self.fusion)
        b = self.fusion @ self.bias if self.bias is not None else None
        return w, b

    def forward(self, x):
        if self.training and self._next_t > 0:
            self.refresh(self._next_t)
            self.schedule_refresh(0.0)
        w, b = self.fused_weight()
        return self._conv_forward(x, w, b)

    @torch.no_grad()
    def export(self) -> nn.Conv2d:
        w, b = self.fused_weight()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, b is not None, self.padding_mode)
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
        return conv.to(self.weight.device)

    def extra_repr(self):
        return super().extra_repr() + f", fused_from={self.full_channels}"


def _set(model, name, module):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def build_fused(dense: nn.Module, counts: dict, init_keep: dict, fuse_downsample: bool = False,
                score_rule: str = "official") -> nn.Module:
    """The compact architecture of ``counts`` whose convs are FusedConv2d over the dense filters.

    ``init_keep`` gives, per group, which dense channels the compact BN/consumers start from (their
    input-channel weights); the group's fused producers prefer those channels on score ties. Option-A
    shortcuts use the canonical zero-pad of the compact widths (DCFF)."""
    spec = channel_groups(dense)
    compact = prune_channels(dense, init_keep, spec)
    for link in spec.shortcuts:
        k_dst, k_src = counts[link.dst], counts[link.src]
        _set(compact, link.name, _shortcut_module(canonical_shortcut_map(k_dst, k_src), k_src))
    compact.channel_config = {"groups": dict(counts), "shortcuts": {}}
    in_group = {c: g for g in spec.groups.values() for c in g.consumers}
    dense_mods = dict(dense.named_modules())
    for g in spec.groups.values():
        for p in g.producers:
            m = dense_mods[p]
            if not isinstance(m, nn.Conv2d) or (".downsample" in p and not fuse_downsample):
                continue
            w = m.weight.detach()
            if p in in_group:
                w = w.index_select(1, torch.as_tensor(sorted(init_keep.get(in_group[p].name,
                                                                            range(in_group[p].width)))))
            prior = None
            if g.name in init_keep:
                prior = -torch.arange(g.width, dtype=torch.float32)
                prior[torch.as_tensor(list(init_keep[g.name]), dtype=torch.long)] += g.width
            _set(compact, p, FusedConv2d(w, None if m.bias is None else m.bias.detach(), counts[g.name], m, prior,
                                           score_rule))
    return compact


def export_compact(model: nn.Module) -> nn.Module:
    """Replace every FusedConv2d by a plain conv holding its fused filters (Algorithm step 6)."""
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, FusedConv2d):
            _set(out, name, m.export())
    out.channel_config = copy.deepcopy(getattr(model, "channel_config", None))
    return out


def fused_layers(model: nn.Module) -> dict[str, FusedConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, FusedConv2d)}


# ---------------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------------
@register_method("dcff")
class DCFF(Method):
    family = "prune"

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.get("cprate") is None:
            raise ValueError("method.cprate is required for dcff: a per-layer rate string such as "
                             "\"[0.5]*2+[0.4]*2+[0.35]*3+[0.85]*6\" (see conf/method/dcff.yaml)")
        init = cfg.get("init", "scratch")
        if init not in ("scratch", "inherit"):
            raise ValueError(f"method.init={init!r}; choose scratch (paper) or inherit (fine-tune)")
        self.init = init
        self.reinit = reinit_rule(cfg)
        self.score_rule = cfg.get("score_rule", "official")
        if self.score_rule not in SCORE_RULES:
            raise ValueError(f"method.score_rule={self.score_rule!r}; choose official (lmbxmu/DCFF: float32, "
                             "keeps the previous scores once they are NaN) or recompute (float64, eps in both logs)")
        if init == "inherit" and self.score_rule == "official":
            raise ValueError("method.init=inherit needs method.score_rule=recompute: the inherited consumers hold the "
                             "L1-kept channels, which only the recompute rule's tie-break keeps selected")
        t = cfg.get("temperature") or {}
        self.t_start, self.t_end, self.t_k = float(t.get("start", 1.0)), float(t.get("end", 1e4)), float(t.get("k", 1.0))
        self.t_epochs = t.get("epochs")
        self.config = None          # final channel config once exported
        self.last_selection: dict = {}
        self.jaccard: list[dict] = []
        self._dense = None
        self._input_shape = None

    # structure ------------------------------------------------------------------------------------
    def transform(self, model, ctx):
        self._input_shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        self._dense = copy.deepcopy(model)
        if self.config is not None:           # rebuilding a finished run (evaluate.py)
            return apply_channel_config(model, self.config)
        spec = channel_groups(model)
        counts = {**{n: g.width for n, g in spec.groups.items()}, **counts_from_rates(model, self.cfg.cprate, spec)}
        if self.init == "scratch":
            reinitialize(model, self.generator, self.reinit)
            keep = {n: range(k) for n, k in counts.items()}
        else:
            keep = {n: top_k(filter_l1(model, spec[n]), k).tolist() for n, k in counts.items()}
        return build_fused(model, counts, keep, bool(self.cfg.get("fuse_downsample", False)), self.score_rule)

    def _epochs(self) -> int:
        if self.t_epochs is None:
            raise ValueError("method.temperature.epochs (E of the schedule) is not set; "
                             "conf/method/dcff.yaml interpolates it from trainer.epochs")
        return int(self.t_epochs)

    def on_stage_start(self, stage, model, ctx):
        t0 = temperature(0, self._epochs(), self.t_start, self.t_end, self.t_k)
        for m in fused_layers(model).values():
            m.refresh(t0)
        self._record(model, 0)
        return model

    def _record(self, model, epoch):
        """Jaccard overlap |S_prev ∩ S| / |S_prev ∪ S| of the selected sets, averaged over layers
        (the note's mechanism check (c)); only the last selection is kept in the state."""
        sel = {n: m.selected.tolist() for n, m in fused_layers(model).items()}
        if self.last_selection and sel:
            vals = [len(set(self.last_selection[n]) & set(v)) / len(set(self.last_selection[n]) | set(v))
                    for n, v in sel.items() if n in self.last_selection]
            self.jaccard.append({"epoch": epoch, "jaccard": round(sum(vals) / len(vals), 4)})
        self.last_selection = sel

    def on_epoch_end(self, model, epoch, ctx):
        # epoch `epoch` ran with T(epoch); the next one starts (first training forward) with T(epoch + 1)
        if epoch > 0:
            self._record(model, epoch)
        t_next = temperature(epoch + 1, self._epochs(), self.t_start, self.t_end, self.t_k)
        for m in fused_layers(model).values():
            m.schedule_refresh(t_next)

    def on_stage_end(self, stage, model, ctx):
        if not fused_layers(model):
            return model
        compact = export_compact(model)
        self.config = compact.channel_config
        return compact

    # reporting ------------------------------------------------------------------------------------
    def metrics(self, model):
        out = {"channel_config": self.config, "init": self.init, "cprate": str(self.cfg.cprate),
               "score_rule": self.score_rule, "selection_jaccard": self.jaccard}
        if self._dense is not None and self._input_shape is not None:
            out.update(compression_report(self._dense, model, self._input_shape, self.cfg.get("latency")))
        return out

    def state_dict(self):
        return {**super().state_dict(), "config": self.config, "last_selection": self.last_selection,
                "jaccard": self.jaccard}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.config = state.get("config")
        self.last_selection = dict(state.get("last_selection") or {})
        self.jaccard = list(state.get("jaccard") or [])
