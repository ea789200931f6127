"""``method=abc_net``: ABC-Net-style multiple binary bases (Lin, Zhao, Pan, "Towards Accurate Binary Convolutional
Neural Network", NeurIPS 2017, arXiv 1711.11294) - the multi-base baseline of PA (methods/pa.py, ../shared/papers/pa.md
names ABC-Net as the baseline family). No note of ours reads the ABC-Net paper; the rule below is its widely
reproduced form, written from the equations as commonly cited (UNVERIFIED against the PDF here).

Layer form (methods/common/multibase.py): W^ = sum_m alpha_m B_m, A^ = sum_n beta_n H_n, M*N binary convolutions.

- **Weight bases** (:func:`abc_weight_shifts`, :func:`abc_weight_fit`): B_m = sign(W - mean(W) + u_m std(W)),
  u_m = -1 + 2 (m - 1)/(M - 1) (u = 0 for M = 1), mean and std over the whole layer (``granularity: layer``,
  ABC-Net's choice; ``channel``: per output channel), i.e. thresholds t_m = mean(W) - u_m std(W);
  alpha = argmin ||vec W - sum_m alpha_m vec B_m||^2 (least squares, recomputed every forward, no gradient).
  Backward: dW^/dW = sum_m alpha_m (each B_m's straight-through estimator is 1: ABC-Net's dc/dW = sum_m alpha_m
  dc/dB_m).
- **Activation bases** (:func:`abc_act_bases`): H_n = H_{v_n}(A) = 2 1[clip(A + v_n, 0, 1) >= 0.5] - 1
  = sign(A - t_n) with t_n = 0.5 - v_n, shifts and coefficients beta_n both learned; backward of H_v the box
  1[0 <= A + v_n <= 1] = 1[|A - t_n| <= 1/2] (height 1). ABC-Net does not state an initialisation here that our
  notes hold: the thresholds start where PA's fixed ones sit (N+1 equal pieces of [-1, 1]) and beta_n at 1/(N+1),
  so the two methods start from the same activation staircase and differ in what they train and how.

Which layers are binary: ``binary.fp_*`` roles as for PA (the grid uses the same layers for both, equal BOPs).
"""
from __future__ import annotations

import torch

from methods import register_method
from methods.common.multibase import ActBases, MultiBaseMethod, WeightBases
from methods.pa import lstsq_coefficients, pa_act_thresholds

GRANULARITY = ("layer", "channel")


def abc_weight_shifts(m: int) -> torch.Tensor:
    """u_m = -1 + 2 (m - 1)/(M - 1), m = 1..M (u = [0] for M = 1)."""
    if m == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.tensor([-1 + 2 * (k - 1) / (m - 1) for k in range(1, m + 1)], dtype=torch.float64)


def abc_weight_fit(w: torch.Tensor, m: int, granularity: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """(t, alpha), each (M, 1) per layer or (M, O) per channel: t_m = mean - u_m std (std with Bessel's
    correction, torch's default), alpha the least-squares coefficients of the bases sign(W - t_m)."""
    if granularity not in GRANULARITY:
        raise ValueError(f"method.granularity={granularity!r}; choose one of {GRANULARITY}")
    rows = w.reshape(w.shape[0], -1) if granularity == "channel" else w.reshape(1, -1)
    u = abc_weight_shifts(m).to(w.dtype).to(w.device)
    t = rows.mean(1)[None] - u[:, None] * rows.std(1)[None]                   # (M, F)
    return t, lstsq_coefficients(rows, t)


class ABCWeightBases(WeightBases):
    grad = "ste_sum"

    def __init__(self, m, granularity="layer"):
        super().__init__(m)
        self.granularity = granularity

    def fit(self, w):
        return abc_weight_fit(w, self.m, self.granularity)

    def extra_repr(self):
        return f"M={self.m}, {self.granularity}"


def abc_act_bases(n: int) -> ActBases:
    """Learned thresholds t_n (start: PA's v_n) and beta_n (start: 1/(N+1)); box backward of width 1, height 1."""
    v, width = pa_act_thresholds(n, 1.0)
    return ActBases(n, v, torch.full((n,), width / 2), learn_thresholds=True, learn_coeffs=True, grad="box",
                    widths=torch.ones(n), height=1.0)


@register_method("abc_net")
class ABCNet(MultiBaseMethod):
    """ABC-Net-style multiple binary bases (module docstring)."""

    default_spec = {"fp_first": True, "fp_last": True, "fp_downsample": False}
    extra_keys = {"M": None, "N": None, "granularity": None}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.granularity = str(cfg.get("granularity", "layer"))
        if self.granularity not in GRANULARITY:
            raise ValueError(f"method.granularity={self.granularity!r}; choose one of {GRANULARITY}")

    def make_weight_bases(self, layer):
        return ABCWeightBases(self.m, self.granularity)

    def make_act_bases(self, layer):
        return abc_act_bases(self.n)

    def describe(self) -> dict:
        return {"abc_granularity": self.granularity}
