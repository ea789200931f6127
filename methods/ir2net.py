"""IR²Net: Information Restriction and Information Recovery (Xue et al., arXiv 2210.02637; notes: shared/papers/ir2net.md).

The binary convs are unchanged from a plain BNN (ir2net.md "Binary convolution"): out = conv(sign(a), sign(w)), no
scaling, ApproxSign backward for activations, clipped STE (|w| <= 1) for weights.

**1. Information restriction** (training only; :func:`attention_map`, :func:`restriction_mask`, ``IR2Net.loss``):
    F = last-stage feature map of the forward pass on x
    A = L2-normalize(mean_c F^2)                     (the official code normalizes a (B, H, W) tensor along dim=1,
                                                      i.e. along the height axis per column; ``attention_norm:
                                                      height`` replicates it, ``flat`` normalizes the whole map)
    A_up = bilinear upsample of A to the input size (align_corners=True), detached
    M = [A_up > lambda * mean(A_up)] per image, lambda = 0.15
    x~ = x * M (broadcast over channels); second pass of the same network on x~
    loss = 1/2 [L(f(x)) + L(f(x~))]                  (L = the run's task loss; see "deviation" below)
Evaluation uses f(x) only.

**2. Information recovery** (:class:`Fusion1x1`, :class:`CIRec`, installed as the backbone's ``fusion`` hook):
the stem output and every stage output before the last are adaptive-avg-pooled to the last stage's size,
concatenated with the last feature map (ResNet-20: 16+16+32+64 = 128 ch; CIFAR ResNet-18 and ImageNet: 1024;
VGG-small: 128+512 = 640) and fused back to the last width by an FP module:
    - ``conv1x1``: 1x1 conv -> BN -> act (ImageNet variant A)
    - ``cirec`` (streamlined, GhostNet-style): primary 1x1 conv C -> m = ceil(n/s) -> BN -> act; cheap 3x3 conv
      m -> m(s-1) with ``groups = m`` (depthwise) or ``m / cheap_group_div`` groups -> BN -> act; concatenate and
      keep the first n channels. Code ratios: ResNet-20 s=4, CIFAR ResNet-18 s=20, VGG-small s=32;
      ImageNet variants B: s=2, C: s=4 with m/16 groups, D: s=20 (``VARIANTS``).
Activation: hardtanh on CIFAR, PReLU on ImageNet (the backbone's activation). The BatchNorm1d before the FC is
the backbone's ``head_bn`` (on in the CIFAR ResNets; the ImageNet configs set ``method.arch.head_bn: true``).

Both passes use the run's task loss (official code): on CIFAR cross-entropy; on ImageNet the KD loss to the
teacher's logits of the *original* images (``trainer.distill``), handed to the method through
``Method.task_loss`` (methods/base.py). ``restriction.second_loss: ce`` (variant) keeps plain cross-entropy on the
erased pass. The fusion module gets the backbone's init rule (``recovery.init: official``: ``kaiming_normal_`` in
the CIFAR ResNets, as the official init loop covers it; ``default``: PyTorch's default init).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods import register_method
from methods.base import RunContext
from methods.common.binary import BinaryMethod

LAMBDA = 0.15

# ImageNet fusion variants of the README / official code (ir2net.md "Streamlined fusion")
VARIANTS = {
    "A": {"fusion": "conv1x1"},
    "B": {"fusion": "cirec", "ratio": 2},
    "C": {"fusion": "cirec", "ratio": 4, "cheap_group_div": 16},
    "D": {"fusion": "cirec", "ratio": 20},
}


# ---- information restriction ------------------------------------------------------------------------

def attention_map(features: torch.Tensor, norm: str = "height") -> torch.Tensor:
    """A = L2-normalize(mean over channels of F^2), shape (B, H, W). ``height``: the official code's dim=1."""
    a = features.pow(2).mean(dim=1)
    if norm == "height":
        return F.normalize(a, dim=1)
    if norm == "flat":
        return F.normalize(a.flatten(1), dim=1).view_as(a)
    raise ValueError(f"method.restriction.attention_norm={norm!r} is not one of height, flat")


def restriction_mask(attention: torch.Tensor, size, lam: float = LAMBDA) -> torch.Tensor:
    """M = [A_up > lam * mean(A_up)] per image, A_up the detached bilinear (align_corners) upsampling; (B, 1, H, W)."""
    up = F.interpolate(attention.unsqueeze(1).detach(), size=tuple(size), mode="bilinear", align_corners=True)
    threshold = lam * up.mean(dim=(2, 3), keepdim=True)
    return (up > threshold).to(up.dtype)


def restrict(x: torch.Tensor, features: torch.Tensor, lam: float = LAMBDA, norm: str = "height"):
    """The erased input x * M and the mask M."""
    mask = restriction_mask(attention_map(features, norm), x.shape[-2:], lam)
    return x * mask, mask


# ---- information recovery ---------------------------------------------------------------------------

