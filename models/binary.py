"""Backbones for binary training, as the binary-network papers build them (sd_bnn.md / ir2net.md, Recipe).

Every conv is made by a ``BinarySpec`` (models/binary_layers.py) with a role — ``first``, ``body``,
``downsample``, ``last`` — so one backbone serves plain BNN, XNOR, Bi-Real, IR-Net, SD-BNN and IR²Net, and
``spec.enabled=False`` gives the same topology in full precision. Full precision by default: first conv,
last FC and the 1x1 downsample convs.

- ``bireal_resnet20`` (and 32/44/56): CIFAR ResNet with a shortcut around **every** 3x3 conv
  (``out = act(BN(conv1(x)) + sc(x)); out = act(BN(conv2(out)) + out)``), option-A parameter-free
  downsample, FP 3x3 stem + BN + act, head GAP -> BatchNorm1d -> FC.
- ``bireal_resnet18`` at <= 64 px: the CIFAR ResNet-18 of both official codes — two-conv BasicBlock
  ``act(BN(conv1 x)); BN(conv2 .) + shortcut(x); act``, FP 1x1 conv + BN downsample, head avg-pool ->
  BatchNorm1d(512) -> FC. Above 64 px: Bi-Real ResNet-18, 16 single-conv blocks [4,4,4,4] each
  ``act(BN(conv x) + shortcut)``, downsample AvgPool(2) -> FP 1x1 conv -> BN, FP 7x7 stem + BN + act + max-pool,
  binary weights initialised uniform[0,1) * 0.001 as in the official code; ``stem_act=False`` drops the stem
  activation (Bi-Real's and SD-BNN's ImageNet code: conv -> BN -> max-pool).
- ``binary_vgg_small``: FP conv0 128 + BN + act, then binary 128-256-256-512-512 with max-pool after
  convs 1, 3, 5 (conv -> pool -> BN -> act), FC on the flattened 512 x (size/8)^2 map.

The activation is ``hardtanh`` on CIFAR-size inputs and ``prelu`` above 64 px (``act=`` overrides).
Hooks for methods: ``model.fusion`` (None, or a module fed the concatenation of the stem and every stage's
output pooled to the last stage's size — IR²Net's information recovery) and ``model.last_features``
(the last stage's output of the latest forward pass — IR²Net's attention).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import register_model
from models.binary_layers import BINARY_LAYERS, BinarySpec
from models.cifar_resnet import ZeroPadShortcut


def _spec(spec):
    if spec is None:
        return BinarySpec()
    if isinstance(spec, BinarySpec):
        return spec
    return BinarySpec.from_cfg(spec)


def _act(name: str, channels: int) -> nn.Module:
    if name == "hardtanh":
        return nn.Hardtanh()
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "relu":
        return nn.ReLU()
    if name == "identity":     # the original Bi-Real block: BN(conv x) + shortcut, no activation
        return nn.Identity()
    raise ValueError(f"model act={name!r} is not one of hardtanh, prelu, relu, identity")


def _pick_act(act: str, image_size: int) -> str:
    return act if act != "auto" else ("hardtanh" if image_size <= 64 else "prelu")


class BinaryBackbone(nn.Module):
    """Common parts: stage construction, the fusion hook, the pooled head."""

    arch_name = "?"

    def _init_hooks(self):
        self.fusion: nn.Module | None = None
        self.last_features: torch.Tensor | None = None
        self.head_bn: nn.Module | None = None

    def init_added(self, module: nn.Module) -> nn.Module:
        """Initialise a module a method adds after construction (SD-BNN's ASD FCs, IR²Net's fusion) by this
        backbone's own init rule, as the official codes' init loop (run after those modules exist) does."""
        return module

    def fusion_channels(self) -> int:
        """Channels of the concatenated [stem, stages...] map the fusion module receives."""
        return sum(self.feature_widths)

    @staticmethod
    def _make_stages(make_block, blocks, widths) -> list[nn.Sequential]:
        """Stages of ``blocks[i]`` blocks of width ``widths[i]``; the first block of stages 2+ has stride 2."""
        in_planes, stages = widths[0], []
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layer = []
            for j in range(n):
                layer.append(make_block(in_planes, w, 2 if (i > 0 and j == 0) else 1))
                in_planes = w
            stages.append(nn.Sequential(*layer))
        return stages

    def _fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        last = feats[-1]
        self.last_features = last
        if self.fusion is None:
            return last
        size = last.shape[-2:]
        pooled = [F.adaptive_avg_pool2d(f, size) for f in feats[:-1]] + [last]
        return self.fusion(torch.cat(pooled, dim=1))

    def _pooled_head(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self._fuse(feats), 1).flatten(1)
        if self.head_bn is not None:
            out = self.head_bn(out)
        return self.fc(out)


class _ResNetBackbone(BinaryBackbone):
    """stem -> [pre-stage pooling] -> stages -> head; the stem output is the first fusion feature."""

    def _setup_stem(self, spec, in_channels, widths, stem_kernel, stem_stride, act, stem_act=True):
        self.conv1 = spec.conv(in_channels, widths[0], stem_kernel, stem_stride, stem_kernel // 2, role="first")
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = _act(act if stem_act else "identity", widths[0])
        self.feature_widths = [widths[0], *widths]

    def _setup_head(self, spec, num_classes, widths, head_bn):
        self.head_bn = nn.BatchNorm1d(widths[-1]) if head_bn else None
        self.fc = spec.linear(widths[-1], num_classes, role="last")

    def _stages(self) -> list[nn.Module]:
        return [getattr(self, f"layer{i}") for i in range(1, 5) if hasattr(self, f"layer{i}")]

    def _pre_stages(self, x):
        return x

    def forward(self, x):
        f = self.act1(self.bn1(self.conv1(x)))     # stem feature for fusion (after act, before any max-pool)
        feats, h = [f], self._pre_stages(f)
        for layer in self._stages():
            h = layer(h)
            feats.append(h)
        return self._pooled_head(feats)


class _TwoConvBlock(nn.Module):
    """Two binary 3x3 convs.

    ``per_conv=True`` (IR-Net / SD-BNN / IR²Net CIFAR ResNet-20): a shortcut around every conv,
    ``act(BN(conv1 x) + sc(x)); act(BN(conv2 .) + .)``, option-A (zero-pad) or B (1x1 conv) downsample.
    ``per_conv=False`` (their CIFAR ResNet-18): ``act(BN(conv1 x)); act(BN(conv2 .) + sc(x))``, 1x1 conv downsample.
    """

    def __init__(self, spec, in_planes, planes, stride, act, per_conv=True, downsample="A"):
        super().__init__()
        self.per_conv = per_conv
        self.conv1 = spec.conv(in_planes, planes, 3, stride, 1, role="body")
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = _act(act, planes)
        self.conv2 = spec.conv(planes, planes, 3, 1, 1, role="body")
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = _act(act, planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            if downsample == "A":
                self.shortcut = ZeroPadShortcut(planes - in_planes)
            elif downsample == "B":
                self.shortcut = nn.Sequential(spec.conv(in_planes, planes, 1, stride, role="downsample"),
                                              nn.BatchNorm2d(planes))
            else:
                raise ValueError(f"model downsample={downsample!r} is not one of A, B")

    def forward(self, x):
        if self.per_conv:
            out = self.act1(self.bn1(self.conv1(x)) + self.shortcut(x))
            return self.act2(self.bn2(self.conv2(out)) + out)
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


class _CifarResNetBackbone(_ResNetBackbone):
    """The CIFAR ResNets' init rule, shared by the two-conv-block backbones below."""

    def init_added(self, module: nn.Module) -> nn.Module:
        """Official CIFAR codes: ``kaiming_normal_`` on every Conv2d / Linear weight (their ``_weights_init``)."""
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
        return module


