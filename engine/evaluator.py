"""``evaluate_checkpoint(cfg)``: rebuild a model (ours from its checkpoint, or pretrained weights), evaluate it,
recompute its complexity and append a results row.

A checkpoint written by ``train.py`` (``final.pt``) carries its config and method state: the model and
method come from it; the data too, unless ``data=...`` is given on the command line.
"""
from __future__ import annotations

import os
import time

import torch
from omegaconf import OmegaConf

from data import build_data
from engine import checkpoint
from engine.complexity import format_table, measure
from engine.config import validate
from engine.evaluation import evaluate
from engine.results import append_row
from engine.runner import (Launch, apply_pretrained_normalization, build_backbone, pick_device, result_row,
                           results_path)
from methods import RunContext, build_method


def merge_checkpoint_config(cfg, saved: dict, data_overridden: bool):
    """The checkpoint's model/method (and data unless overridden) onto the current config."""
    saved = OmegaConf.create(saved)
    merged = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    merged.model, merged.method = saved.model, saved.method
    if not data_overridden:
        merged.data = saved.data
    for key in ("paper", "name", "variant"):
        if merged.get(key) is None and saved.get(key) is not None:
            merged[key] = saved[key]
    return merged


def evaluate_checkpoint(cfg, data_overridden: bool = False) -> dict:
    launch = Launch.of(cfg)    # as launched: the checkpoint's own config is an input, not part of the hash
    launch.announce()
    blob = None
    if cfg.get("checkpoint"):
        if not os.path.exists(cfg.checkpoint):
            raise FileNotFoundError(f"checkpoint={cfg.checkpoint} does not exist")
        blob = checkpoint.load(cfg.checkpoint)
        if isinstance(blob, dict) and "config" in blob:
            cfg = merge_checkpoint_config(cfg, blob["config"], data_overridden)
    validate(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    device = pick_device(cfg.trainer.device)
    apply_pretrained_normalization(cfg)
    data = build_data(cfg.data, batch_size=int(cfg.trainer.eval_batch_size), device=device,
                      eval_batch_size=int(cfg.trainer.eval_batch_size))
    model = build_backbone(cfg, data.num_classes, data.in_channels, data.image_size)
    method = build_method(cfg.method)
    method.generator.manual_seed(int(cfg.seed))
    if isinstance(blob, dict) and "method" in blob:
        method.load_state_dict(blob["method"])
    ctx = RunContext(num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size,
                     device=device, train_loader=data.train, test_loader=data.test, seed=int(cfg.seed))
    model = method.transform(model, ctx)
    if blob is not None:
        model.load_state_dict(checkpoint.unwrap_state_dict(blob))
    model.to(device)
    t0 = time.time()
    ev = evaluate(model, data.test, device, cfg.trainer.limit_eval_batches)
    cost = measure(model, (data.in_channels, data.image_size, data.image_size))
    print(format_table(cost), flush=True)
    metrics = {**ev, "best_top1": ev["top1"], "steps": 0, "epochs": 0, "wall_time_s": time.time() - t0,
               **cost.summary(), "extra": {**method.metrics(model), "evaluated": cfg.get("checkpoint") or
                                           f"{cfg.model.name} pretrained={cfg.model.get('pretrained', False)}"}}
    append_row(results_path(cfg), result_row(cfg, metrics, device, 1, launch))
    print(f"evaluated: top1 {ev['top1']:.2f} top5 {ev['top5']:.2f} on {ev['samples']} {cfg.data.name} test images "
          f"| row -> {results_path(cfg)}", flush=True)
    return metrics
