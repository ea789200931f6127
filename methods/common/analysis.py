"""Shared plumbing of the ``analysis`` family (methods that train nothing): inputs, compressed copies,
result rows, output folders and small statistics.

- ``analysis_inputs(cfg, model=None)``: the evaluated model (built from ``cfg.model`` unless given)
  and the first ``method.num_images`` test images of ``cfg.data`` as two tensors.
- ``quick_compress(model, spec)``: a compressed COPY for before/after comparisons when no compressed
  checkpoint exists: ``{kind: prune, amount: 0.5}`` (per-layer L1-magnitude unstructured pruning of
  every conv/linear weight; the mask is applied and kept as a ``weight_mask`` buffer so complexity
  counts the sparsity) or ``{kind: quant, bits: 4}`` (symmetric per-output-channel uniform weight
  quantization, declared with ``weight_bits``). This is a probe, not any paper's method.
- ``provenance_row(cfg, ...)``: the provenance columns of a results row (engine/results.py COLUMNS).
- ``pearson``, ``spearman``, ``bootstrap_ci``: correlations across units (numpy, no scipy needed).
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import subprocess
import uuid

import numpy as np
import torch
import torch.nn as nn

COMPRESS_KINDS = ("prune", "quant")


# ---- compressed copies ---------------------------------------------------------------------------
def _layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def quick_compress(model: nn.Module, spec) -> tuple[nn.Module, str]:
    """A compressed deep copy of ``model`` and a short tag naming it (e.g. ``prune50``, ``quant4``)."""
    spec = dict(spec or {})
    kind = spec.get("kind")
    if kind not in COMPRESS_KINDS:
        raise ValueError(f"method.compare.kind must be one of {COMPRESS_KINDS}, got {kind!r}")
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


# ---- inputs --------------------------------------------------------------------------------------
def resolve_device(cfg) -> torch.device:
    want = str(cfg.get("trainer", {}).get("device", "auto") if cfg.get("trainer") else "auto")
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(want)


def analysis_inputs(cfg, model: nn.Module | None = None, device: torch.device | None = None):
    """(model in eval mode on ``device``, images, labels, data bundle) for an analysis config."""
    from data import build_data              # lands with the engine
    from methods.common.cam import take_images
    from models import build_model

    device = device or resolve_device(cfg)
    m = cfg.method
    bundle = build_data(cfg.data, batch_size=int(m.batch_size), device=device, seed=int(cfg.get("seed", 0) or 0))
    if model is None:
        model = build_model(cfg.model.name, num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                            image_size=bundle.image_size, pretrained=bool(cfg.model.get("pretrained", False)))
        ckpt = m.get("checkpoint")
        if ckpt:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            for key in ("model", "state_dict", "model_state"):
                if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                    state = state[key]
                    break
            model.load_state_dict(state)
    model = model.to(device).eval()
    x, y = take_images(bundle.test, int(m.num_images))
    return model, x.to(device), y.to(device), bundle


def model_tag(cfg) -> str:
    name = str(cfg.model.name)
    if cfg.method.get("checkpoint"):
        name += "-" + os.path.splitext(os.path.basename(str(cfg.method.checkpoint)))[0]
    elif cfg.model.get("pretrained"):
        name += "-pretrained"
    return name


def output_dir(cfg, tag: str | None) -> str:
    """``<method.output_dir>/<dataset>_<model>[_vs_<compressed tag>]`` (created)."""
    base = os.path.normpath(str(cfg.method.output_dir))
    sub = f"{cfg.data.name}_{model_tag(cfg)}" + (f"_vs_{tag}" if tag else "")
    path = os.path.join(base, sub)
    os.makedirs(path, exist_ok=True)
    return path


# ---- result rows ---------------------------------------------------------------------------------
def _git() -> tuple[str, bool]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=10).stdout.strip())
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return "", False


def provenance_row(cfg, model: nn.Module, input_shape: tuple, device: torch.device, wall: float) -> dict:
    """Columns every analysis row shares: ids, config, complexity of the analysed model, versions."""
    from engine.complexity import measure
    from omegaconf import OmegaConf

    c = measure(model, input_shape).summary()
    resolved = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    sha, dirty = _git()
    return {
        "run_id": uuid.uuid4().hex[:12], "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "experiment": cfg.get("name") or f"{cfg.data.name}_{cfg.model.name}_{cfg.method.name}",
        "reference": cfg.get("reference") or "", "paper": cfg.get("paper") or cfg.method.name,
        "dataset": cfg.data.name, "model": cfg.model.name, "fidelity": cfg.get("fidelity", "adhoc"),
        "seed": cfg.get("seed", 0), "epochs": 0, "steps": 0,
        **{k: c[k] for k in ("params", "macs", "flops", "bops", "ops", "size_bits", "sparsity", "nonzero_params",
                             "counter", "input_res")},
        "wall_time_s": round(wall, 2), "device": str(device), "world_size": 1,
        "git_sha": sha, "git_dirty": dirty,
        "config_hash": hashlib.sha1(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:10],
        "torch_version": torch.__version__, "command": "analyze(cfg)",
    }


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
