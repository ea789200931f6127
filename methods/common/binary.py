"""The shared skeleton of the binary methods (bnn, xnor, bireal, irnet, sd_bnn, ir2net): :class:`BinaryMethod`.

The layers, estimators and :class:`BinarySpec` live in models/binary_layers.py (model building blocks, imported
by models/binary.py and by the methods; models/ never imports methods/). They are re-exported here so method code
and tests keep one import line.
"""
from __future__ import annotations

import copy

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
        self._signs: list[torch.Tensor] | None = None       # sign(w') of every 1-bit layer at the run's start
        self._last_signs: list[torch.Tensor] | None = None  # ... at the end of the previous epoch
        self._flip_epochs: list[float] = []                 # share of weight signs flipped in each epoch

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

    # mechanism signals (logged in the row's extra: a run whose binary weights never flip tests nothing)
    @staticmethod
    @torch.no_grad()
    def weight_signs(model: nn.Module) -> list[torch.Tensor]:
        """sign(w') >= 0 (WSD / Libra-PB applied) of every layer whose weights are binarized."""
        out = []
        for m in binary_layers(model):
            if m.binarize_weights:
                w, _ = m.export_weight()
                out.append(w >= 0)
        return out

    @staticmethod
    def _flip_share(a: list[torch.Tensor], b: list[torch.Tensor]) -> float | None:
        if not a or len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
            return None
        flipped = sum(int((x != y).sum()) for x, y in zip(a, b))
        return flipped / sum(x.numel() for x in a)

    def _track_signs(self, model: nn.Module, epoch_end: bool) -> None:
        signs = self.weight_signs(model)
        if not signs:
            return
        if epoch_end and self._last_signs is not None:
            share = self._flip_share(self._last_signs, signs)
            if share is not None:
                self._flip_epochs.append(share)
        if self._signs is None or self._flip_share(self._signs, signs) is None:
            self._signs = signs                     # first binarized stage: the start reference
        self._last_signs = signs

    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        for key in ("binarize_weights", "binarize_acts"):
            if key in stage.params:
                for m in binary_layers(model):
                    setattr(m, key, bool(stage.params[key]))
        self.stage_epochs = stage.trainer.get("epochs") if stage.trainer else None
        self.epoch = 0
        self._apply_ede(model, 0)
        self._last_signs = None
        self._track_signs(model, epoch_end=False)
        return model

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        self.epoch = epoch + 1
        self._apply_ede(model, epoch + 1)
        self._track_signs(model, epoch_end=True)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "signs": self._signs, "last_signs": self._last_signs,
                "flip_epochs": list(self._flip_epochs)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._signs = state.get("signs", self._signs)
        self._last_signs = state.get("last_signs", self._last_signs)
        self._flip_epochs = list(state.get("flip_epochs", self._flip_epochs))

    def deployed(self, model: nn.Module) -> tuple[nn.Module, str]:
        """A CPU copy whose W1A1 layers run the XNOR-popcount kernel (methods/common/packed_binary.py, outputs
        equal to the float +-1 model), when the kernel is built (``make install``); else the model as trained."""
        from methods.common import packed_binary
        if not packed_binary.available():
            return model, "float +-1 emulation (packed kernel not built: make install)"
        return packed_binary.pack_model(copy.deepcopy(model).cpu().eval()), "packed xnor-popcount"

    def metrics(self, model: nn.Module) -> dict:
        from core.complexity import OPS_CONVENTION
        layers = binary_layers(model)
        out = {"binary_layers": len(layers),
               "w_bits": max((m.weight_bits for m in layers), default=32),
               "a_bits": max((m.act_bits for m in layers), default=32),
               "ops_convention": OPS_CONVENTION}
        if layers and self._uses_ede():
            out.update(ede_k=float(layers[0].ede_k), ede_t=float(layers[0].ede_t))
        if self._signs is not None:
            share = self._flip_share(self._signs, self.weight_signs(model))
            if share is not None:
                out["sign_flip_total"] = share            # weight signs that differ from the run's start
        if self._flip_epochs:
            out["sign_flip_per_epoch"] = [round(f, 6) for f in self._flip_epochs]
        return out
