"""Method-side helpers of the ``analysis`` family (methods that train nothing): compressed copies, small
statistics and figure saving. The pipeline (inputs, rows, output folders, the command line) is ``engine/analysis.py``.

- ``quick_compress(model, spec)``: a compressed COPY for before/after comparisons when no compressed
  checkpoint exists: ``{kind: prune, amount: 0.5}`` (per-layer L1-magnitude unstructured pruning of
  every conv/linear weight; the mask is applied and kept as a ``weight_mask`` buffer so complexity
  counts the sparsity) or ``{kind: quant, bits: 4}`` (symmetric per-output-channel uniform weight
  quantization, declared with ``weight_bits``). This is a probe, not any paper's method.
- ``pearson``, ``spearman``, ``bootstrap_ci``: correlations across units (numpy, no scipy needed).
- ``save_small_png``: a matplotlib figure as a palette PNG.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

COMPRESS_KINDS = ("prune", "quant")   # quick copies; "checkpoint" loads a real compressed run


# ---- compressed copies ---------------------------------------------------------------------------
def _layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def quick_compress(model: nn.Module, spec) -> tuple[nn.Module, str]:
    """A compressed deep copy of ``model`` and a short tag naming it (e.g. ``prune50``, ``quant4``)."""
    spec = dict(spec or {})
    kind = spec.get("kind")
    if kind not in COMPRESS_KINDS:
        raise ValueError(f"method.compare.kind must be one of {COMPRESS_KINDS + ('checkpoint',)}, got {kind!r}")
    out = copy.deepcopy(model).eval()
    if kind == "prune":
        amount = float(spec.get("amount", 0.5))
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"method.compare.amount must be in [0, 1), got {amount}")
        for _, m in _layers(out):
            w = m.weight
            k = int(round(amount * w.numel()))
            mask = torch.ones_like(w)
            if k > 0:
                idx = w.abs().flatten().argsort(stable=True)[:k]    # the k smallest |w| of this layer
                mask.view(-1)[idx] = 0
            w.mul_(mask)
            m.register_buffer("weight_mask", mask)
        return out, f"prune{int(round(amount * 100))}"
    bits = int(spec.get("bits", 4))
    if not 2 <= bits <= 16:
        raise ValueError(f"method.compare.bits must be in [2, 16], got {bits}")
    levels = 2 ** (bits - 1) - 1
    for _, m in _layers(out):
        w = m.weight
        scale = w.abs().flatten(1).max(1).values.clamp_min(1e-12) / levels
        scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
        w.copy_((w / scale).round().clamp(-levels, levels) * scale)
        m.weight_bits = bits
    return out, f"quant{bits}"


# ---- statistics ----------------------------------------------------------------------------------
def pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _ranks(a) -> np.ndarray:
    """Average ranks from 0 (ties share their mean rank), as Spearman's rho needs."""
    a = np.asarray(a, dtype=np.float64)
    sorter = a.argsort(kind="stable")
    inv = np.empty(len(a), dtype=np.int64)
    inv[sorter] = np.arange(len(a))
    s = a[sorter]
    first = np.r_[True, s[1:] != s[:-1]]                 # start of each group of equal values
    dense = first.cumsum()[inv]                          # 1-based group id of every item
    bounds = np.r_[np.nonzero(first)[0], len(a)]         # group g spans [bounds[g-1], bounds[g])
    return 0.5 * (bounds[dense] + bounds[dense - 1] - 1)


def spearman(a, b) -> float:
    return pearson(_ranks(a), _ranks(b))


def bootstrap_ci(a, b, stat=spearman, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(a, b)`` resampling the paired items."""
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(a), len(a))
        v = stat(a[idx], b[idx])
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


# ---- figures -------------------------------------------------------------------------------------
def save_small_png(fig, path: str, dpi: int = 72) -> None:
    """Save a matplotlib figure as a 256-colour palette PNG (CAM overlays compress ~3x better)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