class BiRealCifarResNet(_CifarResNetBackbone):
    def __init__(self, depth=20, num_classes=10, in_channels=3, spec=None, act="hardtanh", downsample="A",
                 widths=(16, 32, 64), head_bn=True):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        spec = _spec(spec)
        self._init_hooks()
        self.arch_name = f"bireal_resnet{depth}"
        self._setup_stem(spec, in_channels, widths, 3, 1, act)
        n = (depth - 2) // 6
        self.layer1, self.layer2, self.layer3 = self._make_stages(
            lambda i, o, s: _TwoConvBlock(spec, i, o, s, act, True, downsample), (n, n, n), widths)
        self._setup_head(spec, num_classes, widths, head_bn)
        self.init_added(self)


class BinaryCifarResNet18(_CifarResNetBackbone):
    def __init__(self, num_classes=10, in_channels=3, spec=None, act="hardtanh", blocks=(2, 2, 2, 2),
                 widths=(64, 128, 256, 512), head_bn=True):
        super().__init__()
        spec = _spec(spec)
        self._init_hooks()
        self.arch_name = "bireal_resnet18"
        self._setup_stem(spec, in_channels, widths, 3, 1, act)
        self.layer1, self.layer2, self.layer3, self.layer4 = self._make_stages(
            lambda i, o, s: _TwoConvBlock(spec, i, o, s, act, False, "B"), blocks, widths)
        self._setup_head(spec, num_classes, widths, head_bn)
        self.init_added(self)


