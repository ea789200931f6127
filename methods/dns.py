"""Dynamic Network Surgery (Guo, Yao & Chen, NIPS 2016) — ``method=dns``.

Paper note: ../shared/papers/dns.md (section "Algorithm"). Every compressed conv/fc layer k computes with
``W_k * T_k`` (:mod:`methods.common.masks`); the binary mask ``T_k`` is updated during training by

- **Eq. h_k (discriminative function, Algorithm 1):** ``T(i) = 0 if |W(i)| < a_k``; ``T(i) = 1 if |W(i)| >= b_k``;
  unchanged inside the hysteresis band ``a_k <= |W(i)| < b_k`` — pruning *and* splicing (:func:`dns_mask`).
- **Weight update (Algorithm 2):** ``W(i) <- W(i) - beta * dL/d(W(i) T(i))`` for *all* entries, pruned ones
  included (the straight-through rule of ``masks.apply_mask``), so pruned weights keep evolving and can be
  spliced back. Weight decay acts on every entry, as in Caffe.
- **Mask-update probability (Algorithm 3):** ``sigma(t) = (1 + gamma * t) ** -power``; at iteration ``t`` each
  layer draws ``r ~ U(0,1)`` (one draw per layer, independently) and recomputes its mask iff
  ``r < sigma(t)`` and ``t < iter_stop`` (:func:`update_probability`). After ``iter_stop`` the mask is frozen.
- **Thresholds (Algorithm 4, official code):** at the layer's first surgery iteration, over its nonzero
  weights *and* biases, ``mu = mean|w|``, ``std = sqrt(mean(w^2) - mu^2)``;
  ``a_k = 0.9 * max(mu + c * std, 0)``, ``b_k = 1.1 * max(mu + c * std, 0)`` (:func:`dns_thresholds`).
  They are computed **once** and stored in the layer's ``dns_stats`` buffer (mu, std, a, b) and flag
  ``dns_ready``, which travel with every checkpoint: a resumed run keeps them (the official code, resumed
  from a snapshot at t > 0, recomputes nothing and ends with a = b = 0 — a flaw not repeated here).
  Biases have their own masks and use the same thresholds.
- **Output (Algorithm 5):** at the end of a layer's surgery ``W * T`` is written into the weights (exact zeros)
  and the mask is frozen (ordinary masked gradient) for any later stage.

Layer groups: ``stages`` may list several ``kind: surgery`` stages, each with ``layers:`` (names/patterns); the
groups are pruned one after another (dns.md "Layer grouping"; AlexNet convs, then fcs); layers of later
groups stay dense meanwhile and finished groups keep their frozen masks. ``kind: finetune`` trains the
sparse net with all masks frozen. Each layer's iteration counter ``t`` starts at 0 with its stage.

Per-layer hyper-parameters (gamma, power, c_rate, iter_stop) come from ``per_layer.<name>``, falling back
to the method-level values; Caffe's defaults are gamma 1e-3, power 1, c_rate 3, iter_stop 10000 (conv) /
8000 (fc). ``splice: false`` is the one-way-pruning ablation (a pruned entry never returns).

Random draws come from ``self.generator`` (saved in ``state_dict``), so a resumed run repeats an
uninterrupted one. ``metrics`` reports nonzeros, per-layer remaining %, compression ratio (total / nonzero,
weights + biases of conv/fc) and the splice/prune counts (mechanism checks (a)-(c) of the note).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from methods import Method, RunContext, Stage, register_method
from methods.common.masks import (attach_masks, compressible_layers, fold_masks, layer_nonzeros,
                                  masked_layers)
from methods.common.storage import storage_metrics, storage_report

HPARAMS = ("gamma", "power", "c_rate", "iter_stop")
STAGE_KINDS = ("surgery", "finetune")
STAGE_PARAMS = ("kind", "layers")


# ---- the paper's equations, as pure functions (golden-tested) -------------------------------------------------

def update_probability(t: int, gamma: float, power: float) -> float:
    """sigma(t) = (1 + gamma * t) ** (-power) (dns.md Algorithm 3)."""
    return (1.0 + gamma * t) ** (-power)


@torch.no_grad()
def dns_thresholds(weight: torch.Tensor, bias: torch.Tensor | None, c_rate: float) -> tuple[float, float, float, float]:
    """(mu, std, a, b) over the layer's nonzero weights and biases (dns.md Algorithm 4)."""
    x = weight.detach().flatten().double()
    if bias is not None:
        x = torch.cat([x, bias.detach().flatten().double()])
    x = x[x != 0].abs()
    if x.numel() == 0:
        return 0.0, 0.0, 0.0, 0.0
    mu = float(x.mean())
    std = math.sqrt(max(float((x * x).mean()) - mu * mu, 0.0))
    base = max(mu + c_rate * std, 0.0)
    return mu, std, 0.9 * base, 1.1 * base


