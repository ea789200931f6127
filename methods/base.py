"""The contract between a compression method and the engine.

The engine builds the backbone, calls ``transform`` once, then runs the method's stages. Per stage it
calls ``on_stage_start`` (may return a new model, e.g. after pruning), then per training step
``loss`` -> backward -> ``after_backward`` -> optimizer step -> ``after_step``; per epoch
``on_epoch_end``; then ``on_stage_end``. ``metrics`` adds method-specific numbers to the results row.

The task loss reaches methods in two ways: ``loss`` receives the first pass's ``task_loss``, and a method that
runs extra forward passes on the same batch (IR²Net's erased pass) calls ``self.task_loss(logits, targets)``,
which is the same loss — CE with the run's label smoothing, plus the KD term against the teacher's logits *of this
batch's inputs* when ``trainer.distill`` names a teacher. The trainer sets ``task_loss_fn`` once per stage
(engine/tasks.py; None for a detector, whose loss needs the boxes).

Rebuilding for evaluation: ``evaluate.py`` builds the backbone, loads ``state_dict()`` into a fresh
method object, calls ``transform`` (which must then reproduce the final structure, e.g. a pruned
model's kept channels) and loads the saved weights. Anything random a method does must use
``self.generator`` (saved in ``state_dict``) so a resumed run repeats an uninterrupted one.

Complexity is never typed in: layers declare ``weight_bits`` / ``act_bits`` attributes (default 32)
and an optional ``weight_mask`` buffer, and core/complexity.py counts from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Stage:
    """One training stage: a name, trainer overrides (epochs, lr, ...) and method-specific params.

    The engine checks every stage's trainer overrides before the first stage runs; a bad key is named as
    ``<trainer_key>.<key>`` (``method.recover.epoch``), or ``stage <name> trainer.<key>`` without a ``trainer_key``."""

    name: str
    trainer: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    trainer_key: str | None = None   # the config key the trainer overrides come from


@dataclass
class RunContext:
    """What a method may use besides the model: shapes, device, data and an evaluation function."""

    num_classes: int
    in_channels: int
    image_size: int
    device: torch.device
    train_loader: Any = None
    test_loader: Any = None
    #: the engine's evaluation on the run's device: evaluate(model, loader, limit_batches=None) -> {"top1", ...}
    #: ({"map50", ...} on a detection loader)
    evaluate: Callable[..., dict] | None = None
    log: Callable[[dict], None] = lambda metrics: None
    seed: int = 0


class Method:
    """Base class: the plain backbone trained with the trainer config (one stage)."""

    family = "none"
    supports_detection = False   # True where the method runs on a detector's loss dict (docs/detection.md "Pruning")

    def __init__(self, cfg):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(int(cfg.get("seed", 0) or 0))

    # ---- structure -------------------------------------------------------------------------------
    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        return model

    # ---- stages ----------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        """Stages from ``method.stages`` (a list of {name, trainer: {...}, ...}); one plain stage if absent."""
        specs = self.cfg.get("stages") or [{"name": "train"}]
        out = []
        for spec in specs:
            spec = dict(spec)
            name = spec.pop("name")
            trainer = dict(spec.pop("trainer", None) or {})
            out.append(Stage(name=name, trainer=trainer, params=spec,
                             trainer_key=f"method.stages[{name}].trainer"))
        return out

    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        return model

    def on_stage_end(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        return model

    def train_batches(self, stage: Stage, tcfg, ctx: RunContext):
        """The stage's training batches, or None for the data's training loader (the default). A method that makes
        its own batches (data-free methods: a generator's images) returns an object with ``__len__`` (steps per
        epoch), ``set_epoch(epoch)`` and ``__iter__`` yielding ``(inputs, targets)``; the trainer then never
        iterates the training loader."""
        return None

    # ---- per step / epoch ------------------------------------------------------------------------
    def loss(self, model: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor,
             task_loss: torch.Tensor) -> torch.Tensor:
        return task_loss

    #: set by the trainer per stage: (logits, targets) -> the run's task loss on the current batch (teacher included)
    task_loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def task_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The run's task loss on further logits of the current batch (cross-entropy when no trainer set it)."""
        if self.task_loss_fn is None:
            return F.cross_entropy(logits.float(), targets)
        return self.task_loss_fn(logits, targets)

    def after_backward(self, model: nn.Module, step: int) -> None:
        pass

    def after_step(self, model: nn.Module, step: int) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        pass

    # ---- deployment ------------------------------------------------------------------------------
    def deployed(self, model: nn.Module) -> tuple[nn.Module, str]:
        """The inference form of the trained model, on which ``trainer.latency`` is measured, and a label for the
        row's ``latency_device`` ("" for the model as trained, the default)."""
        return model, ""

    # ---- reporting and state ---------------------------------------------------------------------
    def metrics(self, model: nn.Module) -> dict:
        return {}

    def structure_state(self) -> dict:
        """The JSON-able part of :meth:`state_dict` that fixes the trained model's structure beyond its config (a
        searched architecture), stored in binary exports so they rebuild without the checkpoint; {} by default."""
        return {}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