def _act(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.Hardtanh() if kind == "hardtanh" else nn.ReLU()


class Fusion1x1(nn.Module):
    """Variant A: 1x1 conv (C -> n) -> BN -> act."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "hardtanh"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = _act(act, out_channels)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class CIRec(nn.Module):
    """Streamlined fusion: primary 1x1 conv to m = ceil(n/s), cheap 3x3 conv to m(s-1), concat, first n channels."""

    def __init__(self, in_channels: int, out_channels: int, ratio: int, act: str = "hardtanh",
                 cheap_group_div: int | None = None):
        super().__init__()
        if ratio < 2:
            raise ValueError(f"method.recovery.ratio must be >= 2 for cirec, got {ratio}")
        self.out_channels = out_channels
        m = math.ceil(out_channels / ratio)
        groups = m if not cheap_group_div else max(1, m // cheap_group_div)
        self.primary = nn.Sequential(nn.Conv2d(in_channels, m, 1, bias=False), nn.BatchNorm2d(m), _act(act, m))
        self.cheap = nn.Sequential(nn.Conv2d(m, m * (ratio - 1), 3, 1, 1, groups=groups, bias=False),
                                   nn.BatchNorm2d(m * (ratio - 1)), _act(act, m * (ratio - 1)))

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)[:, :self.out_channels]


def build_fusion(in_channels: int, out_channels: int, *, fusion: str = "cirec", ratio: int = 4,
                 cheap_group_div: int | None = None, act: str = "hardtanh") -> nn.Module:
    if fusion == "conv1x1":
        return Fusion1x1(in_channels, out_channels, act)
    if fusion == "cirec":
        return CIRec(in_channels, out_channels, int(ratio), act, cheap_group_div)
    raise ValueError(f"method.recovery.fusion={fusion!r} is not one of conv1x1, cirec")


def _backbone_act(model: nn.Module) -> str:
    return "prelu" if any(isinstance(m, nn.PReLU) for m in model.modules()) else "hardtanh"


@register_method("ir2net")
class IR2Net(BinaryMethod):
    """Information restriction (loss) + information recovery (fusion module) — see the module docstring."""

    default_spec = {"act_estimator": "approx", "weight_estimator": "clipped"}
    extra_keys = {"restriction": {"enabled", "lam", "attention_norm", "second_loss"},
                  "recovery": {"enabled", "variant", "fusion", "ratio", "cheap_group_div", "init"}}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.restriction = dict(cfg.get("restriction") or {})
        self.recovery = dict(cfg.get("recovery") or {})
        variant = self.recovery.get("variant")
        if variant:
            if variant not in VARIANTS:
                raise ValueError(f"method.recovery.variant={variant!r} is not one of {', '.join(VARIANTS)}")
            self.recovery.update(VARIANTS[variant])
        self._kept_sum, self._kept_n = None, 0     # a device tensor: no host sync per step
        if self.recovery.get("init", "official") not in ("official", "default"):
            raise ValueError(f"method.recovery.init={self.recovery.get('init')!r} is not one of official, default")
        if self.restriction.get("second_loss", "task") not in ("task", "ce"):
            raise ValueError(f"method.restriction.second_loss={self.restriction.get('second_loss')!r} "
                             "is not one of task, ce")

    def decorate(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        if self.recovery.get("enabled", True):
            model.fusion = build_fusion(model.fusion_channels(), model.feature_widths[-1],
                                        fusion=self.recovery.get("fusion", "cirec"),
                                        ratio=int(self.recovery.get("ratio", 4)),
                                        cheap_group_div=self.recovery.get("cheap_group_div"),
                                        act=_backbone_act(model))
            if self.recovery.get("init", "official") == "official" and hasattr(model, "init_added"):
                model.init_added(model.fusion)   # the official init loop runs after the fusion module exists
        return model

    def loss(self, model, inputs, outputs, targets, task_loss):
        if not self.restriction.get("enabled", True) or not model.training:
            return task_loss
        raw = getattr(model, "module", model)   # second pass on the unwrapped module: DDP allows one forward per
        features = raw.last_features             # backward; the shared weights' gradients still add up once
        erased, mask = restrict(inputs, features, float(self.restriction.get("lam", LAMBDA)),
                                self.restriction.get("attention_norm", "height"))
        kept = mask.detach().mean()
        self._kept_sum = kept if self._kept_sum is None else self._kept_sum + kept
        self._kept_n += 1
        logits = raw(erased)
        if self.restriction.get("second_loss", "task") == "ce":
            second = F.cross_entropy(logits.float(), targets)
        else:
            second = self.task_loss(logits, targets)
        return 0.5 * (task_loss + second)

    def metrics(self, model: nn.Module) -> dict:
        out = super().metrics(model)
        if self._kept_n:
            out["restriction_kept_fraction"] = float(self._kept_sum) / self._kept_n
        fusion = getattr(model, "fusion", None)
        out["fusion"] = type(fusion).__name__ if fusion is not None else "none"
        last = getattr(model, "last_features", None)
        if fusion is not None and last is not None:   # MACs of the FP fusion module alone (fusion_macs of ir2net.yaml)
            from core.complexity import measure
            out["fusion_macs"] = measure(fusion, (model.fusion_channels(), *last.shape[-2:])).macs
        return out
