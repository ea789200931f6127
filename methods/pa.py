"""``method=pa``: Piecewise Approximation (Zhu, Al-Ars, Pan, ECAI 2020, arXiv 2008.03520).

Notes: ../shared/papers/pa.md. No official code, and only the abstract has been read. **Verified from the
abstract:** PA is a multiple-binary-base scheme (M weight bases, N activation bases; running example M = 4, N = 5)
that keeps the bitwise parallelism of every base convolution, "segments piece-wisely the full precision weights and
activations, and approximates each piece with a scaling coefficient", and binarizes the downsampling layers too.
**Everything below is a HYPOTHESIS** (the natural reading of the abstract, written down in pa.md "Algorithm"), to
be checked against the paper's PDF; every choice that the abstract leaves open is a config key.

Layer form (methods/common/multibase.py): W^ = sum_m alpha_m sign(W - u_m), A^ = sum_n beta_n sign(A - v_n),
output conv(A^, W^) = sum_m sum_n alpha_m beta_n conv(sign(A - v_n), sign(W - u_m)) (M*N binary convolutions).

**Weight segmentation** (:func:`pa_weight_thresholds`), per output channel (``granularity: channel``) or per layer:
the M thresholds u_1 < ... < u_M cut the filter's values into M+1 pieces,
    ``segments: quantile`` (default): u_m = the m/(M+1) quantile of the filter's values (equal-mass pieces);
    ``segments: uniform``: u_m = min + (max - min) m/(M+1) (equal-width pieces).
**Piece coefficients** (:func:`pa_piece_means`, :func:`pa_coefficients`): piece k (k = 0..M) holds the values with
u_k <= w < u_{k+1} (u_0 = -inf, u_{M+1} = +inf; sign(0) = +1 puts a value equal to u_k in piece k); mu_k is its
mean. The staircase sum_m alpha_m sign(w - u_m) has jumps 2 alpha_m at u_m, so each piece gets its own level from
    ``coefficients: piece_mean`` (default): alpha_m = (mu_m - mu_{m-1}) / 2, giving the level
        L_k = mu_k - (mu_0 + mu_M) / 2   (the piece mean, shifted so that the outer levels are symmetric);
    ``coefficients: lstsq``: the alpha minimising ||W - W^||^2 for the same thresholds (ABC-Net's fit).
An empty piece (a filter with fewer values than pieces) takes the mid-point of its finite bounds.
**Activation segmentation** (:func:`pa_act_thresholds`): the clip range [-r, r] (``act_range`` r = 1: the
backbone's hardtanh) in N+1 equal pieces of width w = 2r/(N+1), thresholds v_n = -r + n w (n = 1..N), fixed;
coefficients beta_n initialised to w/2 = r/(N+1) (the levels are then the pieces' mid-points) and learned
(``act_coeffs: learned``) or kept (``fixed``).
**Backward** (piecewise-linear approximation of the staircases): weights ``weight_grad: identity`` (dW^/dW = 1,
alpha computed without gradient); activations ``act_grad: piece`` - each sign's surrogate is the ramp of one piece
width centred on its threshold, d sign(a - v_n)/da = (2/w) 1[|a - v_n| <= w/2], so at the initial beta the
staircase's derivative is 1 on [-r + w/2, r - w/2]; ``act_grad: clipped`` - 1[|a - v_n| <= 1] per sign.
dA^/dbeta_n = sign(A - v_n).

Which layers: first conv and last FC full precision (``binary.fp_first`` / ``fp_last``, the family's practice,
unverified for PA), the 1x1 **downsample convs binary** (``binary.fp_downsample: false``: verified from the
abstract). CIFAR ResNet-20 (option A shortcut) has no downsample conv; the ResNet-18 family has.

Complexity: a PA layer declares ``weight_bits = M`` and ``act_bits = N``, so BOPs = MACs * M * N (M*N binary
convolutions per layer, the multi-base convention; PA's own convention is unknown) and OPs = FP MACs + BOPs/64.
``metrics`` adds the per-layer weight approximation error, the learned beta's spread and the bitwise form's
FP adds (multibase_report).
"""
from __future__ import annotations

