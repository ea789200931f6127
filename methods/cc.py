"""Collaborative Compression, CC (Li et al., CVPR 2021): channel pruning and low-rank decomposition chosen jointly.
Note: ../shared/papers/cc.md ("Algorithm", "Recipe", "Counting"). What the note does not fix, and what we assumed,
is listed in docs/lowrank.md ("CC: assumptions").

Compression units of a compressible conv W (C_out x C_in x k x k), W_mat = reshape(W, C_out x C_in k k):
  (a) input channel j: zero W[:, j];            (b) singular value j of W_mat: remove sigma_j u_j v_j^T.
Layer cost (MACs) with p pruned input channels and r kept ranks (``layer_macs``):
  pruned only:  (C_in - p) k^2 C_out H W;    decomposed:  [(C_in - p) k^2 r + r C_out] H W;
  a layer is decomposed only where that is cheaper (our reading of "if no rank is removed it stays one conv").
Stage 1, Global Compression Rate Optimization (``unit_importance``, ``sensitivity_curve``, ``fit_exponential``,
``solve_lambda``):
  importance: channel j: sum (g[:, j] * W[:, j])^2;  rank j: sum (g * (W_{-j} - W))^2   (g = mean CE gradient);
  remove units in ascending importance, record (c = removed share of the layer's MACs, m = sum (g*(W_now - W))^2),
  m normalised by its max; fit m ~ p1 exp(p2 c) by least squares on log m with weights sqrt(m);
  R_l(lambda) = F_l / p2_l * ln(lambda / (p1_l p2_l)) clipped to [0, 0.95 F_l], sum_l R_l = com_ratio * F_total
  (equal marginal sensitivity dm_l/dc_l = lambda across unclipped layers).
  ``curve``: ``official`` (default; liuguoyou/...-Collaborative-Compression utils/models.py cal_compress_ratio,
  ``sensitivity_curve_official`` + ``fit_exponential_official``): the curve is ALWAYS the joint pruning + TD one,
  whatever ``com_ops`` (the ablations change Stage 2 only); a rank removal re-SVDs the current weight and
  zeroes the tracked singular value; c uses the decomposed-form MACs as soon as one rank is removed (negative
  c dropped), rank count min(C_out, C_in k_h) (the code's shape[1:3]); the fit is sklearn's weighted least
  squares on log(m + 1e-10) with sample weights sqrt(m) (weights on squared residuals). ``legacy`` (ours before
  issue 15, the old rows): the cheaper-form c, np.polyfit with w = sqrt(m) (= weights m on squared residuals),
  and for a single-op ablation a curve of that unit type only.
Stage 2, multi-step heuristic (``score_units``, ``compress_layer``): until the layer's removed MACs >= R_l, score
every available unit k by  B_k + gamma F_k  with
  B_k = sum (g * (W_k - W0))^2,
  F_k = sum[(g * (W_k - W0))^2 - 4/(n-1) g^2 * (W_k - W0) * W_k] + 1/(n-1) sum[(g * W_k)^2 + g^2 * M_k],
  (n remaining units, M_k = sum_r sigma_r^2 (u_r * u_r)(v_r * v_r)^T of W_k) and remove the ``interval`` =
  max(1, int(0.01 (C_in + rank))) lowest (M_k of a channel removal from the SVD of W with that channel
  zeroed, as cal_metric does; ``channel_forward: approx`` reuses the current SVD factors); then build the layer (methods/common/decomposition.LowRankConv2d:
  input-channel selection -> k x k conv (C_in - p -> r) -> 1x1 conv (r -> C_out)) and fine-tune the network
  (gradient clipping at max-norm 1, as in the official loop).
Accounting (``official_accounting``): the official counter (measure_flop_model) credits a pruned block conv2's
input channels to the block's conv1 (conv1 MACs x kept/C_in of conv2, as if conv1 had shrunk) and counts conv2
at the BLOCK INPUT's resolution (4x in the two downsampling blocks of a CIFAR ResNet); our row's ``macs`` is the
strict count of the built model (conv1 still computes every channel). Both are in the row (``macs_official``).
Golden: tests/golden/cc/ (the official functions on a 3-layer net).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.complexity import measure
from methods import Method, RunContext, Stage, register_method
from methods.common.decomposition import LowRankConv2d, conv_io_sizes, set_submodule

ALLOWED_KEYS = {"name", "family", "com_ratio", "com_ops", "com_gamma", "max_layer_ratio", "grad_batches",
                "clip_grad_norm", "eval_compression", "eval_limit_batches", "stages", "seed", "curve",
                "channel_forward"}
CURVES = ("official", "legacy")
CHANNEL_FORWARD = ("official", "approx")
OPS = ("pruning", "td")


# ---------------------------------------------------------------------------------------------------
# Layer state: current weight, removed channels, kept rank
# ---------------------------------------------------------------------------------------------------
@dataclass
class LayerGeom:
    c_out: int
    c_in: int
    k2: int
    hw: int          # output spatial size H_out * W_out
    in_hw: int | None = None   # input spatial size H_in * W_in (the official counter's block-input resolution)

    def dense_macs(self) -> int:
        return self.c_in * self.k2 * self.c_out * self.hw


def layer_macs(geom: LayerGeom, p: int, r: int | None) -> int:
    """MACs with p pruned input channels and r kept ranks (None: no rank removed); the cheaper form is built."""
    pruned = (geom.c_in - p) * geom.k2 * geom.c_out * geom.hw
    if r is None:
        return pruned
    return min(pruned, ((geom.c_in - p) * geom.k2 * r + r * geom.c_out) * geom.hw)


def full_rank(geom: LayerGeom, p: int = 0) -> int:
    return min(geom.c_out, (geom.c_in - p) * geom.k2)


def _svd(wm: torch.Tensor, r: int):
    u, s, vh = torch.linalg.svd(wm, full_matrices=False)
    return u[:, :r], s[:r], vh[:r]


# ---------------------------------------------------------------------------------------------------
# Stage 1: global compression rate optimization
# ---------------------------------------------------------------------------------------------------
def unit_importance(w: torch.Tensor, g: torch.Tensor, k2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-shot importance: channels sum (g[:, j] * W[:, j])^2; ranks sum (g * sigma_j u_j v_j^T)^2."""
    c_out = w.shape[0]
    wm, gm = w.reshape(c_out, -1), g.reshape(c_out, -1)
    ch = (gm * wm).pow(2).reshape(c_out, -1, k2).sum(dim=(0, 2))
    u, s, vh = _svd(wm, min(wm.shape))
    rk = s.pow(2) * ((u.pow(2).T @ gm.pow(2)) * vh.pow(2)).sum(dim=1)   # sum (g * sigma_j u_j v_j^T)^2
    return ch, rk


