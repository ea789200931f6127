"""``evaluate_checkpoint(cfg)``: rebuild a model (ours from its checkpoint, or pretrained weights), evaluate it,
recompute its complexity and append a results row.

A checkpoint written by ``train.py`` (``final.pt``) carries its config and method state: the model and
method come from it; the data too, unless ``data=...`` is given on the command line.
"""
from __future__ import annotations

import os
import time

from omegaconf import OmegaConf

from data import build_data
from engine import checkpoint
from core.complexity import format_table, measure
from engine.config import ConfigError, validate
from engine.evaluation import evaluate, primary_metric
from engine.results import append_row
from engine.runner import (Launch, apply_pretrained_normalization, eval_extra, headline, measured_latency, pick_device,
                           result_row, results_path, transformed_model)


def merge_checkpoint_config(cfg, saved: dict, data_overridden: bool):
    """The checkpoint's model/method (and data unless overridden) onto the current config; the data files are
    looked up under the current ``paths.data_root`` (``DATA_ROOT``; a generated set: ``paths.cache_dir``), not the
    folder stored in the checkpoint."""
    saved = OmegaConf.create(saved)
    merged = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    merged.model, merged.method = saved.model, saved.method
    if not data_overridden:
        merged.data = saved.data
        if "root" in merged.data:    # a generated set (data.synthetic) lives under the cache folder
            merged.data.root = merged.paths.cache_dir if merged.data.get("synthetic") else merged.paths.data_root
    for key in ("paper", "name", "variant"):
        if merged.get(key) is None and saved.get(key) is not None:
            merged[key] = saved[key]
    return merged


def check_overrides_agree(cfg, saved: dict, overridden, path: str) -> None:
    """A ``model``/``method`` given with a checkpoint that carries its config must be the one it was trained with."""
    for key in overridden:
        group = key.split(".")[0]
        if group not in ("model", "method"):
            continue
        select = f"{group}.name" if key == group else key
        mine, theirs = OmegaConf.select(cfg, select), OmegaConf.select(OmegaConf.create(saved), select)
        if mine != theirs:
            raise ConfigError(f"{key}: checkpoint {path} was trained with {select}={theirs!r}, not {mine!r}; drop "
                              f"{key}= (a train.py checkpoint brings its own model and method)")


def check_weights_given(cfg) -> None:
    if not cfg.get("checkpoint") and not cfg.model.get("pretrained") and not cfg.get("allow_untrained"):
        raise ConfigError(f"nothing to evaluate: no checkpoint= and model.pretrained=false would evaluate a randomly "
                          f"initialised {cfg.model.name}; pass checkpoint=<final.pt>, model.pretrained=true, "
                          f"or allow_untrained=true")


def evaluate_checkpoint(cfg, overridden=()) -> dict:
    """``overridden``: the keys given on the command line (``data``, ``model.pretrained``, ...)."""
    launch = Launch.of(cfg)    # as launched: the checkpoint's own config is an input, not part of the hash
    launch.announce()
    validate(cfg)
    check_weights_given(cfg)
    blob = None
    if cfg.get("checkpoint"):
        if not os.path.exists(cfg.checkpoint):
            raise FileNotFoundError(f"checkpoint={cfg.checkpoint} does not exist")
        blob = checkpoint.load(cfg.checkpoint)
        if isinstance(blob, dict) and "config" in blob:
            check_overrides_agree(cfg, blob["config"], overridden, cfg.checkpoint)
            data_overridden = any(key.split(".")[0] in ("data", "experiment") for key in overridden)
            cfg = merge_checkpoint_config(cfg, blob["config"], data_overridden)
    validate(cfg, unknown_keys=False)     # the command line's keys were checked above; the checkpoint's are its own
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    device = pick_device(cfg.trainer.device, cfg.trainer.get("num_threads"))
    apply_pretrained_normalization(cfg)
    data = build_data(cfg.data, batch_size=int(cfg.trainer.eval_batch_size), device=device,
                      eval_batch_size=int(cfg.trainer.eval_batch_size))
    model, method = transformed_model(cfg, data.num_classes, data.in_channels, data.image_size, device,
                                      blob.get("method") if isinstance(blob, dict) else None,
                                      train_loader=data.train, test_loader=data.test, seed=int(cfg.seed))
    if blob is not None:
        checkpoint.load_weights(model, blob, cfg.checkpoint, cfg.model.name)
    model.to(device)
    t0 = time.time()
    ev = evaluate(model, data.test, device, cfg.trainer.limit_eval_batches)
    cost = measure(model, (data.in_channels, data.image_size, data.image_size))
    print(format_table(cost), flush=True)
    metrics = {**ev, f"best_{primary_metric(ev)}": ev[primary_metric(ev)], "steps": 0, "epochs": 0,
               "wall_time_s": time.time() - t0, **cost.summary(),
               "extra": {**method.metrics(model), **eval_extra({}, ev), "evaluated": cfg.get("checkpoint") or
                                           f"{cfg.model.name} pretrained={cfg.model.get('pretrained', False)}"}}
    latency = None
    if cfg.trainer.get("latency"):     # the method's deployed form, as a run measures it (trainer.latency=true)
        latency = measured_latency(*method.deployed(model), (data.in_channels, data.image_size, data.image_size))
        metrics["extra"]["latency"] = latency
    append_row(results_path(cfg), result_row(cfg, metrics, device, 1, launch, latency))
    print(f"evaluated: {headline(metrics)} on {ev['samples']} {cfg.data.name} test images "
          f"| row -> {results_path(cfg)}", flush=True)
    return metrics