class _BiRealBlock(nn.Module):
    """Bi-Real single-conv block: act(BN(conv x) + shortcut(x)); downsample AvgPool(2) -> 1x1 conv -> BN."""

    def __init__(self, spec, in_planes, planes, stride, act):
        super().__init__()
        self.conv = spec.conv(in_planes, planes, 3, stride, 1, role="body")
        self.bn = nn.BatchNorm2d(planes)
        self.act = _act(act, planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride), spec.conv(in_planes, planes, 1, role="downsample"),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return self.act(self.bn(self.conv(x)) + residual)


class BiRealImageNetResNet(_ResNetBackbone):
    """Bi-Real ImageNet ResNet. Stem conv -> BN -> act -> max-pool (IR²Net's code) or, ``stem_act=False``,
    conv -> BN -> max-pool (Bi-Real's and SD-BNN's code). Modules added by methods keep PyTorch's default init
    (the official ImageNet codes have no init loop); binary conv weights start uniform[0,1) * 0.001."""

    def __init__(self, layers=(4, 4, 4, 4), num_classes=1000, in_channels=3, spec=None, act="prelu",
                 head_bn=False, widths=(64, 128, 256, 512), name="bireal_resnet18", stem_act=True):
        super().__init__()
        spec = _spec(spec)
        self._init_hooks()
        self.arch_name = name
        self._setup_stem(spec, in_channels, widths, 7, 2, act, stem_act)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1, self.layer2, self.layer3, self.layer4 = self._make_stages(
            lambda i, o, s: _BiRealBlock(spec, i, o, s, act), layers, widths)
        self._setup_head(spec, num_classes, widths, head_bn)
        for m in self.modules():
            if isinstance(m, BINARY_LAYERS):
                with torch.no_grad():   # official code: torch.rand(...) * 0.001
                    m.weight.copy_(torch.rand_like(m.weight) * 0.001)

    def _pre_stages(self, x):
        return self.maxpool(x)


class BinaryVGGSmall(BinaryBackbone):
    def __init__(self, num_classes=10, in_channels=3, image_size=32, spec=None, act="hardtanh"):
        super().__init__()
        spec = _spec(spec)
        self._init_hooks()
        self.arch_name = "binary_vgg_small"
        widths = [128, 128, 256, 256, 512, 512]
        self.conv0 = spec.conv(in_channels, 128, 3, 1, 1, role="first")
        self.bn0 = nn.BatchNorm2d(128)
        self.act0 = _act(act, 128)
        convs, bns, acts = [], [], []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            convs.append(spec.conv(c_in, c_out, 3, 1, 1, role="body"))
            bns.append(nn.BatchNorm2d(c_out))
            acts.append(_act(act, c_out))
        self.convs, self.bns, self.acts = nn.ModuleList(convs), nn.ModuleList(bns), nn.ModuleList(acts)
        self.pool = nn.MaxPool2d(2, 2)
        self.feature_widths = [128, 512]
        side = image_size // 8
        self.fc = spec.linear(512 * side * side, num_classes, role="last")
        self.init_added(self)

    def init_added(self, module: nn.Module) -> nn.Module:
        """Official VGG-small codes: convs N(0, sqrt(2 / (k*k*out))), linears N(0, 0.01), zero biases."""
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                if m.bias is not None:
                    m.bias.data.zero_()
        return module

    def forward(self, x):
        f0 = self.act0(self.bn0(self.conv0(x)))
        out = f0
        for i, (conv, bn, act) in enumerate(zip(self.convs, self.bns, self.acts)):
            out = conv(out)
            if i % 2 == 0:          # convs 1, 3, 5 of the network: conv -> pool -> BN -> act
                out = self.pool(out)
            out = act(bn(out))
        return self.fc(self._fuse([f0, out]).flatten(1))


# ---- registry ---------------------------------------------------------------------------------------

def _cifar_resnet_factory(depth):
    def build(num_classes=10, in_channels=3, image_size=32, spec=None, act="auto", downsample="A", head_bn=True):
        model = BiRealCifarResNet(depth, num_classes, in_channels, spec, _pick_act(act, image_size), downsample,
                                  head_bn=head_bn)
        model.build_kwargs = {"act": act, "downsample": downsample, "head_bn": head_bn}
        return model

    build.__name__ = f"bireal_resnet{depth}"
    build.__doc__ = f"Binary CIFAR ResNet-{depth} with a shortcut per binary conv (IR-Net / SD-BNN / IR²Net code)."
    return build


