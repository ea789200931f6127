"""Fast binary inference on CPU: bit-packed XNOR-popcount conv / linear for +-1 weights and +-1 activations.

The kernel (csrc/binary_popcount.cpp, built by ``make install`` through ``python -m
methods.common.popcount_build``) is called through ctypes (methods/common/native.py). :func:`pack_model` turns every frozen binary layer of
an exported model (``load_binary_export``) whose weights *and* activations are binary into its packed form in
place; layers it cannot serve (W1A32, groups > 1, dilation > 1, non-zero padding modes) stay on the float path.

Exactness (docs/binary_inference.md): the packed conv returns ``sum(sign(a) * w)`` as an exact integer in float32
(spatial zero padding handled by a correction term, see the C++ header), which is what the float +-1 conv returns
too, so a layer whose scale is applied after the conv (no scaling, XNOR ``mean_abs``, IR-Net ``pow2``) gives a
bit-identical output. Bi-Real's scale is folded into the float weight (``mean|w_c| * sign(w)``), so the float path
sums ``+-s`` in oneDNN's order while the packed path returns ``fl(n * s)`` (one rounding): they agree to a few
float32 ulps, not bitwise. The input bit is ``x >= 0`` as ``sign()`` defines it (-0.0 -> +1); a NaN input gives -1
here and NaN on the float path.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from methods.common.native import MISSING, available, load   # noqa: F401  (available, MISSING: this module's API)
from models.binary_layers import BinaryConv2d, BinaryLinear


def pack_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """+-1 weight [O, C, KH, KW] -> (words int64 [O, KH*KW*Cw] holding the uint64 bit rows, tap popcounts
    int32 [O, KH*KW]); +1 -> bit 1, channels padded with 0 bits to a multiple of 64."""
    if w.dim() == 2:
        w = w[:, :, None, None]
    bits = (w.detach().cpu() > 0).permute(0, 2, 3, 1).contiguous().numpy()       # [O, KH, KW, C]
    o, kh, kw, c = bits.shape
    cw = (c + 63) // 64
    padded = np.zeros((o, kh, kw, cw * 64), dtype=bool)
    padded[..., :c] = bits
    words = np.packbits(padded, axis=-1, bitorder="little").view("<u8").reshape(o, kh * kw * cw)
    tap_pop = bits.sum(axis=-1, dtype=np.int32).reshape(o, kh * kw)
    return torch.from_numpy(words.view(np.int64).copy()), torch.from_numpy(tap_pop.copy())


def pack_input(x: torch.Tensor) -> torch.Tensor:
    """float [N, C, H, W] -> int64 [N, H*W, Cw] of uint64 words, bit (x >= 0) per channel."""
    x = x.detach().float().contiguous()
    n, c, h, w = x.shape
    out = torch.empty((n, h * w, (c + 63) // 64), dtype=torch.int64)
    load().bp_pack_nchw(x.data_ptr(), n, c, h * w, out.data_ptr(), torch.get_num_threads())
    return out


def packed_conv2d(x: torch.Tensor, words: torch.Tensor, tap_pop: torch.Tensor, kernel: tuple[int, int],
                  stride: int = 1, padding: int = 0) -> torch.Tensor:
    """``F.conv2d(sign(x), w, stride=stride, padding=padding)`` for the packed +-1 weight ``w``: float32, exact."""
    lib = load()
    if x.dim() != 4:
        raise ValueError(f"packed_conv2d needs an NCHW input, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    kh, kw = kernel
    o = words.shape[0]
    if words.shape[1] != kh * kw * ((c + 63) // 64):
        raise ValueError(f"packed weight holds {words.shape[1]} words per filter, input has {c} channels "
                         f"and kernel {kh}x{kw}")
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    a = pack_input(x)
    out = torch.empty((n, o, oh, ow), dtype=torch.float32)
    lib.bp_conv2d(a.data_ptr(), n, c, h, w, words.data_ptr(), tap_pop.data_ptr(), o, kh, kw, stride, padding,
                  oh, ow, out.data_ptr(), torch.get_num_threads())
    return out


# ---- modules -------------------------------------------------------------------------------------------

def _sign_and_scale(m) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's +-1 weight and the per-output-channel scale applied after the conv (Bi-Real's included)."""
    if m.frozen:
        return m.weight, getattr(m, "frozen_scale", None)
    return m.export_weight()


class _PackedMixin:
    def _pack(self) -> None:
        w, scale = _sign_and_scale(self)
        words, tap_pop = pack_weight(w)
        self.register_buffer("packed_words", words, persistent=False)
        self.register_buffer("packed_tap_pop", tap_pop, persistent=False)
        self.packed_scale = None if scale is None else scale.detach().float().flatten()

    def _finish(self, out: torch.Tensor, channel_shape: tuple) -> torch.Tensor:
        if self.packed_scale is not None:     # as BinaryConv2d.forward: out * scale, then + bias
            out = out * self.packed_scale.view(channel_shape)
        if self.bias is not None:
            out = out + self.bias.view(channel_shape)
        return out

    def _pre_sign(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.act_pre is None else self.act_pre(x)


class PackedBinaryConv2d(_PackedMixin, BinaryConv2d):
    """A frozen W1A1 BinaryConv2d running the XNOR-popcount kernel (made by :func:`pack_model`)."""

    def forward(self, x):
        out = packed_conv2d(self._pre_sign(x), self.packed_words, self.packed_tap_pop, self.kernel_size,
                            self.stride[0], self.padding[0])
        return self._finish(out, (1, -1, 1, 1))


class PackedBinaryLinear(_PackedMixin, BinaryLinear):
    """A frozen W1A1 BinaryLinear running the XNOR-popcount kernel (a 1x1 conv over one pixel)."""

    def forward(self, x):
        lead = x.shape[:-1]
        flat = self._pre_sign(x).reshape(-1, x.shape[-1], 1, 1)
        out = packed_conv2d(flat, self.packed_words, self.packed_tap_pop, (1, 1)).reshape(*lead, -1)
        return self._finish(out, (-1,))


def conv_geometry_packable(m: nn.Conv2d) -> bool:
    """A conv geometry the kernel serves: groups 1, dilation 1, zero padding, equal strides and paddings."""
    return (m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and m.stride[0] == m.stride[1] and m.padding[0] == m.padding[1])


def packable(m: nn.Module) -> bool:
    """A binary layer the kernel serves: binary weights and activations, and (a conv) a packable geometry."""
    if isinstance(m, BinaryLinear):
        return m.binarize_weights and m.binarize_acts
    if not isinstance(m, BinaryConv2d):
        return False
    return m.binarize_weights and m.binarize_acts and conv_geometry_packable(m)


@torch.no_grad()
def pack_model(model: nn.Module) -> nn.Module:
    """Switch every packable binary layer of ``model`` to the packed kernel, in place; returns ``model``.

    The layers keep their class's parameters and state_dict (the class becomes the Packed subclass, the packed
    words are non-persistent buffers), so the model still exports, loads and counts complexity as before.
    Inference only: the packed words are taken once, from the current +-1 weights."""
    load()
    for m in model.modules():
        if isinstance(m, (PackedBinaryConv2d, PackedBinaryLinear)) or not packable(m):
            continue
        m.__class__ = PackedBinaryConv2d if isinstance(m, BinaryConv2d) else PackedBinaryLinear
        m._pack()
    return model
