"""Multiple-binary-base layers, shared by ``method=pa`` (methods/pa.py) and ``method=abc_net`` (methods/abc_net.py).

Both methods approximate a layer's weights by M binary bases and its input activations by N binary bases, every
base a *shifted sign* (+1 for x >= t, -1 otherwise, the suite's tie rule):

    W ~ W^ = sum_m alpha_m * sign(W - u_m)          (u_m, alpha_m per layer or per output channel)
    A ~ A^ = sum_n beta_n  * sign(A - v_n)          (v_n, beta_n per layer)

so the layer keeps the bitwise-parallel form (:meth:`MultiBaseConv2d.bitwise_forward`)

    conv(A^, W^) = sum_m sum_n alpha_m beta_n conv(sign(A - v_n), sign(W - u_m))

: M*N independent XNOR/popcount convolutions of +-1 tensors, scaled and summed. Training runs the equivalent float
form ``conv(A^, W^)`` (one convolution; the two are equal up to float rounding, exactly when the coefficients are
dyadic). The methods differ in how (u, alpha) follow from W, how (v, beta) are initialised and trained, and in the
backward surrogate of the staircase (:class:`StairFunction`, ``GRADS``).

Complexity (core/complexity.py): a multi-base layer declares ``weight_bits = M`` and ``act_bits = N``, so its
BOPs are MACs * M * N (the multi-base convention: M*N binary convolutions per layer) and its size M bits per weight;
the N activation coefficients and thresholds are parameters/buffers counted at 32 bits. The per-channel alpha are
recomputed from W and not stored (a deployed model would add 32 * M * O bits per layer: ``scale_bits`` in
:func:`multibase_report`). The FP work of the bitwise form (M*N scaled adds per output) is reported, not counted.

Backward of the staircase S(x) = sum_k c_k sign(x - t_k) (``grad`` of :class:`StairFunction`):

- ``identity``: dS/dx = 1 (a straight-through estimator of the whole staircase);
- ``ste_sum``: dS/dx = sum_k c_k (each sign's STE is 1: ABC-Net's dW = sum_m alpha_m dB_m);
- ``box``: dS/dx = sum_k c_k * h * 1[|x - t_k| <= w_k / 2] (each sign's surrogate a box of width ``w_k`` and
  height ``h``; ``h = 2 / w_k`` (``height=None``) makes each sign a ramp of width w_k, i.e. the staircase's
  piecewise-linear interpolation).
dS/dc_k = sign(x - t_k) and dS/dt_k = -c_k * (the same surrogate of sign k) when c / t require gradients.
"""
from __future__ import annotations

import abc
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.binary_layers import _sign

GRADS = ("identity", "ste_sum", "box")


