"""Detectors: torchvision's SSD300 with a VGG-16 backbone, and a tiny SSD for CPU smoke runs.

Both are ``torchvision.models.detection.SSD`` modules: in training ``model(images, targets)`` returns the loss dict
(``bbox_regression``, ``classification``: SSD's smooth-L1 localisation and hard-negative-mined cross-entropy); in
evaluation ``model(images)`` returns per image ``{"boxes", "scores", "labels"}``. Images go in as floats in [0, 1];
the model normalises them (``image_mean``/``image_std``) and resizes them to its fixed size.

``ssd300_vgg16`` is built with ``weights=None, weights_backbone=None`` (nothing is downloaded). ``backbone_weights``
loads the 13 convolutions of a local VGG-16 state dict (torchvision's ``vgg16`` keys or any dict whose 4-d weights
are VGG-16's convs in order) into the backbone, and then freezes the first ``5 - trainable_backbone_layers`` VGG
stages as torchvision does for pretrained backbones (SSD's conv1 is frozen with the default 4).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from torchvision.models.detection import ssd300_vgg16 as tv_ssd300_vgg16
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead

from models import register_model

VGG16_CONVS = 13


def _conv_pairs(state: dict) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """(name, weight, bias) of the 4-d weights of a state dict, in the dict's order."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    pairs = []
    for key, value in state.items():
        if key.endswith("weight") and torch.is_tensor(value) and value.dim() == 4:
            pairs.append((key, value, state.get(key[:-len("weight")] + "bias")))
    return pairs


def load_vgg16_backbone(model: SSD, path: str) -> None:
    """Copy the first 13 convolutions of the VGG-16 state dict at ``path`` into the SSD backbone's convs 1_1..5_3."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    source = _conv_pairs(state)[:VGG16_CONVS]
    targets = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)][:VGG16_CONVS]
    if len(source) < VGG16_CONVS:
        raise ValueError(f"model.backbone_weights={path}: holds {len(source)} conv weights, VGG-16 has "
                         f"{VGG16_CONVS}; pass a VGG-16 state dict (torchvision.models.vgg16().state_dict())")
    with torch.no_grad():
        for (key, weight, bias), conv in zip(source, targets):
            if weight.shape != conv.weight.shape:
                raise ValueError(f"model.backbone_weights={path}: {key} has shape {tuple(weight.shape)}, the SSD "
                                 f"backbone's conv needs {tuple(conv.weight.shape)}; pass a VGG-16 state dict")
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)


def freeze_vgg_stages(model: SSD, trainable: int) -> None:
    """Freeze the VGG stages before the last ``trainable`` of 5 (torchvision's ``trainable_backbone_layers``)."""
    if not 1 <= trainable <= 5:
        raise ValueError(f"model.trainable_backbone_layers={trainable}: expected 1..5")
    features = model.backbone.features
    stage_starts = [0] + [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)] + [len(features)]
    for module in list(features)[:stage_starts[5 - trainable]]:
        module.requires_grad_(False)


@register_model
def ssd300_vgg16(num_classes=21, in_channels=3, image_size=300, backbone_weights=None, trainable_backbone_layers=4,
                 score_thresh=0.01, nms_thresh=0.45, detections_per_img=200, topk_candidates=400):
    """SSD300 (Liu et al. 2016) as torchvision builds it: VGG-16 up to conv5_3, dilated fc6/fc7 convs, 4 extra
    blocks, 6 feature maps (38, 19, 10, 5, 3, 1) with 8732 default boxes."""
    if in_channels != 3:     # any image_size: the model resizes its inputs to 300 x 300 itself (data.image_size=300)
        raise ValueError(f"model=ssd300_vgg16 takes RGB images, the data gives {in_channels} channels")
    model = tv_ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes, score_thresh=score_thresh,
                            nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                            topk_candidates=topk_candidates)
    if backbone_weights:
        load_vgg16_backbone(model, backbone_weights)
        freeze_vgg_stages(model, int(trainable_backbone_layers))
    return model


class TinyBackbone(nn.Module):
    """Three levels of 3x3 conv-BN-ReLU blocks; feature map ``i`` is the output of ``levels[i]``, at strides 8, 16
    and 32. Level 0: 16 (stride 2), 32 (stride 2), 32, 64 (stride 2), 64 channels; levels 1 and 2: 64 (stride 2),
    64. Receptive fields of the three outputs: 39, 87 and 183 pixels (before the 3x3 head convs)."""

    LEVELS = (((16, 2), (32, 2), (32, 1), (64, 2), (64, 1)), ((64, 2), (64, 1)), ((64, 2), (64, 1)))

    def __init__(self, in_channels: int = 3):
        super().__init__()

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.ReLU(True))

        levels, c_in = [], in_channels
        for spec in self.LEVELS:
            blocks = []
            for c_out, stride in spec:
                blocks.append(block(c_in, c_out, stride))
                c_in = c_out
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.ModuleList(levels)
        self.out_channels = [spec[-1][0] for spec in self.LEVELS]

    def forward(self, x):
        features = OrderedDict()
        for i, level in enumerate(self.levels):
            x = level(x)
            features[str(i)] = x
        return features


@register_model
def ssd_tiny(num_classes=21, in_channels=3, image_size=96, anchor_scales=(0.08, 0.18, 0.4, 0.9), score_thresh=0.01,
             nms_thresh=0.45, detections_per_img=100, topk_candidates=200):
    """A small SSD (0.30 M parameters at 4 classes) on the same SSD head, losses and post-processing as
    ssd300_vgg16, for CPU runs of the detection path; any ``image_size`` divisible by 32. Default boxes as in SSD:
    level ``k`` has squares of side ``anchor_scales[k]`` and ``sqrt(anchor_scales[k] * anchor_scales[k+1])``
    (fractions of the image side) and boxes of aspect ratio 2, 1/2, 3 and 1/3 at ``anchor_scales[k]``: 6 per
    location."""
    if image_size % 32:
        raise ValueError(f"model=ssd_tiny needs data.image_size divisible by 32, got {image_size}")
    backbone = TinyBackbone(in_channels)
    if len(anchor_scales) != len(backbone.out_channels) + 1:
        raise ValueError(f"model.anchor_scales: ssd_tiny has {len(backbone.out_channels)} feature maps, so it needs "
                         f"{len(backbone.out_channels) + 1} scales, got {list(anchor_scales)}")
    anchors = DefaultBoxGenerator([[2, 3]] * len(backbone.out_channels), scales=[float(s) for s in anchor_scales])
    head = SSDHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes)
    return SSD(backbone, anchors, (image_size, image_size), num_classes, image_mean=[0.5] * in_channels,
               image_std=[0.25] * in_channels, head=head, score_thresh=score_thresh, nms_thresh=nms_thresh,
               detections_per_img=detections_per_img, topk_candidates=topk_candidates)
