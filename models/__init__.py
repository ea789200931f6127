"""Backbones and their registry. ``build_model(name, ...)``; ``list_models(pattern)``.

Every backbone takes ``num_classes`` and ``in_channels`` (and may take ``image_size``) so that
one factory serves MNIST, CIFAR and ImageNet shapes. Importing this package registers them all.
"""
from core.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register
list_models = MODELS.list

from models import cifar_resnet, lenet, resnet, vgg, imagenet, binary, nasb, nat_cells  # noqa: E402,F401  (registration)
from models import detection  # noqa: E402,F401  (registration: ssd300_vgg16, ssd_tiny)
from models.pretrained import load_pretrained, pretrained_info  # noqa: E402
from models.channels import apply_channel_config  # noqa: E402


def build_model(name: str, *, num_classes: int, in_channels: int = 3, image_size: int = 32,
                pretrained: bool = False, channel_config: dict | None = None, **kwargs):
    """Instantiate a registered backbone; ``pretrained`` loads local weights (never downloads).

    ``channel_config`` (``{"groups": {group: kept count}, "shortcuts": {...}}``) builds the physically
    pruned (compact) form of the backbone (models/channels.py; no method is imported)."""
    model = MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    if pretrained:
        load_pretrained(model, name, num_classes=num_classes)
    if channel_config is not None:
        model = apply_channel_config(model, dict(channel_config))
    return model


__all__ = ["MODELS", "register_model", "list_models", "build_model", "pretrained_info"]
