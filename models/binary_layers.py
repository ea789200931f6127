"""Binary-network layers: the building blocks every binary backbone (models/binary.py) and every binary method
(methods/bnn.py ... methods/ir2net.py) share. Lives under models/ so that models/ never imports methods/
(import direction: models -> methods -> engine).

- **Estimators** (``ESTIMATORS``): the forward is always ``sign(x)`` (here ``+1`` for ``x >= 0``, ``-1``
  otherwise, so every binary value packs into one bit); they differ in the backward surrogate
  d sign(x)/dx:

  ========== ======================================================= ==================================
  name       backward                                                source
  ========== ======================================================= ==================================
  ste        1                                                       straight-through (identity)
  clipped    1 if |x| <= 1 else 0                                    BNN (Hubara et al.), IR²Net weights
  approx     2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 elsewhere        Bi-Real ApproxSign (sd_bnn.md, ir2net.md)
  ede        k * t * (1 - tanh^2(t * x))                             IR-Net EDE (sd_bnn.md "CIFAR backward")
  ========== ======================================================= ==================================

  EDE's schedule (sd_bnn.md, Recipe / CIFAR-10): ``t = 10^(log10 Tmin + (log10 Tmax - log10 Tmin) * epoch / epochs)``,
  ``k = max(1/t, 1)`` — :func:`ede_schedule`.

- :class:`BinaryConv2d` / :class:`BinaryLinear`: ``out = conv(sign(a'), sign(w')) [* scale]`` with pluggable
  activation and weight estimators, optional per-output-channel scaling (``mean_abs``: XNOR-Net's
  alpha = mean|w| with its gradient, applied to the output; ``bireal``: Bi-Real's magnitude-aware weights
  mean|w_c| * sign(w), the scale detached and the weight gradient the estimator's alone, as the official
  Bi-Real code computes it; ``pow2``: IR-Net's 2^round(log2 mean|w_std|) after Libra-PB standardisation), and two
  hook slots that methods fill: ``act_pre`` (a module applied to the input before sign, e.g. SD-BNN's ASD)
  and ``weight_pre`` (applied to the latent weight before sign, e.g. SD-BNN's WSD). Layers declare
  ``weight_bits`` / ``act_bits`` (1, or 32 when that side is not binarized) so core/complexity.py counts
  BOPs, OPs and size from them.

- :class:`BinarySpec`: which estimators/scaling a backbone's binary layers use and which roles stay full
  precision (first conv, last FC, downsample 1x1 convs). Backbones in models/binary.py call
  ``spec.conv(..., role=...)`` for every conv, so one spec turns any of them into plain BNN, XNOR, Bi-Real,
  IR-Net, SD-BNN or IR²Net layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- estimators ------------------------------------------------------------------------------------

def _sign(x: torch.Tensor) -> torch.Tensor:
    """+1 for x >= 0, -1 otherwise (torch.sign's 0 at exactly 0 would not pack into one bit).

    One allocation: sign(x) in {-1, 0, 1}, + 0.5 and sign again in place (0 -> +1). On CPU this is ~6x faster than
    ``torch.where(x >= 0, 1., -1.)`` (which also allocated a ``ones_like`` pair in the earlier form)."""
    return torch.sign(x).add_(0.5).sign_()


ESTIMATORS = ("ste", "clipped", "approx", "ede")


def surrogate_grad(estimator: str, x: torch.Tensor, k: torch.Tensor, t: torch.Tensor,
                   grad: torch.Tensor | None = None) -> torch.Tensor:
    """d sign(x)/dx as each estimator defines it (table in the module docstring), times ``grad`` when given.

    Written as one fresh tensor updated in place (the backward of every binary layer runs it on activation-sized
    tensors, so each avoided temporary is a memory pass saved)."""
    if estimator == "ste":
        return torch.ones_like(x) if grad is None else grad
    if estimator == "clipped":     # 1 on |x| <= 1 (inclusive, as torch.clamp's gradient), else 0
        d = x.abs().sub_(1).clamp_(min=0).sign_().neg_().add_(1)
    elif estimator == "approx":    # Bi-Real ApproxSign: derivative of the piecewise quadratic 2x -+ x^2 on [-1, 1):
        # 2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 elsewhere == max(0, 2 - 2|x|) (both ends give 0)
        d = x.abs().mul_(-2).add_(2).clamp_(min=0)
    elif estimator == "ede":       # IR-Net Error Decay Estimator: k t (1 - tanh^2(t x))
        d = (x * t).tanh_()
        d = d.mul_(d).neg_().add_(1).mul_(k * t)
    else:
        raise ValueError(f"unknown binary estimator {estimator!r}; allowed: {', '.join(ESTIMATORS)}")
    return d if grad is None else d.mul_(grad)


class _Sign(torch.autograd.Function):
    """sign(x) forward; the named estimator's surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x, estimator, k, t, scale):
        ctx.save_for_backward(x, k, t)
        ctx.estimator = estimator
        out = _sign(x)
        return out if scale is None else out.mul_(scale)

    @staticmethod
    def backward(ctx, g):
        x, k, t = ctx.saved_tensors
        return surrogate_grad(ctx.estimator, x, k, t, g), None, None, None, None


def binarize(x: torch.Tensor, estimator: str, k: torch.Tensor | float = 1.0,
             t: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None) -> torch.Tensor:
    """sign(x) in the forward pass with the named backward surrogate (``k``, ``t`` used by ``ede`` only).

    ``scale`` (broadcastable, no gradient): forward ``scale * sign(x)``, backward the surrogate alone — Bi-Real's
    magnitude-aware weights, whose official code detaches the scale and passes the clipped-STE gradient unscaled."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown binary estimator {estimator!r}; allowed: {', '.join(ESTIMATORS)}")
    if not isinstance(k, torch.Tensor) or k.dtype != x.dtype:
        k = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    if not isinstance(t, torch.Tensor) or t.dtype != x.dtype:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return _Sign.apply(x, estimator, k, t, None if scale is None else scale.detach())


def ede_schedule(epoch: int, epochs: int, tmin: float = 1e-3, tmax: float = 1e1) -> tuple[float, float]:
    """IR-Net EDE schedule (sd_bnn.md Recipe): t = 10^(log10 Tmin + (log10 Tmax - log10 Tmin) * epoch / epochs),
    k = max(1/t, 1). Returns (k, t)."""
    if epochs <= 0:
        raise ValueError(f"ede_schedule needs epochs > 0, got {epochs}")
    lo, hi = math.log10(tmin), math.log10(tmax)
    t = 10 ** (lo + (hi - lo) * epoch / epochs)
    return max(1.0 / t, 1.0), t


# ---- layers ----------------------------------------------------------------------------------------

SCALINGS = ("none", "mean_abs", "bireal", "pow2")
STANDARDIZE = ("none", "libra")


def check_binary_options(act_estimator, weight_estimator, scaling, standardize) -> None:
    for key, value, allowed in (("act_estimator", act_estimator, ESTIMATORS),
                                ("weight_estimator", weight_estimator, ESTIMATORS),
                                ("scaling", scaling, SCALINGS), ("standardize", standardize, STANDARDIZE)):
        if value not in allowed:
            raise ValueError(f"method.binary.{key}={value!r} is not one of {', '.join(allowed)}")


class _BinaryMixin:
    """Shared logic of BinaryConv2d / BinaryLinear (weights and activations binarized independently)."""

    def _init_binary(self, act_estimator="ste", weight_estimator="ste", scaling="none", standardize="none",
                     binarize_weights=True, binarize_acts=True):
        check_binary_options(act_estimator, weight_estimator, scaling, standardize)
        self.act_estimator = act_estimator
        self.weight_estimator = weight_estimator
        self.scaling = scaling
        self.standardize = standardize
        # kept in a buffer so a checkpoint remembers the stage's precision (W32A1 vs W1A1)
        self.register_buffer("binary_flags", torch.tensor([bool(binarize_weights), bool(binarize_acts)]))
        self._flags = (bool(binarize_weights), bool(binarize_acts))
        self.act_pre: nn.Module | None = None      # e.g. SD-BNN ASD: a -> a + beta(a)
        self.weight_pre: nn.Module | None = None   # e.g. SD-BNN WSD: w -> w + sigmoid(alpha) * 0.01 * mean(w)
        self.register_buffer("ede_k", torch.tensor(1.0))
        self.register_buffer("ede_t", torch.tensor(1.0))
        self.frozen = False                        # set by load_binary_export: weight already holds +-1

    @property
    def binarize_weights(self) -> bool:
        return self._flags[0]

    @binarize_weights.setter
    def binarize_weights(self, value: bool) -> None:
        self._set_flags(bool(value), self._flags[1])

    @property
    def binarize_acts(self) -> bool:
        return self._flags[1]

    @binarize_acts.setter
    def binarize_acts(self, value: bool) -> None:
        self._set_flags(self._flags[0], bool(value))

    def _set_flags(self, bw: bool, ba: bool) -> None:
        self._flags = (bw, ba)                       # python copy: no device sync in forward
        self.binary_flags.copy_(torch.tensor([bw, ba]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        flags = state_dict.get(prefix + "binary_flags")
        if flags is not None:
            self._flags = (bool(flags[0]), bool(flags[1]))

    # complexity declarations (core/complexity.py reads these)
    @property
    def weight_bits(self) -> int:
        return 1 if self.binarize_weights else 32

    @property
    def act_bits(self) -> int:
        return 1 if self.binarize_acts else 32

    def binary_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(sign(w') or the real w' when weights are not binarized, per-output-channel scale or None)."""
        if self.frozen:
            scale = getattr(self, "frozen_scale", None)
            if self.scaling == "bireal" and scale is not None:   # folded into the weight, as in training
                return self.weight * scale.view(-1, *([1] * (self.weight.dim() - 1))), None
            return self.weight, scale
        w = self.weight
        if self.weight_pre is not None:
            w = self.weight_pre(w)
        if not self.binarize_weights:
            return w, None
        dims = tuple(range(1, w.dim()))
        if self.standardize == "libra":   # IR-Net Libra-PB: balanced, standardized per output channel
            w = w - w.mean(dim=dims, keepdim=True)
            w = w / w.std(dim=dims, keepdim=True)
        scale = None
        if self.scaling == "mean_abs":    # XNOR-Net alpha_c = ||w_c||_1 / n
            scale = w.abs().mean(dim=dims)
        elif self.scaling == "pow2":      # IR-Net 2^round(log2(mean |w_std|)), a bit shift
            scale = torch.pow(2.0, torch.round(torch.log2(w.abs().mean(dim=dims)))).detach()
        elif self.scaling == "bireal":    # Bi-Real: mean|w_c| * sign(w) in the weight, detached, unscaled gradient
            folded = w.detach().abs().mean(dim=dims, keepdim=True)
            return binarize(w, self.weight_estimator, self.ede_k, self.ede_t, folded), None
        return binarize(w, self.weight_estimator, self.ede_k, self.ede_t), scale

    @torch.no_grad()
    def export_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the +-1 weight, per-output-channel scale or None) as the packed export stores them."""
        if self.scaling == "bireal" and self.binarize_weights and not self.frozen:
            w = self.weight if self.weight_pre is None else self.weight_pre(self.weight)
            dims = tuple(range(1, w.dim()))     # the same expression as binary_weight: bit-exact reload
            return _sign(w), w.abs().mean(dim=dims, keepdim=True).flatten()
        return self.binary_weight()

    def binary_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_pre is not None:
            x = self.act_pre(x)
        if not self.binarize_acts:
            return x
        return binarize(x, self.act_estimator, self.ede_k, self.ede_t)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", W{self.weight_bits}A{self.act_bits}, act={self.act_estimator}, "
                f"weight={self.weight_estimator}, scaling={self.scaling}, standardize={self.standardize}")


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """conv(sign(a'), sign(w')) [* scale]; padding zeros stay 0 as in every reference implementation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=False, **binary):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self._init_binary(**binary)

    def forward(self, x):
        w, scale = self.binary_weight()
        out = F.conv2d(self.binary_input(x), w, None, self.stride, self.padding, self.dilation, self.groups)
        if scale is not None:
            out = out * scale.view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class BinaryLinear(_BinaryMixin, nn.Linear):
    def __init__(self, in_features, out_features, bias=True, **binary):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_binary(**binary)

    def forward(self, x):
        w, scale = self.binary_weight()
        out = F.linear(self.binary_input(x), w)
        if scale is not None:
            out = out * scale
        if self.bias is not None:
            out = out + self.bias
        return out