for _depth in (20, 32, 44, 56):
    register_model(_cifar_resnet_factory(_depth))


@register_model
def bireal_resnet18(num_classes=10, in_channels=3, image_size=32, spec=None, act="auto", head_bn=None,
                    stem="auto", stem_act=True):
    """Binary ResNet-18: the official codes' CIFAR form at <= 64 px, Bi-Real ResNet-18 otherwise."""
    form = stem if stem != "auto" else ("cifar" if image_size <= 64 else "imagenet")
    picked = _pick_act(act, image_size)
    if form == "cifar":
        model = BinaryCifarResNet18(num_classes, in_channels, spec, picked,
                                    head_bn=True if head_bn is None else head_bn)
    elif form == "imagenet":
        model = BiRealImageNetResNet((4, 4, 4, 4), num_classes, in_channels, spec, picked,
                                     head_bn=bool(head_bn), name="bireal_resnet18", stem_act=stem_act)
    else:
        raise ValueError(f"model.stem must be auto, cifar or imagenet, got {stem!r}")
    model.build_kwargs = {"act": act, "head_bn": head_bn, "stem": form, "stem_act": stem_act}
    return model


@register_model
def bireal_resnet34(num_classes=1000, in_channels=3, image_size=224, spec=None, act="auto", head_bn=False,
                    stem_act=True):
    """Bi-Real ResNet-34 (single-conv blocks [6, 8, 12, 6])."""
    model = BiRealImageNetResNet((6, 8, 12, 6), num_classes, in_channels, spec, _pick_act(act, image_size),
                                 head_bn=bool(head_bn), name="bireal_resnet34", stem_act=stem_act)
    model.build_kwargs = {"act": act, "head_bn": head_bn, "stem_act": stem_act}
    return model


@register_model
def binary_vgg_small(num_classes=10, in_channels=3, image_size=32, spec=None, act="auto"):
    """Binary VGG-small (FP first conv and FC)."""
    model = BinaryVGGSmall(num_classes, in_channels, image_size, spec, _pick_act(act, image_size))
    model.build_kwargs = {"act": act}
    return model


def binary_counterpart_name(model: nn.Module) -> str:
    """The binary backbone that stands for a registered FP backbone (``model=resnet18`` -> ``bireal_resnet18``)."""
    from models.cifar_resnet import CifarResNet
    from models.resnet import CifarResNetB
    from models.vgg import VGGSmall
    import torchvision

    if isinstance(model, BinaryBackbone):
        return model.arch_name
    if isinstance(model, CifarResNet):
        depth = 6 * len(model.layer1) + 2
        if depth in (20, 32, 44, 56):
            return f"bireal_resnet{depth}"
    if isinstance(model, CifarResNetB) and [len(l) for l in (model.layer1, model.layer2, model.layer3,
                                                              model.layer4)] == [2, 2, 2, 2]:
        return "bireal_resnet18"
    if isinstance(model, torchvision.models.ResNet):
        layers = [len(l) for l in (model.layer1, model.layer2, model.layer3, model.layer4)]
        if layers == [2, 2, 2, 2]:
            return "bireal_resnet18"
        if layers == [3, 4, 6, 3]:
            return "bireal_resnet34"
    if isinstance(model, VGGSmall):
        return "binary_vgg_small"
    raise ValueError(
        f"binary methods have no binary counterpart for backbone {type(model).__name__}; use model= one of "
        "resnet20/32/44/56, resnet18, resnet34 (ImageNet size), vgg_small, or bireal_resnet20/18/34, binary_vgg_small")


def build_binary_counterpart(model: nn.Module, spec, *, num_classes: int, in_channels: int, image_size: int,
                             **arch) -> nn.Module:
    """A fresh binary backbone (built with ``spec``) standing for ``model``'s architecture."""
    from models import build_model
    name = binary_counterpart_name(model)
    # a binary backbone given as model= keeps its own constructor arguments (model.act, model.downsample, ...)
    kwargs = {**getattr(model, "build_kwargs", {}), **arch}
    if name.startswith("bireal_resnet18") and not isinstance(model, BinaryBackbone):
        import torchvision
        kwargs.setdefault("stem", "imagenet" if isinstance(model, torchvision.models.ResNet) else "cifar")
    return build_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                       spec=spec, **kwargs)
