"""Knowledge distillation (Hinton et al. 2015) from a teacher named in ``trainer.distill``: the frozen teacher.

loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)), the KL term
being ``methods.common.distill.kd_loss`` (engine/tasks.py mixes the two).
"""
from __future__ import annotations

import torch

from engine import checkpoint
from models import build_model


def build_teacher(cfg, *, num_classes: int, in_channels: int, image_size: int, device) -> torch.nn.Module | None:
    """The frozen teacher of ``trainer.distill`` (None when ``teacher`` is null)."""
    if not cfg.get("teacher"):
        return None
    spec = cfg.teacher
    name = spec if isinstance(spec, str) else spec.name
    kwargs = {} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "name"}
    use_pretrained = bool(cfg.get("teacher_pretrained", True)) and not cfg.get("teacher_checkpoint")
    teacher = build_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                          pretrained=use_pretrained, **kwargs)
    if cfg.get("teacher_checkpoint"):
        checkpoint.load_weights(teacher, checkpoint.load(cfg.teacher_checkpoint), str(cfg.teacher_checkpoint), name)
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
