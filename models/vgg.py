"""VGG variants for CIFAR: VGG-small (binary-net papers) and VGG-16/19 with BN (pruning papers)."""
import torch.nn as nn
import torchvision

from models import register_model

VGG_CFGS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    """Conv3x3(+bias)-BN-ReLU stacks, max-pools, global pooling of the 1x1 map, one Linear(512, classes).

    ``channels`` may replace the per-conv widths (pruned configs) while keeping the pooling layout.
    """

    def __init__(self, depth: int, num_classes=10, in_channels=3, channels=None):
        super().__init__()
        cfg = list(VGG_CFGS[depth])
        if channels is not None:
            widths = iter(channels)
            cfg = [c if c == "M" else next(widths) for c in cfg]
        layers, c_in = [], in_channels
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class VGGSmall(nn.Module):
    """VGG-small (LQ-Nets / XNOR-Net CIFAR): 128C3-128C3-MP-256C3-256C3-MP-512C3-512C3-MP-FC."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32):
        super().__init__()
        widths = [128, 128, 256, 256, 512, 512]
        layers, c_in = [], in_channels
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(c_in, w, 3, padding=1, bias=False))
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c_in = w
        self.features = nn.Sequential(*layers)
        side = image_size // 8
        self.fc = nn.Linear(512 * side * side, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


@register_model
def vgg_small(num_classes=10, in_channels=3, image_size=32):
    return VGGSmall(num_classes, in_channels, image_size)


def _vgg(depth, num_classes, in_channels, image_size, channels):
    if image_size <= 64:
        return CifarVGG(depth, num_classes, in_channels, channels)
    return getattr(torchvision.models, f"vgg{depth}")(weights=None, num_classes=num_classes)


@register_model
def vgg16(num_classes=10, in_channels=3, image_size=32, channels=None):
    """CIFAR VGG-16 with BN at <=64 px; torchvision's ImageNet VGG-16 otherwise."""
    return _vgg(16, num_classes, in_channels, image_size, channels)


@register_model
def vgg19(num_classes=10, in_channels=3, image_size=32, channels=None):
    """CIFAR VGG-19 with BN at <=64 px; torchvision's ImageNet VGG-19 otherwise."""
    return _vgg(19, num_classes, in_channels, image_size, channels)
