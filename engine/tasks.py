"""What one training step computes for each kind of data: the forward pass, the task loss, and the console header.

``make_task`` picks the task from ``data.task`` once per stage, so the step loop of engine/trainer.py holds no
per-task branch:

- classification: ``model(x)`` gives logits; the task loss is cross-entropy with the run's label smoothing, mixed
  with the KD term against the teacher's logits of the same inputs when ``trainer.distill`` names a teacher. The same
  loss is handed to the method (``Method.task_loss_fn``) for the extra passes it runs on the batch.
- detection: ``model(x, targets)`` gives the detector's own loss terms (SSD: localisation + classification), summed.
  No teacher and no label smoothing: both are refused with the key to change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.distill import build_teacher
from methods.common.distill import kd_loss

HEADER = f"{'epoch':>11} {'step':>8} {'lr':>10} {'train_loss':>10} {'top1':>7} {'top5':>7} {'val_loss':>8} {'time':>8}"
HEADER_DETECTION = HEADER.replace("   top1", "  map50")


class ClassificationTask:
    header = HEADER

    def __init__(self, tcfg, ctx, device):
        self.label_smoothing = float(tcfg.label_smoothing)
        self.kd_alpha, self.kd_temperature = float(tcfg.distill.alpha), float(tcfg.distill.temperature)
        self.teacher = build_teacher(tcfg.distill, num_classes=ctx.num_classes, in_channels=ctx.in_channels,
                                     image_size=ctx.image_size, device=device)
        self._teacher_logits = None   # the teacher's logits of the current batch (None without a teacher)

    def bind(self, method) -> None:
        """Hand the method this task's loss for its extra passes on each batch."""
        method.task_loss_fn = self.loss

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """CE (+ KD to the teacher's logits of the current batch): for the first pass and a method's others."""
        task = F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        if self._teacher_logits is not None:
            a = self.kd_alpha
            task = (1 - a) * task + a * kd_loss(logits.float(), self._teacher_logits, self.kd_temperature)
        return task

    def step_loss(self, model, method, x, y) -> torch.Tensor:
        """The batch's training loss: forward, task loss, then the method's own terms."""
        out = model(x)
        if self.teacher is not None:
            with torch.no_grad():
                self._teacher_logits = self.teacher(x).float()
        return method.loss(model, x, out, y, self.loss(out, y))


class DetectionTask:
    header = HEADER_DETECTION

    def __init__(self, tcfg, ctx, device):
        if tcfg.distill.teacher:
            raise ValueError("trainer.distill.teacher: distillation is for classifiers; a detection run "
                             "(data.task=detection) takes none (set trainer.distill.teacher=null)")
        if float(tcfg.label_smoothing):
            raise ValueError(f"trainer.label_smoothing={tcfg.label_smoothing}: it smooths the classifier's "
                             "cross-entropy; a detection run (data.task=detection) trains on the detector's own loss "
                             "(set it to 0)")

    def bind(self, method) -> None:
        method.task_loss_fn = None   # a detector's loss needs its targets' boxes: no extra passes through it

    def step_loss(self, model, method, x, y) -> torch.Tensor:
        out = model(x, y)
        return method.loss(model, x, out, y, sum(v.float() for v in out.values()))


def make_task(data, tcfg, ctx, device):
    """The task of ``data`` (its ``task`` attribute; classification when it has none)."""
    kind = getattr(data, "task", "classification")
    if kind == "detection":
        return DetectionTask(tcfg, ctx, device)
    if kind == "classification":
        return ClassificationTask(tcfg, ctx, device)
    raise ValueError(f"data.task={kind!r}: unknown task (classification or detection)")
