"""LeNets as in Caffe's MNIST examples (used by DNS and INQ).

``init``: ``torch`` (PyTorch's default layer init; the rows before issue 15) or ``caffe`` (the Caffe example
prototxts that DNS and INQ start from: weight_filler xavier = U(-sqrt(3/fan_in), sqrt(3/fan_in)) with
fan_in = C_in k^2 (conv) or the input width (fc), bias_filler constant 0, and ``param { lr_mult: 1 }
param { lr_mult: 2 }``: biases learn at twice the learning rate; each layer carries ``bias_lr_mult = 2``, which
engine/optim.py turns into its own parameter group).
"""
import math

import torch
import torch.nn as nn

from models import register_model


INITS = ("torch", "caffe")


@torch.no_grad()
def caffe_init(model: nn.Module) -> nn.Module:
    """Caffe's xavier weight filler (FAN_IN), zero biases, bias lr_mult 2 on every conv/fc layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = math.sqrt(3.0 / fan_in)
            m.weight.uniform_(-bound, bound)
            if m.bias is not None:
                m.bias.zero_()
            m.bias_lr_mult = 2.0
    return model


def _init(model: nn.Module, init: str | None) -> nn.Module:
    init = init or "torch"
    if init not in INITS:
        raise ValueError(f"model.init={init!r} for a LeNet; choose one of {INITS}")
    return caffe_init(model) if init == "caffe" else model


class LeNet5(nn.Module):
    """Caffe layout: conv20-5, maxpool, conv50-5, maxpool, fc500, ReLU, fc10 (no ReLU after convs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


class LeNet300100(nn.Module):
    """fc300, ReLU, fc100, ReLU, fc10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.fc1(x.flatten(1)))
        return self.fc3(self.relu(self.fc2(x)))


@register_model
def lenet5(num_classes=10, in_channels=1, image_size=28, init=None):
    return _init(LeNet5(num_classes, in_channels, image_size), init)


@register_model
def lenet300_100(num_classes=10, in_channels=1, image_size=28, init=None):
    return _init(LeNet300100(num_classes, in_channels, image_size), init)
