"""LeNets as in Caffe's MNIST examples (used by DNS and INQ)."""
import torch.nn as nn

from models import register_model


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
def lenet5(num_classes=10, in_channels=1, image_size=28):
    return LeNet5(num_classes, in_channels, image_size)


@register_model
def lenet300_100(num_classes=10, in_channels=1, image_size=28):
    return LeNet300100(num_classes, in_channels, image_size)
