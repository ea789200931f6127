"""Optimizers and per-step learning-rate schedules (with linear warmup) from the trainer config."""
from __future__ import annotations

import math

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("constant", "step", "multistep", "cosine", "linear", "onecycle", "inv")


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_bn_bias: bool, decay_conv_only: bool = False):
    """Parameter groups. ``decay_conv_only``: weight decay only on conv weights (4-d parameters, or a name
    containing ``conv``), the rule of the binary papers' official ImageNet trainers (ir2net.md); else
    ``no_decay_bn_bias`` spares 1-d parameters (BN, biases); else everything decays."""
    if decay_conv_only:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (decay if (p.ndim == 4 or "conv" in name) else no_decay).append(p)
        return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    if not no_decay_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def split_lr_mults(model: torch.nn.Module, groups: list[dict], lr: float) -> list[dict]:
    """Caffe's per-blob ``lr_mult`` for biases: a module with a ``bias_lr_mult`` attribute (e.g. the Caffe-init
    LeNets: 2) puts its bias in a copy of its group with lr = ``lr * bias_lr_mult`` (weight decay unchanged, as
    Caffe's decay_mult 1); the schedule scales every group alike."""
    mult = {id(m.bias): float(m.bias_lr_mult) for m in model.modules()
            if getattr(m, "bias_lr_mult", None) not in (None, 1, 1.0) and getattr(m, "bias", None) is not None}
    if not mult:
        return groups
    out = []
    for g in groups:
        out.append({**g, "params": [p for p in g["params"] if id(p) not in mult]})
        for k in sorted({mult[id(p)] for p in g["params"] if id(p) in mult}):
            out.append({**g, "params": [p for p in g["params"] if mult.get(id(p)) == k], "lr": lr * k})
    return [g for g in out if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """``cfg`` is ``trainer.optimizer``."""
    groups = param_groups(model, float(cfg.weight_decay), bool(cfg.get("no_decay_bn_bias", False)),
                          bool(cfg.get("decay_conv_only", False)))
    groups = split_lr_mults(model, groups, float(cfg.lr))
    name = cfg.name
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov))
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise ValueError(f"trainer.optimizer.name={name!r} is not one of {', '.join(OPTIMIZERS)}")


def lr_factor(cfg, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based). ``cfg`` is ``trainer.scheduler``."""
    warmup = int(round(float(cfg.warmup_epochs) * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    name = cfg.name
    epoch = step / steps_per_epoch
    span = max(1, total_steps - warmup)
    t = min(1.0, (step - warmup) / span)
    floor = float(cfg.get("min_lr_scale", 0.0))
    if name == "constant":
        return 1.0
    if name == "step":
        return float(cfg.gamma) ** int(epoch // int(cfg.step_size))
    if name == "multistep":
        return float(cfg.gamma) ** sum(epoch >= m for m in cfg.milestones)
    if name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if name == "linear":
        return floor + (1 - floor) * (1 - t)
    if name == "onecycle":   # linear up to the peak over the first 30 %, cosine down to 1/1e4 of the peak
        up = 0.3
        if t < up:
            return 0.04 + 0.96 * t / up
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - up) / (1 - up)))
    if name == "inv":        # Caffe's "inv": (1 + gamma * iter) ** (-power)
        return (1 + float(cfg.gamma) * (step - warmup)) ** (-float(cfg.power))
    raise ValueError(f"trainer.scheduler.name={name!r} is not one of {', '.join(SCHEDULERS)}")


def build_scheduler(optimizer, cfg, steps_per_epoch: int, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch, total_steps))
