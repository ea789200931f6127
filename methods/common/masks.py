"""Element-wise weight masks for conv and linear layers (shared by weight-pruning and incremental quantization).

A *masked layer* is an ``nn.Conv1d/2d/3d`` or ``nn.Linear`` whose class is swapped in place for a subclass
that computes with ``weight * weight_mask`` (and ``bias * bias_mask``). Parameter names do not change
(``fc1.weight`` stays ``fc1.weight``), so dense checkpoints load into a masked model and the optimizer keeps
its parameter references. The masks are persistent buffers: they travel with every checkpoint, and
``core/complexity.py`` reads ``weight_mask`` to count sparsity.

Two gradient rules for the masked product (``module.mask_grad``):

- ``"masked"``: the ordinary derivative of ``W * T``: pruned entries get zero gradient (a frozen mask).
- ``"straight_through"``: the gradient with respect to the *masked* weight is applied to every entry,
  pruned ones included, so a pruned weight keeps evolving and can be spliced back (DNS, dns.md Algorithm 2).

A second, independent mechanism fixes chosen entries at their current value through optimizer steps
(momentum and weight decay included): :class:`FrozenEntries`, used by INQ for its quantized group.

A layer may also declare ``quant_bits`` (a buffer; 0 = floating point): its ``weight_bits`` attribute, which
the complexity counter reads, is ``quant_bits`` once every weight entry is marked quantized in ``quant_mask``
and 32 before.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MASKABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
MASK_GRAD_RULES = ("masked", "straight_through")


class _StraightThroughMask(torch.autograd.Function):
    """Forward ``w * m``; backward passes the incoming gradient to ``w`` unmasked (dL/d(w*m) for all entries)."""

    @staticmethod
    def forward(ctx, w, m):
        return w * m

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def apply_mask(w: torch.Tensor, m: torch.Tensor | None, rule: str) -> torch.Tensor:
    if m is None:
        return w
    if rule == "straight_through":
        return _StraightThroughMask.apply(w, m)
    return w * m


class MaskedLayer:
    """Mixin placed before the conv/linear class. Holds ``weight_mask``/``bias_mask`` and ``mask_grad``."""

    mask_grad: str = "masked"

    def masked_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias the layer computes with (``W * T``, ``b * T_b``)."""
        w = apply_mask(self.weight, getattr(self, "weight_mask", None), self.mask_grad)
        b = self.bias
        if b is not None:
            b = apply_mask(b, getattr(self, "bias_mask", None), self.mask_grad)
        return w, b

    def forward(self, x):
        w, b = self.masked_params()
        if isinstance(self, nn.Linear):
            return F.linear(x, w, b)
        return self._conv_forward(x, w, b)

    @property
    def weight_bits(self) -> int:
        bits = getattr(self, "quant_bits", None)
        qmask = getattr(self, "quant_mask", None)
        if bits is None or int(bits) == 0 or qmask is None or not bool(qmask.bool().all()):
            return 32
        return int(bits)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A dense checkpoint (no masks, no statistics) loads into a masked layer: the buffers it lacks keep
        # their current values. Buffers present in the checkpoint (a resumed or evaluated run) are loaded.
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set and prefix + name not in state_dict:
                state_dict[prefix + name] = buf.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask_grad={self.mask_grad}"


class MaskedConv1d(MaskedLayer, nn.Conv1d):
    pass


class MaskedConv2d(MaskedLayer, nn.Conv2d):
    pass


class MaskedConv3d(MaskedLayer, nn.Conv3d):
    pass


class MaskedLinear(MaskedLayer, nn.Linear):
    pass


_MASKED_CLASSES = {nn.Conv1d: MaskedConv1d, nn.Conv2d: MaskedConv2d, nn.Conv3d: MaskedConv3d, nn.Linear: MaskedLinear}


def _masked_class(cls: type) -> type:
    if issubclass(cls, MaskedLayer):
        return cls
    if cls in _MASKED_CLASSES:
        return _MASKED_CLASSES[cls]
    # a subclass of a maskable layer (e.g. a library's padded conv): build the masked variant once
    base = next(b for b in MASKABLE if issubclass(cls, b))
    if cls.forward is not base.forward:
        raise TypeError(f"cannot mask {cls.__name__}: it overrides forward(); only plain conv/linear layers "
                        f"(or subclasses keeping their forward) can be masked")
    new = type(f"Masked{cls.__name__}", (MaskedLayer, cls), {"__module__": __name__})
    globals()[new.__name__] = new
    _MASKED_CLASSES[cls] = new
    return new