@torch.no_grad()
def dns_mask(w: torch.Tensor, prev: torch.Tensor, a: float, b: float, splice: bool = True) -> torch.Tensor:
    """Discriminative function h_k (dns.md Algorithm 1): prune below a, splice at/above b, keep in between."""
    absw = w.abs()
    new = torch.where(absw < a, 0.0, torch.where(absw >= b, 1.0, prev)).to(prev.dtype)
    if not splice:
        new = torch.minimum(new, prev)
    return new


# ---- the method ------------------------------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


@register_method("dns")
class DNS(Method):
    family = "prune"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.splice = bool(cfg.get("splice", True))
        self.per_layer = {str(k): dict(v) for k, v in (cfg.get("per_layer") or {}).items()}
        for name, hp in self.per_layer.items():
            bad = set(hp) - set(HPARAMS)
            if bad:
                raise KeyError(f"method.per_layer.{name}: unknown keys {sorted(bad)}; allowed: {list(HPARAMS)}")
        self.layers: dict[str, nn.Module] = {}
        self.hparams: dict[str, dict] = {}
        # progress, saved in state_dict
        self.t = 0                     # iterations of the current surgery stage
        self.stage_name: str | None = None
        self.done: list[str] = []      # layers whose surgery has finished (masks frozen, folded)
        self.counts: dict[str, dict] = {}

    # ---- configuration ----
    def _iter_stop(self, kind: str) -> int:
        stop = self.cfg.get("iter_stop", {"conv": 10000, "fc": 8000})
        if isinstance(stop, (int, float)):
            return int(stop)
        stop = dict(stop)
        if kind not in stop:
            raise KeyError(f"method.iter_stop must be an int or a mapping with keys 'conv' and 'fc' (missing '{kind}')")
        return int(stop[kind])

    def _layer_hparams(self, name: str, module: nn.Module) -> dict:
        kind = "fc" if isinstance(module, nn.Linear) else "conv"
        hp = {"gamma": float(self.cfg.get("gamma", 1e-3)), "power": float(self.cfg.get("power", 1.0)),
              "c_rate": float(self.cfg.get("c_rate", 3.0)), "iter_stop": self._iter_stop(kind)}
        hp.update({k: (int(v) if k == "iter_stop" else float(v)) for k, v in self.per_layer.get(name, {}).items()})
        return hp

    def stages(self) -> list[Stage]:
        specs = self.cfg.get("stages") or [{"name": "surgery", "kind": "surgery"}]
        out = []
        for spec in specs:
            spec = dict(spec)
            name = spec.pop("name")
            trainer = dict(spec.pop("trainer", None) or {})
            bad = set(spec) - set(STAGE_PARAMS) - set(self.extra_stage_params())
            if bad:
                raise KeyError(f"method.stages[{name}]: unknown keys {sorted(bad)}; allowed: "
                               f"name, trainer, {', '.join(STAGE_PARAMS + self.extra_stage_params())}")
            spec.setdefault("kind", "surgery")
            if spec["kind"] not in self.stage_kinds():
                raise ValueError(f"method.stages[{name}].kind must be one of {self.stage_kinds()}, got {spec['kind']!r}")
            out.append(Stage(name=name, trainer=trainer, params=spec,
                             trainer_key=f"method.stages[{name}].trainer"))
        return out

    def stage_kinds(self) -> tuple[str, ...]:
        return STAGE_KINDS

    def extra_stage_params(self) -> tuple[str, ...]:
        return ()

    # ---- structure ----
    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        if self.cfg.get("seed") is None:       # the run's seed drives the per-layer draws (saved/restored)
            self.generator.manual_seed(int(ctx.seed))
        include = list(self.cfg.get("layers") or []) or None
        exclude = list(self.cfg.get("exclude") or [])
        self.layers = compressible_layers(model, include, exclude)
        unknown = set(self.per_layer) - set(self.layers)
        if unknown:
            raise KeyError(f"method.per_layer names {sorted(unknown)}, which are not compressed layers; "
                           f"compressed layers: {', '.join(self.layers)}")
        for name, m in self.layers.items():
            attach_masks(m, prune=True, mask_grad="masked")
            if getattr(m, "dns_stats", None) is None:
                m.register_buffer("dns_stats", torch.zeros(4, dtype=torch.float64))   # mu, std, a, b
                m.register_buffer("dns_ready", torch.zeros((), dtype=torch.bool))
            self.hparams[name] = self._layer_hparams(name, m)
            self.counts.setdefault(name, {"updates": 0, "spliced": 0, "pruned": 0, "spliced_by_1k": {}})
        return model

    def _stage_layers(self, stage: Stage) -> list[str]:
        pats = stage.params.get("layers")
        if stage.params.get("kind") != "surgery":
            return []
        if not pats:
            return list(self.layers)
        import fnmatch
        chosen = [n for n in self.layers if any(fnmatch.fnmatch(n, p) for p in pats)]
        if not chosen:
            raise KeyError(f"method.stages[{stage.name}].layers {list(pats)} match no compressed layer; "
                           f"layers: {', '.join(self.layers)}")
        return chosen

    # ---- stages ----
    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        self._refresh_layers(model)
        active = self._stage_layers(stage)
        resumed = self.stage_name == stage.name and self.t > 0
        for name, m in self.layers.items():
            m.mask_grad = "straight_through" if name in active else "masked"
        if not resumed:
            self.stage_name, self.t = stage.name, 0
            for name in active:
                m = self.layers[name]
                if not bool(m.dns_ready):     # statistics once per layer, never refreshed (resume-safe)
                    w, b = m.masked_params()
                    mu, std, a, bb = dns_thresholds(w, b, self.hparams[name]["c_rate"])
                    m.dns_stats.copy_(torch.tensor([mu, std, a, bb], dtype=torch.float64))
                    m.dns_ready.fill_(True)
            self._surgery(active, t=0)        # iteration 0: sigma(0) = 1
        self._active = active
        return model

    def on_stage_end(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        for name in self._stage_layers(stage):
            m = self.layers[name]
            fold_masks(m)
            m.mask_grad = "masked"
            if name not in self.done:
                self.done.append(name)
        self._active = []
        return model

    def _refresh_layers(self, model: nn.Module) -> None:
        found = masked_layers(_unwrap(model))
        if found:
            self.layers = {n: found[n] for n in self.layers if n in found} or self.layers

    @torch.no_grad()
    def _surgery(self, names: list[str], t: int) -> None:
        """One DNS iteration's mask step for the layers in surgery (Algorithm 3 + h_k)."""
        for name in names:
            m, hp = self.layers[name], self.hparams[name]
            r = float(torch.rand((), generator=self.generator))
            if t >= hp["iter_stop"] or r >= update_probability(t, hp["gamma"], hp["power"]):
                continue
            _, _, a, b = m.dns_stats.tolist()
            c = self.counts[name]
            pairs = [(m.weight, m.weight_mask)] + ([(m.bias, m.bias_mask)] if m.bias is not None else [])
            for p, mask in pairs:
                new = dns_mask(p, mask, a, b, self.splice)
                diff = new - mask
                spliced = int((diff > 0).sum())
                c["spliced"] += spliced
                c["pruned"] += int((diff < 0).sum())
                if spliced:
                    key = str(t // 1000)
                    c["spliced_by_1k"][key] = c["spliced_by_1k"].get(key, 0) + spliced
                mask.copy_(new)
            c["updates"] += 1

    def after_step(self, model: nn.Module, step: int) -> None:
        active = getattr(self, "_active", [])
        if active:
            self.t += 1
            self._surgery(active, self.t)
        for name in self.done:     # frozen layers stay exactly sparse (momentum / weight decay cannot revive them)
            fold_masks(self.layers[name])

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        rep = storage_report(_unwrap(model))
        log = {"dns/compression_ratio": rep["compression_ratio"], "dns/iteration": self.t}
        log.update({f"dns/remaining_pct/{n}": v["remaining_pct"] for n, v in rep["layers"].items()})
        ctx.log(log)

    # ---- reporting and state ----
    def metrics(self, model: nn.Module) -> dict:
        model = _unwrap(model)
        out = storage_metrics(model, self.cfg.get("index_bits"))
        out["dns"] = {n: {"mu": float(m.dns_stats[0]), "std": float(m.dns_stats[1]), "a": float(m.dns_stats[2]),
                          "b": float(m.dns_stats[3]), **self.hparams[n],
                          **{k: v for k, v in self.counts[n].items()}}
                      for n, m in self.layers.items()}
        out["dns_splice"] = self.splice
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "dns_t": self.t, "dns_stage": self.stage_name or "",
                "dns_done": list(self.done), "dns_counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.t = int(state.get("dns_t", 0))
        self.stage_name = state.get("dns_stage") or None
        self.done = list(state.get("dns_done", []))
        if "dns_counts" in state:
            self.counts = state["dns_counts"]


def nonzero_summary(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(nonzero, total) per compressed layer — a convenience for tests and docs."""
    return {n: layer_nonzeros(m) for n, m in masked_layers(_unwrap(model)).items()}
