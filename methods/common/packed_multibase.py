"""Multi-base layers (PA, ABC-Net: methods/common/multibase.py) on the XNOR-popcount kernel: the bitwise-parallel
form run as one packed convolution per layer.

A multi-base layer computes ``sum_m sum_n alpha_m beta_n conv(sign(x - v_n), B_m)``. Its packed form
(:func:`pack_multibase_model`) packs the M weight bases once as one +-1 filter bank of M*O filters, shifts the input by
each of the N activation thresholds and stacks the N shifted copies along the batch, so a single call of the kernel
(methods/common/packed_binary.py) returns all M*N exact integer convolutions; they are scaled by alpha_m beta_n and
summed in the input's dtype. Equal to :meth:`MultiBaseConv2d.bitwise_forward` up to the order of that sum (exactly
equal when the coefficients are dyadic); the coefficients are taken once, when the layer is packed (inference only).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from methods.common.multibase import MultiBaseConv2d, MultiBaseLinear
from methods.common.packed_binary import conv_geometry_packable, load, pack_weight, packed_conv2d


class _PackedMultiBaseMixin:
    @torch.no_grad()
    def _pack(self) -> None:
        bases, alpha = self.weight_decomposition()              # (M, O, ...) +-1, (M, O)
        m, o = alpha.shape
        words, tap_pop = pack_weight(bases.reshape(m * o, *bases.shape[2:]))
        self.register_buffer("packed_words", words, persistent=False)
        self.register_buffer("packed_tap_pop", tap_pop, persistent=False)
        beta = self.act_bases.coeffs.detach()
        self.register_buffer("packed_coeffs", beta.view(-1, 1, 1) * alpha.view(1, m, o), persistent=False)  # (N,M,O)
        self.register_buffer("packed_thresholds", self.act_bases.thresholds.detach().clone(), persistent=False)

    def _bitwise_sum(self, x: torch.Tensor, kernel, stride: int, padding: int) -> torch.Tensor:
        """(B, O, OH, OW): the M*N packed convolutions of ``x`` (B, C, H, W), scaled and summed, plus the bias."""
        n, m, o = self.packed_coeffs.shape
        shifted = torch.cat([x - t for t in self.packed_thresholds.to(x.dtype)])       # (N*B, C, H, W)
        y = packed_conv2d(shifted, self.packed_words, self.packed_tap_pop, kernel, stride, padding)
        y = y.to(x.dtype).view(n, x.shape[0], m, o, *y.shape[2:])
        out = torch.einsum("nbmohw,nmo->bohw", y, self.packed_coeffs.to(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return out


class PackedMultiBaseConv2d(_PackedMultiBaseMixin, MultiBaseConv2d):
    """A multi-base conv running its M*N binary convolutions through the XNOR-popcount kernel."""

    def forward(self, x):
        return self._bitwise_sum(x, self.kernel_size, self.stride[0], self.padding[0])


class PackedMultiBaseLinear(_PackedMultiBaseMixin, MultiBaseLinear):
    """A multi-base linear layer on the kernel (1x1 convolutions over one pixel)."""

    def forward(self, x):
        lead = x.shape[:-1]
        out = self._bitwise_sum(x.reshape(-1, x.shape[-1], 1, 1), (1, 1), 1, 0)
        return out.reshape(*lead, -1)


def multibase_packable(m: nn.Module) -> bool:
    """A multi-base layer the kernel serves (a conv: ``conv_geometry_packable``)."""
    if isinstance(m, MultiBaseLinear):
        return True
    return isinstance(m, MultiBaseConv2d) and conv_geometry_packable(m)


@torch.no_grad()
def pack_multibase_model(model: nn.Module) -> nn.Module:
    """Switch every packable multi-base layer of ``model`` to its packed form, in place; returns ``model`` (the
    layers keep their parameters and state_dict, so complexity counts and checkpoints are unchanged)."""
    load()
    for m in model.modules():
        if isinstance(m, _PackedMultiBaseMixin) or not multibase_packable(m):
            continue
        m.__class__ = PackedMultiBaseLinear if isinstance(m, MultiBaseLinear) else PackedMultiBaseConv2d
        m._pack()
    return model
