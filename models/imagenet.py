"""ImageNet backbones by name from torchvision (and any timm model as ``timm:<name>``); never downloads."""
import timm
import torchvision

from models import MODELS, register_model

_TORCHVISION = ("resnet50", "resnet101", "alexnet", "mobilenet_v2", "densenet121", "googlenet")


def _torchvision_factory(arch: str):
    def build(num_classes=1000, in_channels=3, image_size=224, **kw):
        if in_channels != 3:
            raise ValueError(f"{arch} takes 3 input channels; data has {in_channels}")
        if arch == "googlenet":
            kw.setdefault("aux_logits", False)
            kw.setdefault("init_weights", True)
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kw)

    build.__name__ = arch
    build.__doc__ = f"torchvision {arch} (random init; local weights only)."
    return build


for _arch in _TORCHVISION:
    register_model(_torchvision_factory(_arch))


def _timm_factory(arch: str):
    def build(num_classes=1000, in_channels=3, image_size=224, **kw):
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw)

    return build


MODELS.register_prefix("timm:", _timm_factory)
