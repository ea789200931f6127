"""Local pretrained weights: metadata in one place, loaded with ``weights_only=True`` (never downloaded).

Weights live under ``$PRETRAINED_ROOT`` (default ``$DATA_ROOT/pretrained``).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PretrainedInfo:
    arch: str
    pattern: str            # glob under the pretrained root
    num_classes: int
    mean: tuple
    std: tuple
    reported_top1: float    # on the real test set, as published
    source: str
    licence: str


_IDELBAYEV = "akamaster/pytorch_resnet_cifar10 (Yerlan Idelbayev, 2018)"
_IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PRETRAINED = {
    f"resnet{d}": PretrainedInfo(f"resnet{d}", f"cifar10/resnet{d}-*.th", 10, *_IMAGENET_NORM, top1, _IDELBAYEV,
                                 "BSD-2-Clause")
    for d, top1 in ((20, 91.73), (32, 92.63), (44, 93.10), (56, 93.39))
}


def pretrained_root() -> str:
    return os.environ.get("PRETRAINED_ROOT") or os.path.join(os.environ.get("DATA_ROOT", "datasets"), "pretrained")


def pretrained_info(arch: str) -> PretrainedInfo:
    if arch not in PRETRAINED:
        raise KeyError(f"no pretrained weights are known for model '{arch}'; known: {', '.join(sorted(PRETRAINED))}."
                       " Set model.pretrained=false or give trainer.init_checkpoint=<path>.")
    return PRETRAINED[arch]


def pretrained_path(arch: str) -> str:
    info = pretrained_info(arch)
    pattern = os.path.join(pretrained_root(), info.pattern)
    hits = sorted(glob.glob(pattern))
    if not hits:
        raise FileNotFoundError(
            f"pretrained weights for '{arch}' not found: searched {pattern}. Point DATA_ROOT (or PRETRAINED_ROOT) "
            f"at a folder holding pretrained/{info.pattern} (source: {info.source}).")
    return hits[0]


def load_pretrained(model: torch.nn.Module, arch: str, num_classes: int) -> str:
    """Load the local weights for ``arch`` into ``model``; returns the file used."""
    info = pretrained_info(arch)
    if num_classes != info.num_classes:
        raise ValueError(f"pretrained {arch} has {info.num_classes} classes; data has {num_classes}")
    path = pretrained_path(arch)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob)
    state = {k.removeprefix("module.").replace("linear.", "fc."): v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return path