import torch

from methods import register_method
from methods.common.multibase import ActBases, MultiBaseMethod, WeightBases

SEGMENTS = ("quantile", "uniform")
COEFFICIENTS = ("piece_mean", "lstsq")
GRANULARITY = ("channel", "layer")
ACT_GRADS = ("piece", "clipped")
ACT_COEFFS = ("learned", "fixed")


# ---- the equations (names as in the module docstring) ------------------------------------------------------
def pa_weight_thresholds(w: torch.Tensor, m: int, segments: str = "quantile") -> torch.Tensor:
    """u (M, F) for the rows of ``w`` (F, n): the m/(M+1) quantiles (``quantile``) or equal-width cut points of
    [min, max] (``uniform``)."""
    q = torch.arange(1, m + 1, dtype=w.dtype, device=w.device) / (m + 1)
    if segments == "quantile":
        return torch.quantile(w, q, dim=1)
    if segments == "uniform":
        lo, hi = w.min(1).values, w.max(1).values
        return lo[None] + (hi - lo)[None] * q[:, None]
    raise ValueError(f"method.segments={segments!r}; choose one of {SEGMENTS}")


def pa_piece_index(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Piece k in 0..M of every entry of ``w`` (F, n): the number of thresholds u_m (M, F) with w >= u_m."""
    return (w[None] >= u[:, :, None]).sum(0)


def pa_piece_means(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """mu (M+1, F): the mean of each piece of each row of ``w`` (F, n); an empty piece takes the mid-point of
    its finite bounds."""
    m = u.shape[0]
    idx = pa_piece_index(w, u)
    one_hot = torch.nn.functional.one_hot(idx, m + 1).to(w.dtype)           # (F, n, M+1)
    sums = (one_hot * w[:, :, None]).sum(1).T                               # (M+1, F)
    counts = one_hot.sum(1).T
    lower = torch.cat([u[:1], u], 0)                                        # u_0 := u_1 (finite bound)
    upper = torch.cat([u, u[-1:]], 0)                                       # u_{M+1} := u_M
    empty = (lower + upper) / 2
    return torch.where(counts > 0, sums / counts.clamp_min(1), empty)


def pa_coefficients(means: torch.Tensor) -> torch.Tensor:
    """alpha_m = (mu_m - mu_{m-1}) / 2, m = 1..M: (M, F)."""
    return (means[1:] - means[:-1]) / 2


def pa_levels(means: torch.Tensor) -> torch.Tensor:
    """The staircase's M+1 levels L_k = mu_k - (mu_0 + mu_M)/2 (what sum_m alpha_m sign(w - u_m) takes on piece k)."""
    return means - (means[:1] + means[-1:]) / 2


def lstsq_coefficients(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """alpha (M, F) minimising ||w_f - sum_m alpha_m sign(w_f - u_m)||^2 per row (Network Sketching's least-squares
    refit, methods/sketch.py; the minimum-norm solution when two bases coincide)."""
    from methods.common.multibase import stair_bases
    from methods.sketch import least_squares_coefficients
    bases = stair_bases(w.double(), u.double()).transpose(0, 1)              # (F, M, n)
    return least_squares_coefficients(bases, w.double())[:, :, 0].T.to(w.dtype)


def pa_weight_fit(w: torch.Tensor, m: int, segments: str = "quantile", coefficients: str = "piece_mean",
                  granularity: str = "channel") -> tuple[torch.Tensor, torch.Tensor]:
    """(u, alpha), each (M, O) (``channel``) or (M, 1) (``layer``), of a weight tensor (O, ...)."""
    if granularity not in GRANULARITY:
        raise ValueError(f"method.granularity={granularity!r}; choose one of {GRANULARITY}")
    rows = w.reshape(w.shape[0], -1) if granularity == "channel" else w.reshape(1, -1)
    u = pa_weight_thresholds(rows, m, segments)
    if coefficients == "piece_mean":
        alpha = pa_coefficients(pa_piece_means(rows, u))
    elif coefficients == "lstsq":
        alpha = lstsq_coefficients(rows, u)
    else:
        raise ValueError(f"method.coefficients={coefficients!r}; choose one of {COEFFICIENTS}")
    return u, alpha


def pa_act_thresholds(n: int, act_range: float = 1.0) -> tuple[torch.Tensor, float]:
    """(v (N,), piece width w): N+1 equal pieces of [-r, r], v_n = -r + n w, w = 2r/(N+1)."""
    width = 2.0 * act_range / (n + 1)
    return torch.tensor([-act_range + k * width for k in range(1, n + 1)]), width


class PAWeightBases(WeightBases):
    grad = "identity"

    def __init__(self, m, segments="quantile", coefficients="piece_mean", granularity="channel"):
        super().__init__(m)
        self.segments, self.coefficients, self.granularity = segments, coefficients, granularity

    def fit(self, w):
        return pa_weight_fit(w, self.m, self.segments, self.coefficients, self.granularity)

    def extra_repr(self):
        return f"M={self.m}, segments={self.segments}, coefficients={self.coefficients}, {self.granularity}"


def pa_act_bases(n: int, act_range: float = 1.0, act_coeffs: str = "learned", act_grad: str = "piece") -> ActBases:
    """N fixed thresholds on [-r, r], beta initialised to w/2, the ``piece`` (ramp of width w) or ``clipped``
    (box |a - v_n| <= 1, height 1) backward."""
    if act_coeffs not in ACT_COEFFS:
        raise ValueError(f"method.act_coeffs={act_coeffs!r}; choose one of {ACT_COEFFS}")
    if act_grad not in ACT_GRADS:
        raise ValueError(f"method.act_grad={act_grad!r}; choose one of {ACT_GRADS}")
    v, width = pa_act_thresholds(n, act_range)
    widths, height = (torch.full((n,), width), None) if act_grad == "piece" else (torch.full((n,), 2.0), 1.0)
    return ActBases(n, v, torch.full((n,), width / 2), learn_thresholds=False,
                    learn_coeffs=act_coeffs == "learned", grad="box", widths=widths, height=height)


@register_method("pa")
class PA(MultiBaseMethod):
    """Piecewise approximation with M weight and N activation bases (module docstring; hypothesis)."""

    default_spec = {"fp_first": True, "fp_last": True, "fp_downsample": False}
    extra_keys = {k: None for k in ("M", "N", "segments", "coefficients", "granularity", "act_range",
                                    "act_coeffs", "act_grad")}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.segments = str(cfg.get("segments", "quantile"))
        self.coefficients = str(cfg.get("coefficients", "piece_mean"))
        self.granularity = str(cfg.get("granularity", "channel"))
        self.act_range = float(cfg.get("act_range", 1.0))
        self.act_coeffs = str(cfg.get("act_coeffs", "learned"))
        self.act_grad = str(cfg.get("act_grad", "piece"))
        for key, value, allowed in (("segments", self.segments, SEGMENTS),
                                    ("coefficients", self.coefficients, COEFFICIENTS),
                                    ("granularity", self.granularity, GRANULARITY),
                                    ("act_coeffs", self.act_coeffs, ACT_COEFFS), ("act_grad", self.act_grad, ACT_GRADS)):
            if value not in allowed:
                raise ValueError(f"method.{key}={value!r}; choose one of {allowed}")
        if self.act_range <= 0:
            raise ValueError(f"method.act_range={self.act_range} must be > 0")

    def make_weight_bases(self, layer):
        return PAWeightBases(self.m, self.segments, self.coefficients, self.granularity)

    def make_act_bases(self, layer):
        return pa_act_bases(self.n, self.act_range, self.act_coeffs, self.act_grad)

    def describe(self) -> dict:
        return {"pa_segments": self.segments, "pa_coefficients": self.coefficients,
                "pa_granularity": self.granularity, "pa_act_coeffs": self.act_coeffs, "pa_act_grad": self.act_grad}
