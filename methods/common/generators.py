"""Generator plumbing shared by the data-free methods (GDFQ, AutoReCon): the generator registry
(``method.generator`` names a factory ``(num_classes, latent_dim, image_size, channels) -> nn.Module`` whose forward
is ``G(z, y)``) and the class-conditional BatchNorm both papers' generators use."""
from __future__ import annotations

import torch.nn as nn

from core.registry import Registry

GENERATORS = Registry("generator")
register_generator = GENERATORS.register


def build_generator(name: str, **kwargs) -> nn.Module:
    return GENERATORS.get(name)(**kwargs)


class CategoricalConditionalBN(nn.BatchNorm2d):
    """BatchNorm2d without its own affine, scaled and shifted per class by embeddings (init 1 and 0)."""

    def __init__(self, num_classes: int, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps=eps, affine=False)
        self.weights = nn.Embedding(num_classes, num_features)
        self.biases = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.weights.weight)
        nn.init.zeros_(self.biases.weight)

    def forward(self, x, labels):
        return super().forward(x) * self.weights(labels)[:, :, None, None] + self.biases(labels)[:, :, None, None]