BINARY_LAYERS = (BinaryConv2d, BinaryLinear)


def binary_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, BINARY_LAYERS)]


def set_ede(model: nn.Module, k: float, t: float) -> None:
    for m in binary_layers(model):
        m.ede_k.fill_(k)
        m.ede_t.fill_(t)


# ---- spec: which layers are binary and how ---------------------------------------------------------

ROLES = ("first", "body", "downsample", "last", "fusion")


@dataclass
class BinarySpec:
    """How a backbone's layers are built. ``fp_<role>`` keeps that role full precision."""

    act_estimator: str = "ste"
    weight_estimator: str = "ste"
    scaling: str = "none"
    standardize: str = "none"
    binarize_weights: bool = True
    binarize_acts: bool = True
    fp_first: bool = True
    fp_last: bool = True
    fp_downsample: bool = True
    enabled: bool = True            # False: every layer FP (the full-precision reference with the same topology)

    def __post_init__(self):
        check_binary_options(self.act_estimator, self.weight_estimator, self.scaling, self.standardize)

    @classmethod
    def from_cfg(cls, cfg) -> "BinarySpec":
        names = {f.name for f in fields(cls)}
        given = dict(cfg or {})
        unknown = sorted(set(given) - names)
        if unknown:
            raise ValueError(f"method.binary has unknown keys {unknown}; allowed: {sorted(names)}")
        return cls(**given)

    def _binary_role(self, role: str) -> bool:
        if role not in ROLES:
            raise ValueError(f"layer role {role!r} not in {ROLES}")
        if not self.enabled or role == "fusion":
            return False
        return not getattr(self, f"fp_{role}", False)

    def _kw(self) -> dict:
        return dict(act_estimator=self.act_estimator, weight_estimator=self.weight_estimator,
                    scaling=self.scaling, standardize=self.standardize,
                    binarize_weights=self.binarize_weights, binarize_acts=self.binarize_acts)

    def conv(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=False,
             role="body") -> nn.Conv2d:
        if self._binary_role(role):
            return BinaryConv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias,
                                **self._kw())
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)

    def linear(self, in_features, out_features, bias=True, role="last") -> nn.Linear:
        if self._binary_role(role):
            return BinaryLinear(in_features, out_features, bias, **self._kw())
        return nn.Linear(in_features, out_features, bias)
