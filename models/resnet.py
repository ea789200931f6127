"""ResNet-18/34: the CIFAR form (3x3 stem, no max-pool) for small images, torchvision's for ImageNet.

``image_size`` picks the form (``stem="auto"``): inputs of 64 px or less get the CIFAR stem, as in the
binary-network and pruning papers that report "ResNet-18 on CIFAR-10". Pass ``stem="imagenet"`` or
``stem="cifar"`` to force one.
"""
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from models import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNetB(nn.Module):
    """ResNet-18/34 with a 3x3 stride-1 stem and no max-pool (projection shortcuts)."""

    def __init__(self, blocks_per_stage, num_classes=10, in_channels=3, widths=(64, 128, 256, 512)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes, stages = widths[0], []
        for i, (n, w) in enumerate(zip(blocks_per_stage, widths)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, w, 2 if (i > 0 and j == 0) else 1))
                in_planes = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _pick_stem(stem: str, image_size: int) -> str:
    if stem not in ("auto", "cifar", "imagenet"):
        raise ValueError(f"model.stem must be auto, cifar or imagenet, got {stem!r}")
    return stem if stem != "auto" else ("cifar" if image_size <= 64 else "imagenet")


def _resnet(depth, blocks, num_classes, in_channels, image_size, stem):
    if _pick_stem(stem, image_size) == "cifar":
        return CifarResNetB(blocks, num_classes, in_channels)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


@register_model
def resnet18(num_classes=10, in_channels=3, image_size=32, stem="auto"):
    """ResNet-18: CIFAR form at <=64 px, torchvision's otherwise."""
    return _resnet(18, (2, 2, 2, 2), num_classes, in_channels, image_size, stem)


@register_model
def resnet34(num_classes=10, in_channels=3, image_size=32, stem="auto"):
    """ResNet-34: CIFAR form at <=64 px, torchvision's otherwise."""
    return _resnet(34, (3, 4, 6, 3), num_classes, in_channels, image_size, stem)