def _expand(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(K, *lead) coefficients/thresholds -> (K, *lead, 1, ...) broadcastable against x[None]."""
    return p.reshape(*p.shape, *([1] * (x.dim() + 1 - p.dim())))


def stair(x: torch.Tensor, thresholds: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """sum_k c_k sign(x - t_k) (no autograd rule; ``thresholds``/``coeffs`` (K, *lead) with lead a prefix of x's
    shape, e.g. (K,) per layer or (K, O) per output channel)."""
    t, c = _expand(thresholds, x), _expand(coeffs, x)
    out = torch.zeros_like(x)
    for k in range(t.shape[0]):
        out = out + c[k] * _sign(x - t[k])
    return out


def stair_bases(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The K binary bases sign(x - t_k): (K, *x.shape) in {-1, +1}."""
    t = _expand(thresholds, x)
    return torch.stack([_sign(x - t[k]) for k in range(t.shape[0])])


class StairFunction(torch.autograd.Function):
    """S(x) = sum_k c_k sign(x - t_k) forward; the ``grad`` surrogate backward (module docstring)."""

    @staticmethod
    def forward(ctx, x, thresholds, coeffs, grad, widths, height):
        ctx.save_for_backward(x, thresholds, coeffs, widths)
        ctx.grad, ctx.height = grad, height
        return stair(x, thresholds, coeffs)

    @staticmethod
    def backward(ctx, g):
        x, thresholds, coeffs, widths = ctx.saved_tensors
        t, c = _expand(thresholds, x), _expand(coeffs, x)
        need_x, need_t, need_c = ctx.needs_input_grad[:3]
        gx = gt = gc = None
        lead = thresholds.dim()           # K, then the dims of x the thresholds/coeffs are per (e.g. O)

        def reduce(v):                    # (K, *x.shape) -> thresholds' shape: sum over what they broadcast on
            dims = tuple(d for d in range(1, v.dim()) if d >= lead or thresholds.shape[d] == 1)
            return v.sum(dim=dims, keepdim=True).reshape(thresholds.shape)

        if ctx.grad == "identity":
            gx = g if need_x else None
        elif ctx.grad == "ste_sum":
            gx = g * c.sum(0) if need_x else None
        if ctx.grad == "box" or need_t:
            w = _expand(widths, x)
            h = (2.0 / w) if ctx.height is None else torch.full_like(w, float(ctx.height))
            surr = [h[k] * ((x - t[k]).abs() <= w[k] / 2).to(x.dtype) for k in range(t.shape[0])]
            if ctx.grad == "box" and need_x:
                gx = sum(c[k] * surr[k] for k in range(len(surr))) * g
            if need_t:
                gt = reduce(torch.stack([-c[k] * surr[k] * g for k in range(len(surr))]))
        if need_c:
            gc = reduce(torch.stack([_sign(x - t[k]) * g for k in range(t.shape[0])]))
        return gx, gt, gc, None, None, None


def stair_ste(x: torch.Tensor, thresholds: torch.Tensor, coeffs: torch.Tensor, grad: str = "identity",
              widths: torch.Tensor | None = None, height: float | None = None) -> torch.Tensor:
    """:class:`StairFunction` with the named backward ``grad`` (``widths`` (K,) or thresholds' shape, for box)."""
    if grad not in GRADS:
        raise ValueError(f"unknown staircase gradient {grad!r}; allowed: {', '.join(GRADS)}")
    widths = torch.ones_like(thresholds) if widths is None else widths.reshape(thresholds.shape)
    return StairFunction.apply(x, thresholds.to(x.dtype), coeffs.to(x.dtype), grad, widths.to(x.dtype), height)


# ---- layers -------------------------------------------------------------------------------------------

class WeightBases(nn.Module, metaclass=abc.ABCMeta):
    """How a layer's latent weight W becomes (thresholds u (M, O) or (M,), coefficients alpha, the same shape)
    and its backward rule. Subclasses (methods/pa.py, methods/abc_net.py) implement :meth:`fit`."""

    grad = "identity"

    def __init__(self, m: int):
        super().__init__()
        self.m = int(m)

    @abc.abstractmethod
    def fit(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, alpha) fitted to the latent weight ``w``."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            u, alpha = self.fit(w.detach())
        return stair_ste(w, u, alpha, self.grad)


class ActBases(nn.Module):
    """N shifted-sign activation bases with coefficients ``beta`` (learned or fixed) and thresholds ``v``
    (learned or fixed); ``grad`` / ``width`` / ``height``: the staircase backward (module docstring)."""

    def __init__(self, n: int, thresholds, coeffs, *, learn_thresholds: bool, learn_coeffs: bool, grad: str,
                 widths, height: float | None):
        super().__init__()
        self.n = int(n)
        t = torch.as_tensor(thresholds, dtype=torch.float32).reshape(self.n)
        c = torch.as_tensor(coeffs, dtype=torch.float32).reshape(self.n)
        if learn_thresholds:
            self.thresholds = nn.Parameter(t)
        else:
            self.register_buffer("thresholds", t)
        if learn_coeffs:
            self.coeffs = nn.Parameter(c)
        else:
            self.register_buffer("coeffs", c)
        self.register_buffer("widths", torch.as_tensor(widths, dtype=torch.float32).reshape(self.n))
        self.grad = grad
        self.height = height

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stair_ste(x, self.thresholds, self.coeffs, self.grad, self.widths, self.height)


class _MultiBaseMixin:
    def _init_bases(self, weight_bases: WeightBases, act_bases: ActBases):
        self.weight_bases = weight_bases
        self.act_bases = act_bases

    @property
    def weight_bits(self) -> int:
        return self.weight_bases.m

    @property
    def act_bits(self) -> int:
        return self.act_bases.n

    def approx_weight(self) -> torch.Tensor:
        return self.weight_bases(self.weight)

    @torch.no_grad()
    def weight_decomposition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B (M, *weight.shape) +-1, alpha (M, O) per output channel) of the current weight."""
        u, alpha = self.weight_bases.fit(self.weight)
        alpha = alpha.reshape(alpha.shape[0], -1).expand(-1, self.weight.shape[0])   # (M,) or (M, 1): per layer
        return stair_bases(self.weight, u), alpha

    def extra_repr(self) -> str:
        return super().extra_repr() + f", M={self.weight_bits} weight bases, N={self.act_bits} activation bases"


class MultiBaseConv2d(_MultiBaseMixin, nn.Conv2d):
    """conv(A^, W^): float form of M*N binary convolutions (module docstring)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=False, *, weight_bases: WeightBases, act_bases: ActBases):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self._init_bases(weight_bases, act_bases)

    def forward(self, x):
        return F.conv2d(self.act_bases(x), self.approx_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    @torch.no_grad()
    def bitwise_forward(self, x: torch.Tensor) -> torch.Tensor:
        """sum_m sum_n alpha_m beta_n conv(sign(x - v_n), B_m) (+ bias): M*N float convolutions of +-1 tensors, each
        an exact integer (the reference of the packed form, methods/common/packed_multibase.py)."""
        bases, alpha = self.weight_decomposition()
        v, beta = self.act_bases.thresholds, self.act_bases.coeffs
        out = None
        for n in range(self.act_bits):
            signs = _sign(x - v[n])
            for m in range(self.weight_bits):
                y = F.conv2d(signs, bases[m].to(x.dtype), None, self.stride, self.padding, self.dilation, self.groups)
                term = y * (alpha[m].to(x.dtype) * beta[n].to(x.dtype)).view(1, -1, 1, 1)
                out = term if out is None else out + term
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


class MultiBaseLinear(_MultiBaseMixin, nn.Linear):
    def __init__(self, in_features, out_features, bias=True, *, weight_bases: WeightBases, act_bases: ActBases):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_bases(weight_bases, act_bases)

    def forward(self, x):
        return F.linear(self.act_bases(x), self.approx_weight(), self.bias)


MULTIBASE_LAYERS = (MultiBaseConv2d, MultiBaseLinear)


def multibase_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, MULTIBASE_LAYERS)]


