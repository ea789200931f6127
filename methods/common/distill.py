"""The knowledge-distillation term (Hinton et al. 2015): T^2 KL(softmax(teacher / T) || softmax(student / T)),
the batch mean.

The engine mixes it with the task loss when ``trainer.distill`` names a teacher (engine/tasks.py; the teacher is
built by engine/distill.py); a method that distils inside its own loss (AIP's output-feature transfer) calls it too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t