def sensitivity_curve(w: torch.Tensor, g: torch.Tensor, geom: LayerGeom) -> tuple[np.ndarray, np.ndarray]:
    """Remove units cumulatively in ascending one-shot importance; (c, m) after each removal, m / max(m)."""
    c_out, k2 = geom.c_out, geom.k2
    wm, gm = w.reshape(c_out, -1), g.reshape(c_out, -1)
    ch, rk = unit_importance(w, g, k2)
    u, s, vh = _svd(wm, min(wm.shape))
    units = sorted([(float(v), "ch", j) for j, v in enumerate(ch)] + [(float(v), "rk", j) for j, v in enumerate(rk)])
    low = wm.clone()
    mask = torch.ones(geom.c_in, dtype=wm.dtype)
    p, q, cs, ms = 0, 0, [], []
    dense = geom.dense_macs()
    for _, kind, j in units:
        if kind == "ch":
            mask[j], p = 0, p + 1
            if p == geom.c_in:
                break
        else:
            low = low - s[j] * torch.outer(u[:, j], vh[j])
            q += 1
        now = low * mask.repeat_interleave(k2)[None]
        r = None if q == 0 else min(full_rank(geom, p), min(wm.shape) - q)
        cs.append(1 - layer_macs(geom, p, r) / dense)
        ms.append(float((gm * (now - wm)).pow(2).sum()))
    c, m = np.asarray(cs), np.asarray(ms)
    return c, m / m.max() if m.max() > 0 else m