@torch.no_grad()
def replace_binary_layers(model: nn.Module, make_weight_bases, make_act_bases) -> int:
    """Swap every BinaryConv2d / BinaryLinear of a binary backbone (models/binary.py, built by a BinarySpec whose
    ``fp_*`` roles chose which layers are binary) for a multi-base layer of the same geometry holding the same
    weight tensor (so the backbone's init, drawn from the run seed, is kept). ``make_*_bases(layer)`` build the
    approximators. Returns the number of layers swapped."""
    from models.binary_layers import BinaryConv2d, BinaryLinear
    swaps = []
    for name, mod in model.named_modules():
        for child_name, child in mod.named_children():
            if isinstance(child, (BinaryConv2d, BinaryLinear)):
                swaps.append((mod, child_name, child))
    for parent, child_name, old in swaps:
        kw = dict(weight_bases=make_weight_bases(old), act_bases=make_act_bases(old))
        if isinstance(old, BinaryConv2d):
            new = MultiBaseConv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                  old.dilation, old.groups, old.bias is not None, **kw)
        else:
            new = MultiBaseLinear(old.in_features, old.out_features, old.bias is not None, **kw)
        new.weight = old.weight
        if old.bias is not None:
            new.bias = old.bias
        setattr(parent, child_name, new)
    return len(swaps)