def compressible_layers(model: nn.Module, include: list[str] | None = None,
                        exclude: list[str] | None = None) -> dict[str, nn.Module]:
    """Conv and linear layers by qualified name, in module order, optionally restricted.

    ``include``/``exclude`` are lists of names or fnmatch patterns (``"features.*"``); an include entry
    that matches nothing is an error naming the layers that exist.
    """
    import fnmatch

    layers = {n: m for n, m in model.named_modules() if isinstance(m, MASKABLE)}
    if include:
        for pat in include:
            if not any(fnmatch.fnmatch(n, pat) for n in layers):
                raise KeyError(f"layer '{pat}' matches no conv/linear layer; layers are: {', '.join(layers)}")
        layers = {n: m for n, m in layers.items() if any(fnmatch.fnmatch(n, p) for p in include)}
    if exclude:
        layers = {n: m for n, m in layers.items() if not any(fnmatch.fnmatch(n, p) for p in exclude)}
    return layers


def attach_masks(module: nn.Module, prune: bool = True, mask_grad: str = "masked") -> nn.Module:
    """Turn ``module`` (conv/linear) into a masked layer in place; masks start at one. Returns it."""
    if mask_grad not in MASK_GRAD_RULES:
        raise ValueError(f"mask_grad must be one of {MASK_GRAD_RULES}, got {mask_grad!r}")
    if not isinstance(module, MASKABLE):
        raise TypeError(f"only {', '.join(c.__name__ for c in MASKABLE)} can be masked, got {type(module).__name__}")
    module.__class__ = _masked_class(type(module))
    if prune and getattr(module, "weight_mask", None) is None:
        module.register_buffer("weight_mask", torch.ones_like(module.weight, requires_grad=False))
        if module.bias is not None:
            module.register_buffer("bias_mask", torch.ones_like(module.bias, requires_grad=False))
    module.mask_grad = mask_grad
    return module


def masked_layers(model: nn.Module) -> dict[str, MaskedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, MaskedLayer)}


@torch.no_grad()
def fold_masks(module: nn.Module) -> None:
    """Write ``W * T`` into the weights (and biases), so the stored tensors are exactly sparse."""
    if getattr(module, "weight_mask", None) is not None:
        module.weight.mul_(module.weight_mask)
    if module.bias is not None and getattr(module, "bias_mask", None) is not None:
        module.bias.mul_(module.bias_mask)


@torch.no_grad()
def layer_nonzeros(module: nn.Module) -> tuple[int, int]:
    """(nonzero, total) of the effective weight and bias of a conv/linear layer."""
    w = module.weight * module.weight_mask if getattr(module, "weight_mask", None) is not None else module.weight
    nz, total = int((w != 0).sum()), w.numel()
    if module.bias is not None:
        b = module.bias * module.bias_mask if getattr(module, "bias_mask", None) is not None else module.bias
        nz, total = nz + int((b != 0).sum()), total + b.numel()
    return nz, total


class FrozenEntries:
    """Keeps the entries of parameters where ``mask == 1`` bitwise unchanged through optimizer steps.

    ``zero_grads()`` (after backward) implements the masked update ``W <- W - lr * dL/dW * (1 - mask)``;
    ``snapshot()`` (before the step) and ``restore()`` (after it) undo what momentum and weight decay
    would still do to frozen entries. Call order per step: backward, ``zero_grads``, ``snapshot``,
    optimizer step, ``restore``.
    """

    def __init__(self):
        self._saved: dict[int, torch.Tensor] = {}

    @staticmethod
    @torch.no_grad()
    def zero_grads(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        for p, mask in pairs:
            if p.grad is not None:
                p.grad.mul_(1 - mask.to(p.grad.dtype))

    @torch.no_grad()
    def snapshot(self, pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        self._saved = {id(p): p.detach().clone() for p, _ in pairs}

    @torch.no_grad()
    def restore(self, pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        for p, mask in pairs:
            saved = self._saved.get(id(p))
            if saved is not None:
                p.copy_(torch.where(mask.bool(), saved, p))
        self._saved = {}
