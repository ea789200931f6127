"""Synthetic images with a learnable rule, for smoke tests: the label is the nearest of fixed class templates."""
import torch

from data import register_dataset
from data.tensor_loader import tensor_bundle


def make_split(n: int, num_classes: int, channels: int, size: int, seed: int):
    gen = torch.Generator().manual_seed(1234)   # templates shared by both splits
    templates = torch.rand(num_classes, channels, size, size, generator=gen)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    noise = torch.rand(n, channels, size, size, generator=gen)
    images = (0.6 * templates[labels] + 0.4 * noise) * 255
    return images.round().to(torch.uint8), labels


@register_dataset("synthetic")
def synthetic(cfg, **kw):
    shape = (int(cfg.num_classes), int(cfg.in_channels), int(cfg.image_size))
    train = make_split(int(cfg.train_size), *shape, seed=1)
    test = make_split(int(cfg.test_size), *shape, seed=2)
    return tensor_bundle(cfg, train, test, **kw)
