"""The shared skeleton of the binary methods (bnn, xnor, bireal, irnet, sd_bnn, ir2net): :class:`BinaryMethod`.

The layers, estimators and :class:`BinarySpec` live in models/binary_layers.py (model building blocks, imported
by models/binary.py and by the methods; models/ never imports methods/). They are re-exported here so method code
and tests keep one import line.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from methods.base import Method, RunContext, Stage
from models.binary_layers import (BINARY_LAYERS, ESTIMATORS, ROLES, SCALINGS, STANDARDIZE,  # noqa: F401
                                  BinaryConv2d, BinaryLinear, BinarySpec, binarize, binary_layers,
                                  check_binary_options, ede_schedule, set_ede, surrogate_grad)

# ---- method skeleton --------------------------------------------------------------------------------

class BinaryMethod(Method):
    """Shared skeleton of the binary methods.

    Config keys (``conf/method/<name>.yaml``): ``binary:`` (a :class:`BinarySpec`), ``arch:`` (extra backbone
    kwargs, e.g. ``act: prelu``), ``ede: {tmin, tmax, epochs}`` (used when an estimator is ``ede``; ``epochs``
    defaults to the stage's ``trainer.epochs``). Stage params ``binarize_weights`` / ``binarize_acts`` switch the
    layers per stage (the W32A1 -> W1A1 recipe).
    """

    family = "binary"
    default_spec: dict = {}
    #: allowed keys of the method config and of its sub-blocks (a misspelt key fails naming it)
    config_keys: dict = {"name": None, "family": None, "binary": None, "arch": None, "stages": None,
                         "implemented": None, "ede": {"tmin", "tmax", "epochs"}}
    extra_keys: dict = {}

    def __init__(self, cfg):
        super().__init__(cfg)
        allowed = {**self.config_keys, **self.extra_keys}
        for key in cfg.keys():
            if key not in allowed:
                raise ValueError(f"method.{key} is not a key of method={cfg.get('name')}; allowed: {sorted(allowed)}")
            sub = allowed[key]
            if sub is not None and cfg.get(key) is not None:
                bad = sorted(set(cfg[key].keys()) - sub)
                if bad:
                    raise ValueError(f"method.{key} has unknown keys {bad}; allowed: {sorted(sub)}")
        spec = dict(self.default_spec)
        spec.update(dict(cfg.get("binary") or {}))
        self.spec = BinarySpec.from_cfg(spec)
        self.epoch = 0
        self.stage_epochs = None

    # structure
    def arch_kwargs(self, ctx: RunContext) -> dict:
        return dict(self.cfg.get("arch") or {})

    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        from models.binary import build_binary_counterpart
        model = build_binary_counterpart(model, self.spec, num_classes=ctx.num_classes,
                                         in_channels=ctx.in_channels, image_size=ctx.image_size,
                                         **self.arch_kwargs(ctx))
        return self.decorate(model, ctx)

    def decorate(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Subclasses attach their modules (ASD/WSD, fusion) here."""
        return model

    # schedule
    def _uses_ede(self) -> bool:
        return "ede" in (self.spec.act_estimator, self.spec.weight_estimator)

    def _ede_epochs(self, stage_epochs) -> int:
        ede = self.cfg.get("ede") or {}
        return int(stage_epochs or ede.get("epochs") or 1)

    def _apply_ede(self, model: nn.Module, epoch: int) -> None:
        if not self._uses_ede():
            return
        ede = self.cfg.get("ede") or {}
        k, t = ede_schedule(epoch, self._ede_epochs(self.stage_epochs), float(ede.get("tmin", 1e-3)),
                            float(ede.get("tmax", 1e1)))
        set_ede(model, k, t)

    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        for key in ("binarize_weights", "binarize_acts"):
            if key in stage.params:
                for m in binary_layers(model):
                    setattr(m, key, bool(stage.params[key]))
        self.stage_epochs = stage.trainer.get("epochs") if stage.trainer else None
        self.epoch = 0
        self._apply_ede(model, 0)
        return model

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        self.epoch = epoch + 1
        self._apply_ede(model, epoch + 1)

    def metrics(self, model: nn.Module) -> dict:
        layers = binary_layers(model)
        out = {"binary_layers": len(layers),
               "w_bits": max((m.weight_bits for m in layers), default=32),
               "a_bits": max((m.act_bits for m in layers), default=32)}
        if layers and self._uses_ede():
            out.update(ede_k=float(layers[0].ede_k), ede_t=float(layers[0].ede_t))
        return out
