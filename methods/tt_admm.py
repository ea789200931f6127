"""TT-ADMM (Yin et al., CVPR 2021): ADMM-regularised training towards low TT ranks, then TT format and
fine-tuning. Note: ../shared/papers/tt_admm.md ("Algorithm", "Recipe", "Counting").

Problem (note, "Algorithm"):  min_W  l(W)  s.t.  W_i in S_i = {TT ranks of reshape(W_i) <= r_i}.
ADMM with auxiliary Z_i in S_i and scaled dual U_i:
  W-step (every iteration, SGD):  l(W) + sum_i rho/2 ||W_i - Z_i + U_i||_F^2          -> ``admm_penalty``
  Z-step (once per epoch, at its start):  Z_i <- TT-SVD_{r_i}(W_i + U_i)              -> ``z_step``
  U-step (right after the Z-step):        U_i <- U_i + W_i - Z_i                       -> ``u_step``
  Initialisation (start of the ADMM stage): Z_i = TT-SVD_{r_i}(W_i), U_i = 0          -> ``admm_init``
  Order (``admm_order``): ``official`` (default; miaoyin390/DNN-Compression-Tensor-ADMM engines.py): the
  Z/U update runs at the START of every epoch, epoch 0 included, so epoch 0 already trains with
  U = W - Z != 0; here the update of epoch e > 0 runs at the first training step of epoch e (``loss``), on the
  weights that ended epoch e - 1. ``epoch_end`` (ours before issue 15, the old rows): epoch 0 trains with U = 0
  and the update runs at every epoch end (the last one is never used). Golden: tests/golden/tt_admm/.
  rho: constant by default (the official code's 5x increase is commented out); ``rho_milestones``
  (epochs of the ADMM stage) multiply it by ``rho_factor``.                            -> ``rho_at``
Then (note, step 4) every W_i is TT-SVD'd to its ranks and the conv replaced by a TT conv (input cores ->
k x k conv -> output cores, methods/common/decomposition.py), and the TT model is fine-tuned with plain SGD.

Stages (``method.stages``): a stage with ``admm: true`` runs the ADMM W/Z/U scheme in the dense structure;
a stage with ``decompose: true`` decomposes at its start and trains the TT model. ``tt_svd`` (below) is the
direct baseline: decompose the pretrained model at once and fine-tune (no ADMM stage).

Ranks (per compressed layer, boundary ones included): either explicit ``method.layers``
({conv name: {out: [m..], in: [n..], ranks: [...]}}, e.g. the official ResNet-32 "3x" and ResNet-18
"special 2x" hp_dicts in the experiment files), or ``target_ratio`` with a ``layout``: every layer's interior
ranks are the same fraction alpha of their full TT ranks, alpha the largest on a grid of 1/1000 steps whose
compression ratio (``ratio_on``: whole model or decomposed layers) reaches the target (our rule: the paper's ResNet-20/32 ranks are unknown).

Counting (note, "Counting"): ``compression_ratio`` = all parameters of the dense model / all parameters of
the TT model (stem conv, shortcuts, BN and FC stay dense and count on both sides); also reported on the
decomposed layers only. MACs from the ranks (``TTSpec.macs``), FLOPs = 2 MACs as in core/complexity.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from core.complexity import measure
from methods import Method, RunContext, Stage, register_method
from methods.common.decomposition import (TTConv2d, TTSpec, auto_spec, block_convs, conv_io_sizes, set_submodule,
                                          tt_project)

ALLOWED_KEYS = {"name", "family", "layout", "target_ratio", "layers", "ratio_on", "rho", "rho_factor", "rho_milestones",
                "eval_decomposition", "eval_limit_batches", "stages", "seed", "admm_order"}
ADMM_ORDERS = ("official", "epoch_end")


def admm_penalty(weights: dict[str, torch.Tensor], Z: dict[str, torch.Tensor], U: dict[str, torch.Tensor],
                 rho: float) -> torch.Tensor:
    """sum_i rho/2 ||W_i - Z_i + U_i||_F^2 (the augmented-Lagrangian term of the W-step)."""
    return sum(0.5 * rho * (w - Z[n] + U[n]).pow(2).sum() for n, w in weights.items())


def z_step(weights: dict[str, torch.Tensor], U: dict[str, torch.Tensor], specs: dict[str, TTSpec]) -> dict:
    """Z_i <- Pi_{S_i}(W_i + U_i), Pi = TT-SVD with ranks r_i, reconstructed (heuristic projection)."""
    return {n: tt_project(w.detach() + U[n], specs[n]) for n, w in weights.items()}


def u_step(weights: dict[str, torch.Tensor], Z: dict[str, torch.Tensor], U: dict[str, torch.Tensor]) -> dict:
    """U_i <- U_i + W_i - Z_i (scaled dual ascent)."""
    return {n: U[n] + w.detach() - Z[n] for n, w in weights.items()}


def admm_init(weights: dict[str, torch.Tensor], specs: dict[str, TTSpec]) -> tuple[dict, dict]:
    """Z_i = Pi_{S_i}(W_i), U_i = 0."""
    Z = {n: tt_project(w.detach(), specs[n]) for n, w in weights.items()}
    return Z, {n: torch.zeros_like(w.detach()) for n, w in weights.items()}


def rho_at(epoch: int, rho: float, factor: float, milestones) -> float:
    """rho multiplied by ``factor`` at each milestone epoch passed (constant when ``milestones`` is empty)."""
    return rho * factor ** sum(1 for m in milestones if epoch >= m)


def relative_gap(weights: dict[str, torch.Tensor], Z: dict[str, torch.Tensor]) -> float:
    """sum_i ||W_i - Z_i||_F / sum_i ||W_i||_F: how far W is from the rank constraint set."""
    num = sum(float((w.detach() - Z[n]).norm()) for n, w in weights.items())
    return num / max(1e-12, sum(float(w.detach().norm()) for w in weights.values()))


@register_method("tt_admm")
class TTADMM(Method):
    family = "lowrank"
    needs_admm_stage = True

    def __init__(self, cfg):
        super().__init__(cfg)
        unknown = set(cfg.keys()) - ALLOWED_KEYS
        if unknown:
            raise ValueError(f"method.{sorted(unknown)[0]}: unknown key for method={cfg.name}; allowed: {sorted(ALLOWED_KEYS)}")
        if cfg.get("layers") is None and cfg.get("target_ratio") is None:
            raise ValueError(f"method={cfg.name}: set method.target_ratio (auto ranks) or method.layers (explicit ranks)")
        self.specs: dict[str, TTSpec] = {}
        self.decomposed = False
        self.Z, self.U = {}, {}
        self.stage_kind = None
        self.stage_epoch = 0
        self.rho = float(cfg.get("rho", 1e-3))
        self.order = cfg.get("admm_order") or "official"
        if self.order not in ADMM_ORDERS:
            raise ValueError(f"method.admm_order={self.order!r}; choose one of {ADMM_ORDERS}")
        self.pending_update = False
        self.history: dict[str, list] = {"gap": []}
        self.info: dict = {}
        kinds = [self._kind(s) for s in self.stages()]
        if "decompose" not in kinds:
            raise ValueError(f"method={cfg.name}: one stage needs 'decompose: true' (TT format + fine-tuning)")
        if self.needs_admm_stage and "admm" not in kinds:
            raise ValueError(f"method={cfg.name}: needs a stage with 'admm: true' before the decompose stage")
        if not self.needs_admm_stage and "admm" in kinds:
            raise ValueError(f"method={cfg.name} is the direct TT-SVD baseline: no stage may set 'admm: true'")

    @staticmethod
    def _kind(stage: Stage) -> str | None:
        if stage.params.get("admm") and stage.params.get("decompose"):
            raise ValueError(f"method.stages[{stage.name}]: 'admm' and 'decompose' are exclusive")
        return "admm" if stage.params.get("admm") else "decompose" if stage.params.get("decompose") else None

    # ---- ranks -----------------------------------------------------------------------------------
    def _explicit_specs(self, model: nn.Module) -> dict[str, TTSpec]:
        specs = {}
        for name, spec in dict(self.cfg.layers).items():
            conv = model.get_submodule(name)
            if not isinstance(conv, nn.Conv2d):
                raise ValueError(f"method.layers.{name}: not a Conv2d in this model")
            s = TTSpec(list(spec["out"]), list(spec["in"]), list(spec["ranks"]), conv.kernel_size[0])
            if (s.out_features, s.in_features) != (conv.out_channels, conv.in_channels):
                raise ValueError(f"method.layers.{name}: factors {s.shape} do not match weight {tuple(conv.weight.shape)}")
            if s.feasible().ranks != s.ranks:
                raise ValueError(f"method.layers.{name}: ranks {s.ranks} not reachable by TT-SVD; at most {s.feasible().ranks}")
            specs[name] = s
        return specs

    def _auto_specs(self, model: nn.Module, dense_params: int) -> dict[str, TTSpec]:
        layout = self.cfg.get("layout", "special")
        full = {}
        for name in block_convs(model):
            conv = model.get_submodule(name)
            full[name] = auto_spec(conv.out_channels, conv.in_channels, conv.kernel_size[0], layout)
        target, on = float(self.cfg.target_ratio), self.cfg.get("ratio_on", "model")
        if on not in ("model", "decomposed"):
            raise ValueError(f"method.ratio_on={on!r}: allowed values are 'model' and 'decomposed'")
        ratio = (lambda sp: compression_ratio(dense_params, sp)) if on == "model" else \
            (lambda sp: sum(s.dense_params() for s in sp.values()) / sum(s.params() for s in sp.values()))
        best = None
        for i in range(1000, 0, -1):
            specs = {n: s.scaled(i / 1000) for n, s in full.items()}
            if ratio(specs) >= target:
                best = specs
                break
        if best is None:
            raise ValueError(f"method.target_ratio={target}: not reachable with layout={layout}, ratio_on={on} "
                             f"(all ranks 1 gives {ratio({n: s.scaled(0) for n, s in full.items()}):.2f}x)")
        return best

    # ---- structure -------------------------------------------------------------------------------
    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        dense = measure(model, shape)
        self.info.update(dense_params=dense.params, dense_macs=dense.macs)
        self.specs = self._explicit_specs(model) if self.cfg.get("layers") else self._auto_specs(model, dense.params)
        self.io = conv_io_sizes(model, list(self.specs), shape)
        if self.decomposed:            # rebuilding a finished run (evaluate.py): the TT structure, weights loaded next
            model = self.tt_structure(model)
        return model

    def tt_structure(self, model: nn.Module) -> nn.Module:
        """Every compressed conv replaced by an (untrained) TT conv with its spec's ranks."""
        for name, spec in self.specs.items():
            conv = model.get_submodule(name)
            set_submodule(model, name, TTConv2d(spec, conv.stride, conv.padding, conv.dilation,
                                                conv.bias is not None).to(conv.weight.device))
        return model

    def _decompose(self, model: nn.Module) -> nn.Module:
        for name, spec in self.specs.items():
            conv = model.get_submodule(name)
            layer = TTConv2d.from_conv(conv, spec)
            if layer.spec.ranks != spec.ranks:
                raise RuntimeError(f"{name}: TT-SVD lowered ranks {spec.ranks} to {layer.spec.ranks}")
            set_submodule(model, name, layer)
        self.decomposed = True
        return model

    def _weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        model = getattr(model, "_orig_mod", model)        # torch.compile wrapper
        model = getattr(model, "module", model)           # DDP wrapper (``loss`` sees the wrapped model)
        return {n: model.get_submodule(n).weight for n in self.specs}

    # ---- stages ----------------------------------------------------------------------------------
    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.stage_kind, self.stage_epoch = self._kind(stage), 0
        if self.stage_kind == "admm":
            if self.decomposed:
                raise ValueError("method.stages: an 'admm' stage must come before the 'decompose' stage")
            self.Z, self.U = admm_init(self._weights(model), self.specs)
            self.rho = rho_at(0, float(self.cfg.get("rho", 1e-3)), float(self.cfg.get("rho_factor", 1.0)),
                              self.cfg.get("rho_milestones") or [])
            self.history["gap"].append(relative_gap(self._weights(model), self.Z))
            self.pending_update = False
            if self.order == "official":
                self._zu_update(model, ctx)          # the update at the start of epoch 0
        elif self.stage_kind == "decompose" and not self.decomposed:
            evaluate = ctx.evaluate if (self.cfg.get("eval_decomposition", True) and ctx.evaluate
                                        and ctx.test_loader is not None) else None
            limit = self.cfg.get("eval_limit_batches")
            if evaluate:
                self.info["top1_before_decomposition"] = float(evaluate(model, ctx.test_loader, limit_batches=limit)["top1"])
            weights = {n: w.detach().clone() for n, w in self._weights(model).items()}
            model = self._decompose(model)
            err = sum(float((model.get_submodule(n).dense_weight() - w).norm()) for n, w in weights.items())
            self.info["decomposition_rel_error"] = err / sum(float(w.norm()) for w in weights.values())
            if evaluate:
                self.info["top1_after_decomposition"] = float(evaluate(model, ctx.test_loader, limit_batches=limit)["top1"])
            self.Z, self.U = {}, {}
            ctx.log({f"tt/{k}": v for k, v in self.info.items() if isinstance(v, float)})
        return model

    def loss(self, model, inputs, outputs, targets, task_loss):
        if self.stage_kind != "admm":
            return task_loss
        if self.pending_update:               # start of an ADMM epoch > 0 (official order)
            self.pending_update = False
            self._zu_update(model)
        return task_loss + admm_penalty(self._weights(model), self.Z, self.U, self.rho)

    def _zu_update(self, model: nn.Module, ctx: RunContext | None = None) -> None:
        """Z-step then U-step on the current weights; rho of the current ADMM epoch; log the gap."""
        weights = self._weights(model)
        self.Z = z_step(weights, self.U, self.specs)
        self.U = u_step(weights, self.Z, self.U)
        self.rho = rho_at(self.stage_epoch, float(self.cfg.get("rho", 1e-3)), float(self.cfg.get("rho_factor", 1.0)),
                          self.cfg.get("rho_milestones") or [])
        gap = relative_gap(weights, self.Z)
        self.history["gap"].append(gap)
        if ctx is not None:
            ctx.log({"admm/rel_gap": gap, "admm/rho": self.rho})

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        """official: the next epoch's Z/U update is due at its first training step; epoch_end: update now."""
        if self.stage_kind != "admm":
            return
        self.stage_epoch += 1
        if self.order == "official":
            self.pending_update = True
        else:
            self._zu_update(model, ctx)

    # ---- reporting and state ---------------------------------------------------------------------
    def metrics(self, model: nn.Module) -> dict:
        dense_params = self.info.get("dense_params")
        out = {k: v for k, v in self.info.items()}
        if dense_params:
            tt_params = sum(s.params() for s in self.specs.values())
            dense_layer_params = sum(s.dense_params() for s in self.specs.values())
            out["compression_ratio"] = compression_ratio(dense_params, self.specs)
            out["compression_ratio_decomposed"] = dense_layer_params / tt_params
            out["tt_params"] = tt_params
            out["decomposed_dense_params"] = dense_layer_params
            tt_macs = sum(s.macs(*self.io[n]) for n, s in self.specs.items())
            dense_layer_macs = sum(s.dense_params() * math.prod(self.io[n][1]) for n, s in self.specs.items())
            out["macs_from_ranks"] = self.info["dense_macs"] - dense_layer_macs + tt_macs
            out["flops_reduction"] = self.info["dense_macs"] / out["macs_from_ranks"]
        out["ranks"] = {n: s.ranks for n, s in self.specs.items()}
        out["admm_rel_gap"] = self.history["gap"]
        out["admm_order"] = self.order
        out["rho"] = float(self.cfg.get("rho", 1e-3))
        out["decomposed"] = self.decomposed
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "decomposed": self.decomposed, "Z": self.Z, "U": self.U, "rho": self.rho,
                "stage_epoch": self.stage_epoch, "history": self.history, "info": self.info,
                "pending_update": self.pending_update}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.decomposed = bool(state.get("decomposed", False))
        self.Z, self.U = state.get("Z", {}), state.get("U", {})
        self.rho = float(state.get("rho", self.rho))
        self.stage_epoch = int(state.get("stage_epoch", 0))
        self.pending_update = bool(state.get("pending_update", False))
        self.history = state.get("history", self.history)
        self.info.update(state.get("info", {}))


def compression_ratio(dense_params: int, specs: dict[str, TTSpec]) -> float:
    """All parameters of the dense model / all parameters after replacing each layer by its TT cores."""
    return dense_params / (dense_params - sum(s.dense_params() for s in specs.values()) + sum(s.params() for s in specs.values()))


@register_method("tt_svd")
class TTSVD(TTADMM):
    """Baseline of the TT-ADMM note ("Small-scale signal"): TT-SVD the pretrained weights directly to the same
    ranks, then fine-tune (no ADMM stage)."""

    needs_admm_stage = False
