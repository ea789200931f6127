"""Incremental Network Quantization (Zhou et al., ICLR 2017) — ``method=inq``, and DNS -> INQ — ``method=dns_inq``.

Paper note: ../shared/papers/inq.md (section "Algorithm"). Weight-only: every conv/fc *weight* tensor is
quantized (first and last layers included); biases and BN stay in floating point.

- **Quantization set P_l:** ``P_l = {+-2^n1, ..., +-2^n2, 0}`` with ``s = max|W_l|``,
  ``n1 = floor(log2(4s/3))`` and ``n2 = n1 + 1 - 2^(b-1)/2`` (:func:`inq_exponents`); 2^(b-2) exponents plus
  zero; 1 bit flags zero, b-1 bits index the signed powers (variable-length encoding).
- **Eq. 4 (rounding):** for adjacent levels alpha < beta, ``w -> beta * sgn(w)`` when
  ``(alpha+beta)/2 <= |w| < 3*beta/2``; below 2^(n2-1) a weight goes to zero. This is nearest-level rounding
  in linear scale with ties going up (:func:`inq_quantize`). Above 1.5 * 2^n1 (impossible at the first
  partition, since 4/3 in n1 makes s < 1.5 * 2^n1) a weight saturates to 2^n1, as the official code's
  nearest-level search does.
- **n1 fixed per layer:** n1 is computed from the layer's max |W| when its first group is quantized and
  stored in the ``quant_n1`` buffer; the note says the code's recomputation leaves n1 unchanged because the
  largest weights are quantized first, and fixing it guarantees every final weight lies in one set P_l.
- **Algorithm 1 (incremental loop):** for accumulated portions sigma_1 < ... < sigma_N = 1, one training stage
  each (the engine resets the base LR and LR policy per stage — line 3):
  (i) **weight partition** — among the still-floating entries, the ones with the largest |w|
  (``partition: magnitude``, "pruning-inspired", the paper's choice) or a uniformly random subset
  (``partition: random``, Table 2 ablation) join the quantized group A1 until it holds the fraction sigma_n
  of the layer's weights (:func:`partition_counts`); (ii) A1 is quantized with Eq. 4; (iii) **re-training**
  with the update ``W <- W - lr * dE/dW * T`` where T = 0 on A1 (``quant_mask = 1``): quantized entries get
  zero gradient, and :class:`~methods.common.masks.FrozenEntries` restores them bitwise after each optimizer
  step, so momentum and weight decay cannot move them either.
- After the sigma = 1 stage every weight is in P_l; the stage normally trains for 0 steps (the official code
  runs it for 1 iteration, which only quantizes). ``metrics`` verifies membership (``inq_all_in_set``).

DNS -> INQ (INQ paper Table 5, "INQ + DNS"): the DNS masks are frozen; pruned entries are zeros (in P_l) and
count as quantized from the start; portions are fractions of the *remaining* (unpruned) weights, so the
incremental schedule acts on the weights that are actually stored.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from methods import Method, RunContext, Stage, register_method
from methods.common.masks import FrozenEntries, attach_masks, compressible_layers, fold_masks, masked_layers
from methods.common.storage import storage_report
from methods.dns import DNS, _unwrap

PARTITIONS = ("magnitude", "random")
MIN_BITS, MAX_BITS = 2, 8


# ---- the paper's equations, as pure functions (golden-tested) -------------------------------------------------

def inq_exponents(max_abs: float, bits: int) -> tuple[int, int]:
    """(n1, n2): n1 = floor(log2(4s/3)), n2 = n1 + 1 - 2^(b-1)/2 (inq.md "Quantization set")."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"INQ bits must be in [{MIN_BITS}, {MAX_BITS}] (the paper uses 2-5), got {bits}")
    n1 = math.floor(math.log2(4.0 * max_abs / 3.0)) if max_abs > 0 else 0
    return n1, n1 + 1 - 2 ** (bits - 1) // 2


def inq_levels(n1: int, n2: int) -> torch.Tensor:
    """Non-negative levels 0 < 2^n2 < ... < 2^n1 (float64)."""
    return torch.tensor([0.0] + [2.0 ** e for e in range(n2, n1 + 1)], dtype=torch.float64)