def fit_exponential(c: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """m ~ p1 exp(p2 c): least squares on log m, residuals weighted by sqrt(m) (points with c, m > 0)."""
    keep = (m > 0) & (c > 0)
    if keep.sum() < 2:
        raise ValueError("sensitivity curve has fewer than two usable points; cannot fit m = p1 exp(p2 c)")
    p2, logp1 = np.polyfit(c[keep], np.log(m[keep]), 1, w=np.sqrt(m[keep]))
    return float(np.exp(logp1)), float(max(p2, 1e-6))


def official_rank_count(geom: LayerGeom) -> int:
    """The official code's rank count min(C_out, C_in * k_h) (``reduce(mul, weight.shape[1:3])``); equal to the
    true min(C_out, C_in k^2) whenever C_out <= C_in k_h, as in every block conv of the supported nets."""
    kh = int(round(math.sqrt(geom.k2)))
    return min(geom.c_out, geom.c_in * kh)


def sensitivity_curve_official(w: torch.Tensor, g: torch.Tensor, geom: LayerGeom) -> tuple[np.ndarray, np.ndarray]:
    """cal_compress_ratio's curve: joint units sorted by one-shot importance, removed cumulatively (a rank removal
    re-SVDs the current weight and zeroes the tracked index), c by the pruned or decomposed MACs formula, points
    sorted by c, c > 0 kept, m / max(m)."""
    c_out, k2 = geom.c_out, geom.k2
    w = w.double()
    wm, gm = w.reshape(c_out, -1), g.double().reshape(c_out, -1)
    rank_num = official_rank_count(geom)
    units = [("pruning", j, float((gm.reshape(c_out, -1, k2)[:, j] * wm.reshape(c_out, -1, k2)[:, j]).pow(2).sum()))
             for j in range(geom.c_in)]
    u, s, vh = torch.linalg.svd(wm, full_matrices=False)
    for j in range(rank_num):
        s2 = s.clone()
        s2[j] = 0
        units.append(("td", j, float((gm * ((u * s2) @ vh - wm)).pow(2).sum())))
    units.sort(key=lambda x: x[2])                          # Python's stable sort, as the official code
    now = wm.clone()
    ez = cz = 0
    idx = list(range(rank_num))
    dense = geom.dense_macs()
    metrics, crs = [], []
    for kind, j, _ in units:
        if kind == "pruning":
            now = now.reshape(c_out, -1, k2).clone()
            now[:, j] = 0
            now = now.reshape(c_out, -1)
            cz += 1
        else:
            u, s, vh = torch.linalg.svd(now, full_matrices=False)
            s = s.clone()
            s[idx[j]] = 0
            for k in range(j + 1, rank_num):
                idx[k] -= 1
            now = (u * s) @ vh
            ez += 1
        metrics.append(float((gm * (now - wm)).pow(2).sum()))
        if ez == 0:
            macs = (geom.c_in - cz) * k2 * c_out * geom.hw
        else:
            macs = ((geom.c_in - cz) * k2 * (rank_num - ez) + (rank_num - ez) * c_out) * geom.hw
        crs.append((dense - macs) / dense)
    order = np.argsort(crs)
    c, m = np.sort(np.asarray(crs)), np.asarray(metrics)[order]
    m, c = m[c > 0], c[c > 0]
    return c, m / np.max(m)


def fit_exponential_official(c: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """sklearn LinearRegression().fit(c, log(m + 1e-10), sample_weight=sqrt(m)) in closed form: p2 the slope,
    p1 = exp(intercept). (p2 floored at 1e-6 as in ``fit_exponential``: R_l needs p2 > 0.)"""
    y, wt = np.log(m + 1e-10), np.sqrt(m)
    if (wt > 0).sum() < 2:
        raise ValueError("sensitivity curve has fewer than two usable points; cannot fit m = p1 exp(p2 c)")
    xm, ym = np.average(c, weights=wt), np.average(y, weights=wt)
    p2 = float(np.sum(wt * (c - xm) * (y - ym)) / np.sum(wt * (c - xm) ** 2))
    return float(np.exp(ym - p2 * xm)), max(p2, 1e-6)


def removed_macs(lam: float, p1: float, p2: float, f_l: float, max_share: float) -> float:
    """R_l(lambda) = F_l / p2 ln(lambda / (p1 p2)), clipped to [0, max_share F_l]."""
    return float(np.clip(f_l / p2 * math.log(lam / (p1 * p2)), 0.0, max_share * f_l))


def solve_lambda(fits: dict[str, tuple[float, float]], flops: dict[str, float], target: float,
                 max_share: float = 0.95) -> tuple[float, dict[str, float]]:
    """The lambda with sum_l R_l(lambda) = target, by bisection on log lambda (sum R_l is nondecreasing in
    lambda); the official code runs gradient descent on (sum R_l - target)^2 to the same root."""
    cap = sum(max_share * f for f in flops.values())
    if target > cap:
        raise ValueError(f"method.com_ratio asks to remove {target:.4g} MACs but the compressible layers allow at "
                         f"most {cap:.4g} (max_layer_ratio={max_share}); lower method.com_ratio")

    def total(log_lam):
        return sum(removed_macs(math.exp(log_lam), *fits[n], flops[n], max_share) for n in fits)

    lo = min(math.log(p1 * p2) for p1, p2 in fits.values()) - 1.0      # every R_l = 0 here
    hi = max(math.log(p1 * p2) + p2 * max_share for p1, p2 in fits.values()) + 1.0   # every R_l at its cap
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) < target else (lo, mid)
    lam = math.exp(hi)
    return lam, {n: removed_macs(lam, *fits[n], flops[n], max_share) for n in fits}


# ---------------------------------------------------------------------------------------------------
# Stage 2: multi-step heuristic compression of one layer
# ---------------------------------------------------------------------------------------------------
def score_units(wm: torch.Tensor, w0: torch.Tensor, gm: torch.Tensor, alive: torch.Tensor, r: int, k2: int,
                gamma: float, ops: tuple[str, ...], exact_channel_m: bool = False):
    """Scores B_k + gamma F_k of every available unit: (channel scores (C_in,), rank scores (r,), U, S, Vh).
    Channel removals use the current SVD factors with the channel's rows of V zeroed for M_k (see module doc)."""
    c_out = wm.shape[0]
    u, s, vh = _svd(wm, r)
    g2, d = gm.pow(2), wm - w0
    M = (u.pow(2) * s.pow(2)[None]) @ vh.pow(2)                     # sum_r sigma_r^2 (u_r^2)(v_r^2)^T
    n_alive = int(alive.sum())
    n = (n_alive if "pruning" in ops else 0) + (r if "td" in ops else 0)
    inv = 1.0 / max(n - 1, 1)

    def block(x):                                                    # per-input-channel sums
        return x.reshape(c_out, -1, k2).sum(dim=(0, 2))

    tot_gd2, tot_gdw = (g2 * d * d).sum(), (g2 * d * wm).sum()
    tot_gw2, tot_gm = (g2 * wm * wm).sum(), (g2 * M).sum()
    ch_scores = torch.full((alive.numel(),), float("inf"), dtype=wm.dtype)
    if "pruning" in ops and n_alive > 1:
        # W_k = W with channel j zeroed: D_k = -W0 there
        gd2 = tot_gd2 - block(g2 * d * d) + block(g2 * w0 * w0)
        gdw = tot_gdw - block(g2 * d * wm)
        gw2 = tot_gw2 - block(g2 * wm * wm)
        gm_ = tot_gm - block(g2 * M)
        if exact_channel_m:                        # cal_metric: M_k from the SVD of W with channel j zeroed
            gm_ = gm_.clone()
            for j in torch.nonzero(alive).flatten().tolist():
                wk = wm.reshape(c_out, -1, k2).clone()
                wk[:, j] = 0
                uk, sk, vk = torch.linalg.svd(wk.reshape(c_out, -1), full_matrices=False)
                gm_[j] = (g2 * ((uk.pow(2) * sk.pow(2)[None]) @ vk.pow(2))).sum()
        f = gd2 - 4 * inv * gdw + inv * (gw2 + gm_)
        ch_scores = torch.where(alive, gd2 + gamma * f, ch_scores)
    rk_scores = torch.full((r,), float("inf"), dtype=wm.dtype)
    if "td" in ops and r > 1:
        # Delta_k = sigma_k u_k v_k^T; every sum below is sigma-weighted u_k^T X v_k (no (r, C_out, n) tensors)
        def uxv(x):
            return ((u.T @ x) * vh).sum(dim=1)
        g2d, g2w = uxv(g2 * d) * s, uxv(g2 * wm) * s                   # sum g^2 D Delta_k, sum g^2 W Delta_k
        g2dd = s.pow(2) * ((u.pow(2).T @ g2) * vh.pow(2)).sum(dim=1)   # sum g^2 Delta_k^2
        gd2 = tot_gd2 - 2 * g2d + g2dd                                  # sum g^2 (D - Delta)^2
        gdw = tot_gdw - g2d - g2w + g2dd                                # sum g^2 (D - Delta)(W - Delta)
        gw2 = tot_gw2 - 2 * g2w + g2dd                                  # sum g^2 (W - Delta)^2
        gm_ = tot_gm - g2dd                                             # sum g^2 M_k
        f = gd2 - 4 * inv * gdw + inv * (gw2 + gm_)
        rk_scores = gd2 + gamma * f
    return ch_scores, rk_scores, u, s, vh


def compress_layer(w0: torch.Tensor, g: torch.Tensor, geom: LayerGeom, target_removed: float, gamma: float,
                   ops: tuple[str, ...], exact_channel_m: bool = False) -> dict:
    """Remove the lowest-scoring units, ``interval`` at a time, until the removed MACs reach ``target_removed``.
    Returns {keep: kept input channels, rank: kept rank or None, weight: final (C_out, C_in, k, k), removed: MACs}."""
    c_out, k2 = geom.c_out, geom.k2
    w0m, gm = w0.reshape(c_out, -1).double(), g.reshape(c_out, -1).double()
    wm = w0m.clone()
    alive = torch.ones(geom.c_in, dtype=torch.bool)
    r, rank_removed = full_rank(geom), False
    dense = geom.dense_macs()

    def removed():
        return dense - layer_macs(geom, geom.c_in - int(alive.sum()), r if rank_removed else None)

    while removed() < target_removed:
        ch_scores, rk_scores, u, s, vh = score_units(wm, w0m, gm, alive, r, k2, gamma, ops, exact_channel_m)
        scores = torch.cat([ch_scores, rk_scores])
        if not torch.isfinite(scores).any():
            break                                    # nothing left to remove
        interval = max(1, int(0.01 * (int(alive.sum()) + r)))
        order = torch.argsort(scores)[:interval]
        drop_rank = [int(i) - geom.c_in for i in order if i >= geom.c_in and torch.isfinite(scores[i])]
        drop_ch = [int(i) for i in order if i < geom.c_in and torch.isfinite(scores[i])]
        if drop_rank:
            keep_r = [i for i in range(r) if i not in drop_rank]
            wm = (u[:, keep_r] * s[keep_r]) @ vh[keep_r]
            r, rank_removed = len(keep_r), True
        for j in drop_ch:
            alive[j] = False
            wm = wm.reshape(c_out, geom.c_in, k2).clone()
            wm[:, j] = 0
            wm = wm.reshape(c_out, -1)
        r = min(r, full_rank(geom, geom.c_in - int(alive.sum())))
    keep = [j for j in range(geom.c_in) if alive[j]]
    if rank_removed and layer_macs(geom, geom.c_in - len(keep), r) >= layer_macs(geom, geom.c_in - len(keep), None):
        rank_removed = False                         # decomposition not cheaper: one conv (note, Stage 2 step 3)
    if not rank_removed:                             # pruning alone: the pruned original weights, no truncation
        wm = w0m * alive.to(w0m.dtype).repeat_interleave(k2)[None]
    return {"keep": keep, "rank": r if rank_removed else None, "weight": wm.reshape(w0.shape).to(w0.dtype),
            "removed": removed() if rank_removed else dense - layer_macs(geom, geom.c_in - len(keep), None)}


# ---------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------
def compressible_convs(model: nn.Module) -> list[str]:
    """CC's layer lists (note, "Layers compressed"): every ungrouped conv that is not a direct child of the model
    (ResNet block convs and downsample convs; the stem conv and the classifier stay as they are)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "." in n and m.groups == 1]


def _plain_batches(loader):
    """Batches without augmentation where the loader allows it (the note: gradients over the training set
    without augmentation); other loaders are used as they are."""
    saved = {k: getattr(loader, k) for k in ("crop_padding", "flip") if hasattr(loader, k)}
    try:
        for k in saved:
            setattr(loader, k, 0 if k == "crop_padding" else False)
        yield from loader
    finally:
        for k, v in saved.items():
            setattr(loader, k, v)


def mean_gradients(model: nn.Module, loader, names: list[str], device, max_batches: int | None) -> dict:
    """Gradient of the CE loss w.r.t. each named conv weight, averaged over batches, model in eval mode."""
    model.eval()
    grads = {n: torch.zeros_like(model.get_submodule(n).weight) for n in names}
    count = 0
    for i, (x, y) in enumerate(_plain_batches(loader)):
        if max_batches is not None and i >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        for n in names:
            grads[n] += model.get_submodule(n).weight.grad.detach()
        count += 1
    model.zero_grad(set_to_none=True)
    model.train()
    if count == 0:
        raise ValueError("method=cc: the training loader gave no batch for the gradient statistics")
    return {n: g / count for n, g in grads.items()}


@register_method("cc")
class CollaborativeCompression(Method):
    family = "lowrank"

    def __init__(self, cfg):
        super().__init__(cfg)
        unknown = set(cfg.keys()) - ALLOWED_KEYS
        if unknown:
            raise ValueError(f"method.{sorted(unknown)[0]}: unknown key for method=cc; allowed: {sorted(ALLOWED_KEYS)}")
        ops = tuple(cfg.get("com_ops") or OPS)
        bad = [o for o in ops if o not in OPS]
        if bad:
            raise ValueError(f"method.com_ops={list(ops)}: allowed values are {list(OPS)}")
        ratio = float(cfg.get("com_ratio", 0.5))
        if not 0 < ratio < 1:
            raise ValueError(f"method.com_ratio={ratio}: must be in (0, 1) (share of the network's MACs to remove)")
        self.ops, self.ratio = ops, ratio
        self.curve = cfg.get("curve", "official")
        if self.curve not in CURVES:
            raise ValueError(f"method.curve={self.curve!r}; choose one of {CURVES}")
        self.channel_forward = cfg.get("channel_forward", "official")
        if self.channel_forward not in CHANNEL_FORWARD:
            raise ValueError(f"method.channel_forward={self.channel_forward!r}; choose one of {CHANNEL_FORWARD}")
        self.plan: dict[str, dict] = {}
        self.compressed = False
        self.info: dict = {}

    def _geoms(self, model: nn.Module, ctx: RunContext) -> dict[str, LayerGeom]:
        names = compressible_convs(model)
        io = conv_io_sizes(model, names, (ctx.in_channels, ctx.image_size, ctx.image_size))
        out = {}
        for n in names:
            m = model.get_submodule(n)
            out[n] = LayerGeom(m.out_channels, m.in_channels, m.kernel_size[0] * m.kernel_size[1], math.prod(io[n][1]),
                               math.prod(io[n][0]))
        return out

    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.geoms = self._geoms(model, ctx)
        dense = measure(model, (ctx.in_channels, ctx.image_size, ctx.image_size))
        self.info.update(dense_macs=dense.macs, dense_params=dense.params)
        if self.compressed:          # rebuilding a finished run (evaluate.py): the compressed structure
            for n, p in self.plan.items():
                conv = model.get_submodule(n)
                set_submodule(model, n, LowRankConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0],
                                                      p["keep"], p["rank"], conv.stride, conv.padding, conv.dilation,
                                                      conv.bias is not None))
        return model

    def compress(self, model: nn.Module, grads: dict[str, torch.Tensor]) -> nn.Module:
        """Stage 1 (per-layer budgets R_l) then Stage 2 (per-layer heuristic removal) and the layer rebuild."""
        fits, flops, curves = {}, {}, {}
        for n, geom in self.geoms.items():
            w = model.get_submodule(n).weight.detach().double().cpu()
            g = grads[n].double().cpu()
            if self.curve == "official":
                fits[n] = fit_exponential_official(*sensitivity_curve_official(w, g, geom))
            else:
                c, m = sensitivity_curve(w, g, geom) if self.ops == OPS else self._single_op_curve(w, g, geom)
                fits[n] = fit_exponential(c, m)
            flops[n] = float(geom.dense_macs())
        target = self.ratio * self.info["dense_macs"]
        lam, budgets = solve_lambda(fits, flops, target, float(self.cfg.get("max_layer_ratio", 0.95)))
        gamma = float(self.cfg.get("com_gamma", 0.9))
        removed_total = 0
        for n, geom in self.geoms.items():
            conv = model.get_submodule(n)
            res = compress_layer(conv.weight.detach().cpu(), grads[n].cpu(), geom, budgets[n], gamma, self.ops,
                                 self.channel_forward == "official")
            src = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, bias=conv.bias is not None)
            with torch.no_grad():
                src.weight.copy_(res["weight"])
                if conv.bias is not None:
                    src.bias.copy_(conv.bias.detach().cpu())
            set_submodule(model, n, LowRankConv2d.from_conv(src, res["keep"], res["rank"]).to(conv.weight.device))
            self.plan[n] = {"keep": res["keep"], "rank": res["rank"]}
            removed_total += res["removed"]
            curves[n] = {"p1": fits[n][0], "p2": fits[n][1], "budget": budgets[n], "removed": res["removed"],
                         "pruned": geom.c_in - len(res["keep"]), "rank": res["rank"]}
        self.compressed = True
        self.info.update(lam=lam, target_removed_macs=target, removed_macs_planned=sum(budgets.values()),
                         removed_macs=removed_total, layers=curves)
        self.info.update(official_accounting(self.geoms, self.plan, self.info["dense_macs"] - removed_total))
        return model

    def _single_op_curve(self, w, g, geom):
        """Pruning-only or TD-only ablations: the same curve restricted to one unit type."""
        c_out, k2 = geom.c_out, geom.k2
        wm, gm = w.reshape(c_out, -1), g.reshape(c_out, -1)
        ch, rk = unit_importance(w, g, k2)
        u, s, vh = _svd(wm, min(wm.shape))
        cs, ms, dense = [], [], geom.dense_macs()
        if self.ops == ("pruning",):
            mask = torch.ones(geom.c_in, dtype=wm.dtype)
            for p, j in enumerate(torch.argsort(ch).tolist()[:-1], start=1):
                mask[j] = 0
                cs.append(1 - layer_macs(geom, p, None) / dense)
                ms.append(float((gm * (wm * mask.repeat_interleave(k2)[None] - wm)).pow(2).sum()))
        else:
            low = wm.clone()
            for q, j in enumerate(torch.argsort(rk).tolist()[:-1], start=1):
                low = low - s[j] * torch.outer(u[:, j], vh[j])
                cs.append(1 - layer_macs(geom, 0, min(wm.shape) - q) / dense)
                ms.append(float((gm * (low - wm)).pow(2).sum()))
        c, m = np.asarray(cs), np.asarray(ms)
        return c, m / m.max() if m.max() > 0 else m

    # ---- stages ----------------------------------------------------------------------------------
    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        if stage.params.get("compress") and not self.compressed:
            evaluate = ctx.evaluate if (self.cfg.get("eval_compression", True) and ctx.evaluate
                                        and ctx.test_loader is not None) else None
            limit = self.cfg.get("eval_limit_batches")
            if evaluate:
                self.info["top1_before_compression"] = float(evaluate(model, ctx.test_loader, limit_batches=limit)["top1"])
            grads = mean_gradients(model, ctx.train_loader, list(self.geoms), ctx.device, self.cfg.get("grad_batches"))
            model = self.compress(model, grads)
            if evaluate:
                self.info["top1_after_compression"] = float(evaluate(model, ctx.test_loader, limit_batches=limit)["top1"])
            ctx.log({f"cc/{k}": v for k, v in self.info.items() if isinstance(v, float)})
        return model

    def after_backward(self, model: nn.Module, step: int) -> None:
        clip = self.cfg.get("clip_grad_norm", 1.0)
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))

    # ---- reporting and state ---------------------------------------------------------------------
    def metrics(self, model: nn.Module) -> dict:
        out = {k: v for k, v in self.info.items()}
        out["com_ops"] = list(self.ops)
        out["curve"], out["channel_forward"] = self.curve, self.channel_forward
        out["plan"] = {n: {"pruned": self.geoms[n].c_in - len(p["keep"]), "rank": p["rank"]} for n, p in self.plan.items()}
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "compressed": self.compressed, "plan": self.plan, "info": self.info}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.compressed = bool(state.get("compressed", False))
        self.plan = state.get("plan", {})
        self.info.update(state.get("info", {}))


def official_accounting(geoms: dict[str, LayerGeom], plan: dict[str, dict], strict_macs: float) -> dict:
    """The official counter's MACs (measure_flop_model with BasicBlock_Compress) from our strict count: for every
    block whose conv2 lost input channels, conv1 is credited (its MACs x kept / C_in of conv2), and conv2 is
    counted at the block input's resolution (conv2's MACs x (block-input H W / conv2 output H W))."""
    def now(n):
        geom, p = geoms[n], plan[n]
        return layer_macs(geom, geom.c_in - len(p["keep"]), p["rank"])

    credit = overcount = 0.0
    for n2 in plan:
        if not n2.endswith(".conv2"):
            continue
        n1 = n2[: -len("conv2")] + "conv1"
        if n1 not in plan:
            continue
        g2 = geoms[n2]
        credit += now(n1) * (1 - len(plan[n2]["keep"]) / g2.c_in)
        block_in = geoms[n1].in_hw or g2.hw
        overcount += now(n2) * (block_in / g2.hw - 1)
    return {"macs_strict": float(strict_macs), "macs_official": float(strict_macs - credit + overcount),
            "official_conv1_credit": float(credit), "official_conv2_resolution_overcount": float(overcount)}
