"""The pipeline of the ``analysis`` family (methods that train nothing, e.g. xgradcam, unit_ablation).

``run_analysis(cfg, model=None, compressed=None, compressed_tag=None)`` validates ``cfg``, picks the device,
builds the inputs, times the method's computation and writes its rows. The method is ``methods.<method.name>``,
a module that provides:

- ``check_config(method_cfg)``: raise ``ValueError`` naming a bad ``method`` key (before any input is built);
- ``analyze(cfg, variants, x, y, num_classes) -> results``: the paper's computation on every model variant
  (``{"fp": model[, <compressed tag>: compressed copy]}``) and the images (timed as the rows' ``wall_time_s``);
- ``report(cfg, variants, results, x, out_dir, write_row) -> dict``: its files in ``out_dir``, one results row per
  ``write_row(net, **fields)`` call (``fields``: ``method``, ``variant``, ``top1``, ``extra``, ... of the row for
  model ``net``), and its summary metrics, ``top1`` (of the ``fp`` model) first.

Pieces:
- ``analysis_inputs``: the evaluated model (built from ``cfg.model``, or from ``method.checkpoint``, unless given) and
  ``method.num_images`` test images of ``cfg.data`` spread evenly over the split (the run's ``seed`` shifts them to a
  disjoint set: seeds are independent image samples), with the engine's device choice and pretrained normalisation.
- ``compressed_model``: what ``method.compare`` asks to analyse beside it (a quick copy
  (``methods.common.analysis.quick_compress``) or a checkpoint).
- ``analysis_row``: a results row with the engine's provenance columns and measured complexity.
- ``cli``: ``python scripts/analyze.py ...``.
"""
from __future__ import annotations

import importlib
import os
import sys
import time

import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core.complexity import measure
from data import build_data
from engine import checkpoint
from engine.config import validate
from engine.provenance import Invocation
from engine.results import append_row
from engine.runner import (Launch, apply_pretrained_normalization, build_backbone, pick_device, result_row,
                           transformed_model)
from methods import METHODS, list_methods
from methods.common.analysis import quick_compress
from methods.common.cam import take_images


# ---- inputs --------------------------------------------------------------------------------------
def prepare(cfg) -> tuple:
    """(validated, resolved copy of ``cfg`` with the pretrained weights' normalisation applied (as the engine
    evaluates them), its launch record (as launched, before that normalisation), the device)."""
    validate(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    launch = Launch.of(cfg)
    apply_pretrained_normalization(cfg)
    return cfg, launch, pick_device(cfg.trainer.device)


def load_checkpoint_model(path: str, bundle, device: torch.device, cfg=None) -> nn.Module:
    """A model from a checkpoint: ``train.py``'s ``final.pt`` (its config rebuilds the backbone and the
    method's transform, e.g. binary or pruned layers) or a bare state dict for ``cfg.model``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = checkpoint.load(path)
    saved = OmegaConf.create(blob["config"]) if isinstance(blob, dict) and "config" in blob else None
    src = saved if saved is not None else cfg
    if src is None:
        raise ValueError(f"{path} carries no config; give the model config to rebuild it")
    if saved is not None and saved.get("method") is not None:
        model = transformed_model(saved, bundle.num_classes, bundle.in_channels, bundle.image_size, device,
                                  blob.get("method"))[0]
    else:
        model = build_backbone(src, bundle.num_classes, bundle.in_channels, bundle.image_size)
    checkpoint.load_weights(model, blob, path, str(src.model.name))
    return model.to(device).eval()


def analysis_inputs(cfg, model: nn.Module | None, device: torch.device) -> tuple:
    """(model in eval mode, images, labels, data bundle) for a prepared analysis config."""
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
    return model, x[perm.to(x.device)].to(device), y[perm.to(y.device)].to(device), bundle


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


# ---- outputs -------------------------------------------------------------------------------------
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


def analysis_row(cfg, launch: Launch, model: nn.Module, input_shape: tuple, device: torch.device, wall: float,
                 **fields) -> dict:
    """A results row (engine.runner.result_row provenance) for an analysed model: its complexity is
    measured, ``fields`` (method, variant, top1, extra, ...) override the defaults."""
    metrics = {**measure(model, input_shape).summary(), "steps": 0, "epochs": 0, "wall_time_s": round(wall, 2)}
    metrics.update({k: fields.pop(k) for k in list(fields) if k in ("top1", "top5", "extra")})
    row = result_row(cfg, metrics, device, 1, launch)
    row.update(fields)
    return row


# ---- the pipeline --------------------------------------------------------------------------------
def run_analysis(cfg, model: nn.Module | None = None, compressed: nn.Module | None = None,
                 compressed_tag: str | None = None) -> dict:
    """Analyse ``cfg``'s model (and a compressed copy) with ``methods.<method.name>``: its rows, files and report.

    ``model``/``compressed`` may be passed by the caller (e.g. a model rebuilt from a checkpoint); otherwise the
    model is built from ``cfg.model`` (or ``method.checkpoint``) and the compressed copy from ``method.compare``.
    Returns the method's summary metrics of the main model, with ``output_dir`` and ``results_csv`` after ``top1``.
    """
    method = importlib.import_module(f"methods.{cfg.method.name}")
    method.check_config(cfg.method)
    t0 = time.time()
    cfg, launch, device = prepare(cfg)
    model, x, y, bundle = analysis_inputs(cfg, model, device)
    tag = compressed_tag
    if compressed is None:
        compressed, tag = compressed_model(cfg, model, bundle, device)
    variants = {"fp": model}
    if compressed is not None:
        tag = tag or "compressed"
        variants[tag] = compressed.to(device).eval()
    results = method.analyze(cfg, variants, x, y, bundle.num_classes)
    wall = time.time() - t0

    out_dir = output_dir(cfg, tag)
    results_csv = os.path.join(str(cfg.paths.results_dir), f"{cfg.get('paper') or cfg.method.name}.csv")

    def write_row(net: nn.Module, **fields) -> None:
        append_row(results_csv, analysis_row(cfg, launch, net, tuple(x.shape[1:]), device, wall, **fields))

    summary = method.report(cfg, variants, results, x, out_dir, write_row)
    return {"top1": summary["top1"], "output_dir": out_dir, "results_csv": results_csv, **summary}


def print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}", flush=True)


def cli(argv: list[str] | None = None) -> dict:
    """``python scripts/analyze.py experiment=xgradcam/cifar10_jpeg_resnet20 [overrides]``: compose the
    real config and run ``run_analysis`` (for a method of family ``analysis``), printing its metrics."""
    argv = list(sys.argv[1:] if argv is None else argv)
    Invocation.from_overrides(argv).declare()
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=argv)
    if cfg.method.get("family") != "analysis":
        names = " or ".join(f"method={n}" for n in list_methods() if METHODS.get(n).family == "analysis")
        raise ValueError(f"method={cfg.method.name} is not of family 'analysis' (give {names}, or an experiment of "
                         "theirs)")
    metrics = run_analysis(cfg)
    print_metrics(metrics)
    return metrics
