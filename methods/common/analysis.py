"""Shared plumbing of the ``analysis`` family (methods that train nothing): inputs, compressed copies,
result rows, output folders and small statistics.

- ``analysis_inputs(cfg, model=None)``: the evaluated model (built from ``cfg.model``, or from
  ``method.checkpoint``, unless given) and ``method.num_images`` test images of ``cfg.data`` spread evenly over
  the split (the run's ``seed`` shifts them to a disjoint set: seeds are independent image samples), as two tensors, with the engine's device choice and pretrained normalisation.
- ``compressed_model``: what ``method.compare`` asks to analyse beside it (quick copy or checkpoint).
- ``quick_compress(model, spec)``: a compressed COPY for before/after comparisons when no compressed
  checkpoint exists: ``{kind: prune, amount: 0.5}`` (per-layer L1-magnitude unstructured pruning of
  every conv/linear weight; the mask is applied and kept as a ``weight_mask`` buffer so complexity
  counts the sparsity) or ``{kind: quant, bits: 4}`` (symmetric per-output-channel uniform weight
  quantization, declared with ``weight_bits``). This is a probe, not any paper's method.
- ``analysis_row(cfg, ...)``: a results row with the engine's provenance columns and measured complexity.
- ``pearson``, ``spearman``, ``bootstrap_ci``: correlations across units (numpy, no scipy needed).
"""
from __future__ import annotations

import copy
import os

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


# ---- inputs --------------------------------------------------------------------------------------
#: the launch record of each prepared config (``analysis_row`` writes it into the rows of that config)
_LAUNCHES: dict = {}


def prepare(cfg):
    """Validated, resolved copy of ``cfg`` with the pretrained weights' normalisation applied (as the
    engine evaluates them), and the device."""
    from omegaconf import OmegaConf

    from engine.config import validate
    from engine.runner import Launch, apply_pretrained_normalization, pick_device

    validate(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    launch = Launch.of(cfg)          # as launched, before the weights' normalisation is applied
    apply_pretrained_normalization(cfg)
    _LAUNCHES[id(cfg)] = launch
    return cfg, pick_device(cfg.trainer.device)


def load_checkpoint_model(path: str, bundle, device: torch.device, cfg=None) -> nn.Module:
    """A model from a checkpoint: ``train.py``'s ``final.pt`` (its config rebuilds the backbone and the
    method's transform, e.g. binary or pruned layers) or a bare state dict for ``cfg.model``."""
    from omegaconf import OmegaConf

    from engine import checkpoint
    from engine.runner import build_backbone
    from methods import RunContext, build_method

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = checkpoint.load(path)
    saved = OmegaConf.create(blob["config"]) if isinstance(blob, dict) and "config" in blob else None
    src = saved if saved is not None else cfg
    if src is None:
        raise ValueError(f"{path} carries no config; give the model config to rebuild it")
    model = build_backbone(src, bundle.num_classes, bundle.in_channels, bundle.image_size)
    if saved is not None and saved.get("method") is not None:
        method = build_method(saved.method)
        if "method" in blob:
            method.load_state_dict(blob["method"])
        ctx = RunContext(num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                         image_size=bundle.image_size, device=device)
        model = method.transform(model, ctx)
    checkpoint.load_weights(model, blob, path, str(src.model.name))
    return model.to(device).eval()


def analysis_inputs(cfg, model: nn.Module | None = None):
    """(cfg resolved, model in eval mode, images, labels, data bundle) for an analysis config."""
    from data import build_data
    from engine.runner import build_backbone
    from methods.common.cam import take_images

    cfg, device = prepare(cfg)
    m = cfg.method
    bundle = build_data(cfg.data, batch_size=int(m.batch_size), device=device, seed=int(cfg.get("seed", 0) or 0))
    if model is None:
        if m.get("checkpoint"):
            model = load_checkpoint_model(str(m.checkpoint), bundle, device, cfg)
        else:
            model = build_backbone(cfg, bundle.num_classes, bundle.in_channels, bundle.image_size)
    model = model.to(device).eval()
    # the run's seed picks one of the disjoint evenly spread image sets: seeds are independent replicates
    x, y = take_images(bundle.test, int(m.num_images), getattr(bundle, "test_size", None),
                       offset=int(cfg.get("seed", 0) or 0))
    # a fixed shuffle, so that the first-k subsets (sensitivity, faithfulness, grid rows) mix the classes
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(int(m.get("seed", 0) or 0)))
    return cfg, model, x[perm.to(x.device)].to(device), y[perm.to(y.device)].to(device), bundle


def compressed_model(cfg, model: nn.Module, bundle, device) -> tuple[nn.Module | None, str | None]:
    """The model to analyse beside ``model`` from ``method.compare``: a quick pruned/quantized copy, or
    ``{kind: checkpoint, path: ..., tag: ...}`` (e.g. a binarized or pruned run's ``final.pt``)."""
    spec = cfg.method.get("compare")
    if not spec:
        return None, None
    spec = dict(spec)
    if spec.get("kind") == "checkpoint":
        path = spec.get("path")
        if not path:
            raise ValueError("method.compare.kind=checkpoint needs method.compare.path")
        tag = spec.get("tag") or os.path.splitext(os.path.basename(os.path.dirname(path) or path))[0]
        return load_checkpoint_model(str(path), bundle, device, cfg), str(tag)
    return quick_compress(model, spec)


def model_tag(cfg) -> str:
    name = str(cfg.model.name)
    if cfg.method.get("checkpoint"):
        name += "-" + os.path.basename(os.path.dirname(str(cfg.method.checkpoint)) or str(cfg.method.checkpoint))
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
def analysis_row(cfg, model: nn.Module, input_shape: tuple, device: torch.device, wall: float, **fields) -> dict:
    """A results row (engine.runner.result_row provenance) for an analysed model: its complexity is
    measured, ``fields`` (method, variant, top1, extra, ...) override the defaults."""
    from core.complexity import measure
    from engine.runner import Launch, result_row

    metrics = {**measure(model, input_shape).summary(), "steps": 0, "epochs": 0, "wall_time_s": round(wall, 2)}
    metrics.update({k: fields.pop(k) for k in list(fields) if k in ("top1", "top5", "extra")})
    row = result_row(cfg, metrics, device, 1, _LAUNCHES.get(id(cfg)) or Launch.of(cfg))
    row.update(fields)
    return row


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


# ---- command line (until evaluate.py dispatches family=analysis) ------------------------------------
def cli(argv: list[str] | None = None) -> dict:
    """``python scripts/analyze.py experiment=xgradcam/cifar10_jpeg_resnet20 [overrides]``: compose the
    real config and run the ``analyze`` of ``methods.<method.name>`` (a method of family ``analysis``)."""
    import importlib
    import sys

    from hydra import compose, initialize_config_dir

    from engine.provenance import Invocation

    argv = list(sys.argv[1:] if argv is None else argv)
    Invocation.from_overrides(argv).declare()
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=argv)
    if cfg.method.get("family") != "analysis":
        raise ValueError(f"method={cfg.method.name} is not of family 'analysis' (give method=xgradcam or "
                         "method=unit_ablation, or an experiment of theirs)")
    metrics = importlib.import_module(f"methods.{cfg.method.name}").analyze(cfg)
    for k, v in metrics.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}", flush=True)
    return metrics


def save_small_png(fig, path: str, dpi: int = 72) -> None:
    """Save a matplotlib figure as a 256-colour palette PNG (CAM overlays compress ~3x better)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