@torch.no_grad()
def multibase_report(model: nn.Module, input_shape) -> dict:
    """Numbers for the row's ``extra``: bases, binary convolutions per image, FP scaled adds of the bitwise form,
    scale bits a deployment stores, weight approximation error and the activation coefficients' spread."""
    from core.complexity import measure
    layers = multibase_layers(model)
    if not layers:
        return {}
    costs = {c.name: c for c in measure(model, input_shape).layers}
    names = {m: n for n, m in model.named_modules()}
    binary_convs, combine_adds, scale_bits, errs = 0, 0, 0, []
    for m in layers:
        c = costs.get(names[m])
        o = m.weight.shape[0]
        binary_convs += m.weight_bits * m.act_bits
        if c is not None:
            outputs = c.macs // max(1, m.weight[0].numel())          # output positions x channels per image
            combine_adds += outputs * m.weight_bits * m.act_bits
        scale_bits += 32 * m.weight_bits * o
        w = m.weight.double()
        errs.append(float((w - m.approx_weight().double()).norm() / w.norm().clamp_min(1e-300)))
    beta = torch.cat([m.act_bases.coeffs.detach().flatten() for m in layers])
    out = {"multibase_layers": len(layers), "weight_bases": layers[0].weight_bits,
           "act_bases": layers[0].act_bits, "binary_convs": binary_convs, "bitwise_scaled_adds": combine_adds,
           "weight_scale_bits": scale_bits, "weight_rel_error": round(sum(errs) / len(errs), 6),
           "weight_rel_error_layers": [round(e, 5) for e in errs],
           "act_coeff_mean": round(float(beta.mean()), 6), "act_coeff_std": round(float(beta.std()), 6)
           if beta.numel() > 1 else 0.0}
    thr = [m.act_bases.thresholds for m in layers if isinstance(m.act_bases.thresholds, nn.Parameter)]
    if thr:
        t = torch.cat([x.detach().flatten() for x in thr])
        out["act_threshold_mean"], out["act_threshold_std"] = round(float(t.mean()), 6), round(float(t.std()), 6)
    return out


# ---- method skeleton ----------------------------------------------------------------------------------

from methods.common.binary import BinaryMethod  # noqa: E402


class MultiBaseMethod(BinaryMethod, metaclass=abc.ABCMeta):
    """Shared skeleton of ``pa`` and ``abc_net``: the binary backbone of the run's model (models/binary.py, its
    ``binary.fp_*`` roles choosing which layers are binary), each binary layer swapped for a multi-base layer
    with ``M`` weight and ``N`` activation bases (:func:`replace_binary_layers`; subclasses give the
    approximators). The row's ``extra`` gets ``w_bits = M``, ``a_bits = N``, the share of weight-base bits flipped
    (``sign_flip_total``, per epoch) and :func:`multibase_report`."""

    config_keys = {"name": None, "family": None, "binary": None, "arch": None, "stages": None,
                   "implemented": None}
    max_bases = 16

    def __init__(self, cfg):
        super().__init__(cfg)
        self.m, self.n = int(cfg.get("M", 1)), int(cfg.get("N", 1))
        for key, value in (("M", self.m), ("N", self.n)):
            if not 1 <= value <= self.max_bases:
                raise ValueError(f"method.{key}={value}: the number of bases must be in 1..{self.max_bases}")
        self.input_shape = None

    @abc.abstractmethod
    def make_weight_bases(self, layer) -> WeightBases:
        """The weight approximator of one binary layer."""

    @abc.abstractmethod
    def make_act_bases(self, layer) -> ActBases:
        """The activation approximator of one binary layer."""

    def describe(self) -> dict:
        return {}

    def deployed(self, model: nn.Module) -> tuple[nn.Module, str]:
        """A CPU copy whose multi-base layers run their M*N binary convolutions on the XNOR-popcount kernel
        (methods/common/packed_multibase.py; any single-base W1A1 layer too), when the kernel is built; else the
        model as trained (the float form: one convolution of the approximated tensors)."""
        from methods.common import packed_binary, packed_multibase
        if not packed_binary.available():
            return model, "float form of the multi-base layers (packed kernel not built: make install)"
        copy_ = packed_binary.pack_model(copy.deepcopy(model).cpu().eval())
        return packed_multibase.pack_multibase_model(copy_), f"packed xnor-popcount, M={self.m} x N={self.n} bases"

    def decorate(self, model: nn.Module, ctx) -> nn.Module:
        self.input_shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        replace_binary_layers(model, self.make_weight_bases, self.make_act_bases)
        return model

    @staticmethod
    @torch.no_grad()
    def weight_signs(model: nn.Module) -> list[torch.Tensor]:
        """The M weight bases' bits (B_m >= 0) of every multi-base layer."""
        return [m.weight_decomposition()[0] >= 0 for m in multibase_layers(model)]

    def metrics(self, model: nn.Module) -> dict:
        out = super().metrics(model)
        layers = multibase_layers(model)
        if layers:
            out.update(w_bits=self.m, a_bits=self.n, binary_layers=len(layers))
        if self.input_shape is not None:
            out.update(multibase_report(model, self.input_shape))
        out.update(self.describe())
        return out