def inq_quantize(w: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Eq. 4: nearest level of P_l in linear scale, ties up; |w| < 2^(n2-1) -> 0; saturates at 2^n1."""
    levels = inq_levels(n1, n2).to(w.device)
    mids = (levels[1:] + levels[:-1]) / 2                       # (alpha + beta) / 2
    idx = torch.searchsorted(mids, w.detach().abs().double(), right=True)   # mids <= |w|
    return (torch.sign(w.detach()).double() * levels[idx]).to(w.dtype)


def partition_counts(n: int, portions: list[float]) -> list[int]:
    """Size of the quantized group after each step: round-half-up(sigma_n * n)."""
    return [int(math.floor(p * n + 0.5)) for p in portions]


def in_set(w: torch.Tensor, n1: int, n2: int) -> bool:
    """True iff every entry of ``w`` is exactly 0 or +-2^k with n2 <= k <= n1."""
    levels = inq_levels(n1, n2).to(w.device)
    return bool(torch.isin(w.detach().abs().double(), levels).all())


def check_portions(portions) -> list[float]:
    p = [float(x) for x in portions]
    if not p or any(not 0 < x <= 1 for x in p) or any(b <= a for a, b in zip(p, p[1:])) or p[-1] != 1.0:
        raise ValueError(f"method.portions must increase strictly within (0, 1] and end at 1, got {p}")
    return p


# ---- the method ------------------------------------------------------------------------------------------------

@register_method("inq")
class INQ(Method):
    family = "quant"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.bits = int(cfg.get("bits", 5))
        inq_exponents(1.0, self.bits)      # validates bits
        self.partition = str(cfg.get("partition", "magnitude"))
        if self.partition not in PARTITIONS:
            raise ValueError(f"method.partition must be one of {PARTITIONS}, got {self.partition!r}")
        self.portions = check_portions(cfg.get("portions", [0.5, 0.75, 0.875, 1.0]))
        self.layers: dict[str, nn.Module] = {}
        self.frozen = FrozenEntries()
        self.active = False
        self.history: list[dict] = []      # quantized fraction per layer after each partition
        self.fp_eval: dict = {}            # accuracy of the float model before the first partition

    # ---- stages ----
    def stages(self) -> list[Stage]:
        if self.cfg.get("stages"):
            out = []
            for spec in self.cfg.stages:
                spec = dict(spec)
                name, trainer = spec.pop("name"), dict(spec.pop("trainer", None) or {})
                bad = set(spec) - {"kind", "portion"}
                if bad:
                    raise KeyError(f"method.stages[{name}]: unknown keys {sorted(bad)}; allowed: name, trainer, kind, portion")
                if spec.setdefault("kind", "inq") != "inq" or "portion" not in spec:
                    raise ValueError(f"method.stages[{name}] needs kind: inq and a portion")
                out.append(Stage(name=name, trainer=trainer, params=spec,
                                 trainer_key=f"method.stages[{name}].trainer"))
            check_portions([s.params["portion"] for s in out])
            return out
        return self.portion_stages(self.portions, self.cfg.get("stage_trainer"), self.cfg.get("final_trainer"))

    @staticmethod
    def portion_stages(portions, stage_trainer, final_trainer) -> list[Stage]:
        """One stage per accumulated portion; the last (sigma = 1) uses ``final_trainer`` (default 0 epochs)."""
        stage_trainer = dict(stage_trainer or {})
        final_trainer = dict(final_trainer if final_trainer is not None else {"epochs": 0})
        return [Stage(name=f"inq{i + 1}_{p:g}", trainer=dict(final_trainer if p == 1.0 else stage_trainer),
                      params={"kind": "inq", "portion": p},
                      trainer_key="method.final_trainer" if p == 1.0 else "method.stage_trainer")
                for i, p in enumerate(portions)]

    # ---- structure ----
    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        if self.cfg.get("seed") is None:       # the run's seed drives the random partition (saved/restored)
            self.generator.manual_seed(int(ctx.seed))
        include = list(self.cfg.get("layers") or []) or None
        self.layers = compressible_layers(model, include, list(self.cfg.get("exclude") or []))
        keep_zeros = bool(self.cfg.get("keep_zeros", False))
        for m in self.layers.values():
            attach_masks(m, prune=True, mask_grad="masked")   # a pruned (DNS) checkpoint's masks load here
            if keep_zeros:                     # a pruned start model given as plain weights: its zeros stay pruned
                with torch.no_grad():
                    m.weight_mask.mul_((m.weight != 0).to(m.weight_mask.dtype))
                    if m.bias is not None:
                        m.bias_mask.mul_((m.bias != 0).to(m.bias_mask.dtype))
            if getattr(m, "quant_mask", None) is None:
                m.register_buffer("quant_mask", torch.zeros_like(m.weight, requires_grad=False))
                m.register_buffer("quant_n1", torch.zeros((), dtype=torch.int64))
                m.register_buffer("quant_bits", torch.zeros((), dtype=torch.int64))   # 0: not yet quantized
        return model

    def _refresh_layers(self, model: nn.Module) -> None:
        found = masked_layers(_unwrap(model))
        self.layers = {n: found.get(n, m) for n, m in self.layers.items()}

    def n2(self, n1: int) -> int:
        return n1 + 1 - 2 ** (self.bits - 1) // 2

    @torch.no_grad()
    def quantize_portion(self, portion: float) -> None:
        """Partition + Eq. 4 for every layer: the quantized group grows to ``portion`` of the candidates."""
        record = {"portion": portion}
        for name, m in self.layers.items():
            fold_masks(m)                      # pruned entries are exact zeros
            w, q = m.weight, m.quant_mask
            cand = m.weight_mask.bool() if getattr(m, "weight_mask", None) is not None else torch.ones_like(q, dtype=torch.bool)
            q[~cand] = 1                       # pruned: fixed at 0, which is in P_l
            if int(m.quant_bits) == 0:         # first partition of this layer: fix P_l
                n1, _ = inq_exponents(float(w.abs().max()), self.bits)
                m.quant_n1.fill_(n1)
                m.quant_bits.fill_(self.bits)
            n1 = int(m.quant_n1)
            target = partition_counts(int(cand.sum()), [portion])[0]
            floating = cand & ~q.bool()
            need = target - int((cand & q.bool()).sum())
            if need > 0:
                if self.partition == "magnitude":
                    score = w.abs().flatten().double()
                else:
                    score = torch.rand(w.numel(), generator=self.generator, dtype=torch.float64).to(w.device)
                score = torch.where(floating.flatten(), score, torch.full_like(score, -1.0))
                idx = torch.topk(score, need, sorted=False).indices
                q.view(-1)[idx] = 1
            qb = q.bool()
            w.copy_(torch.where(qb, inq_quantize(w, n1, self.n2(n1)), w))
            record[name] = float(qb[cand].float().mean()) if cand.any() else 1.0
        self.history.append(record)

    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        self._refresh_layers(model)
        portion = float(stage.params["portion"])
        done = [h["portion"] for h in self.history]
        if not done and ctx.evaluate is not None and ctx.test_loader is not None:
            ev = ctx.evaluate(model, ctx.test_loader)     # the float model INQ starts from
            self.fp_eval = {"top1": float(ev["top1"]), "top5": float(ev["top5"])}
        if portion not in done:                # a resumed stage has already partitioned
            self.quantize_portion(portion)
        self.active = True
        return model

    def on_stage_end(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        self.active = False
        return model

    def _pairs(self):
        return [(m.weight, m.quant_mask) for m in self.layers.values()]

    def after_backward(self, model: nn.Module, step: int) -> None:
        if self.active:
            pairs = self._pairs()
            self.frozen.zero_grads(pairs)
            self.frozen.snapshot(pairs)

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.active:
            self.frozen.restore(self._pairs())
            for m in self.layers.values():     # pruned entries (DNS) stay exactly zero
                fold_masks(m)

    # ---- reporting and state ----
    def layer_report(self) -> dict:
        out = {}
        for name, m in self.layers.items():
            n1 = int(m.quant_n1)
            w = m.weight * m.weight_mask if getattr(m, "weight_mask", None) is not None else m.weight
            out[name] = {"n1": n1, "n2": self.n2(n1), "quantized_frac": float(m.quant_mask.float().mean()),
                         "in_set": bool(int(m.quant_bits) > 0 and in_set(w, n1, self.n2(n1))),
                         "levels_used": int(torch.unique(w.detach().abs()).numel())}
        return out

    def metrics(self, model: nn.Module) -> dict:
        self._refresh_layers(model)
        rep = storage_report(_unwrap(model), self.cfg.get("index_bits"))
        layers = self.layer_report()
        out = {k: v for k, v in rep.items() if k != "layers"}
        out.update({"inq_bits": self.bits, "inq_partition": self.partition,
                    "inq_portions": [h["portion"] for h in self.history],
                    "inq_all_in_set": all(v["in_set"] for v in layers.values()) and
                    all(v["quantized_frac"] == 1.0 for v in layers.values()),
                    "inq_layers": layers, "inq_history": self.history,
                    "fp_top1": self.fp_eval.get("top1"), "fp_top5": self.fp_eval.get("top5"),
                    "nonzero_by_layer": {n: v["nonzero"] for n, v in rep["layers"].items()}})
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "inq_history": self.history, "inq_fp_eval": self.fp_eval}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = list(state.get("inq_history", []))
        self.fp_eval = dict(state.get("inq_fp_eval", {}))


@register_method("dns_inq")
class DNSINQ(Method):
    """DNS surgery, then INQ on the surviving weights (INQ paper Table 5) as one multi-stage pipeline.

    Config: ``dns:`` (the DNS hyper-parameters of ``method=dns``), ``inq:`` (bits, partition), and
    ``stages:`` whose ``kind`` is ``surgery`` / ``finetune`` (DNS) or ``inq`` (with ``portion``).
    """

    family = "quant"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.dns = DNS(cfg.dns)
        inq_cfg = dict(cfg.inq)
        inq_cfg.setdefault("layers", cfg.dns.get("layers"))
        inq_cfg.setdefault("exclude", cfg.dns.get("exclude"))
        inq_cfg.setdefault("portions", [1.0])   # validated from the stage list below
        from omegaconf import OmegaConf
        self.inq = INQ(OmegaConf.create(inq_cfg))
        self.dns.generator = self.inq.generator = self.generator
        self._stages = self._build_stages()

    def _build_stages(self) -> list[Stage]:
        out = []
        for spec in self.cfg.get("stages") or []:
            spec = dict(spec)
            name, trainer = spec.pop("name"), dict(spec.pop("trainer", None) or {})
            kind = spec.setdefault("kind", "surgery")
            allowed = {"inq": {"kind", "portion"}, "surgery": {"kind", "layers"}, "finetune": {"kind"}}
            if kind not in allowed:
                raise ValueError(f"method.stages[{name}].kind must be one of {sorted(allowed)}, got {kind!r}")
            bad = set(spec) - allowed[kind]
            if bad:
                raise KeyError(f"method.stages[{name}] ({kind}): unknown keys {sorted(bad)}; allowed: {sorted(allowed[kind])}")
            out.append(Stage(name=name, trainer=trainer, params=spec,
                             trainer_key=f"method.stages[{name}].trainer"))
        inq = [s.params.get("portion") for s in out if s.params["kind"] == "inq"]
        if not inq:
            raise ValueError("method=dns_inq needs stages with kind: inq (and a portion each)")
        check_portions(inq)
        first_inq = next(i for i, s in enumerate(out) if s.params["kind"] == "inq")
        if any(s.params["kind"] != "inq" for s in out[first_inq:]):
            raise ValueError("method=dns_inq: all DNS stages (surgery/finetune) must come before the INQ stages")
        return out

    def stages(self) -> list[Stage]:
        return self._stages

    def transform(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        return self.inq.transform(self.dns.transform(model, ctx), ctx)

    def on_stage_start(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        if stage.params["kind"] == "inq":
            self.dns._refresh_layers(model)
            for m in self.dns.layers.values():
                m.mask_grad = "masked"
            return self.inq.on_stage_start(stage, model, ctx)
        return self.dns.on_stage_start(stage, model, ctx)

    def on_stage_end(self, stage: Stage, model: nn.Module, ctx: RunContext) -> nn.Module:
        sub = self.inq if stage.params["kind"] == "inq" else self.dns
        return sub.on_stage_end(stage, model, ctx)

    def after_backward(self, model: nn.Module, step: int) -> None:
        self.inq.after_backward(model, step)

    def after_step(self, model: nn.Module, step: int) -> None:
        self.dns.after_step(model, step)
        self.inq.after_step(model, step)

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: RunContext) -> None:
        self.dns.on_epoch_end(model, epoch, ctx)

    def metrics(self, model: nn.Module) -> dict:
        out = self.dns.metrics(model)
        out.update(self.inq.metrics(model))
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), **{k: v for k, v in self.dns.state_dict().items() if k != "generator"},
                **{k: v for k, v in self.inq.state_dict().items() if k != "generator"}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.dns.load_state_dict({k: v for k, v in state.items() if k != "generator"})
        self.inq.load_state_dict({k: v for k, v in state.items() if k != "generator"})
