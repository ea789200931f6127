"""Dataset builders, registered by name (``data=<name>``); ``build_data`` returns loaders.

Small datasets (MNIST, Fashion-MNIST, CIFAR, JPEG CIFAR, synthetic) are held as one uint8 tensor on the
training device and served by ``TensorLoader`` (batched on-device augmentation, no per-sample PIL work).
ImageNet uses an ImageFolder with DataLoader workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from core.registry import Registry

DATASETS = Registry("dataset")
register_dataset = DATASETS.register
list_datasets = DATASETS.list


class DataNotFoundError(FileNotFoundError):
    """Raised at start when a dataset is not where the config says; the message says how to get it."""


@dataclass
class DataBundle:
    train: Iterable
    test: Iterable
    num_classes: int
    in_channels: int
    image_size: int
    train_size: int
    test_size: int
    mean: tuple
    std: tuple
    task: str = "classification"    # or "detection": batches are (images, list of target dicts)


from data import tensor_loader, vision, cifar_jpeg, imagenet, synthetic, voc  # noqa: E402,F401  (registration)


def build_data(data_cfg, batch_size: int, device="cpu", rank: int = 0, world_size: int = 1, seed: int = 0,
               eval_batch_size: int | None = None) -> DataBundle:
    """Build train/test loaders for ``data_cfg`` (a ``data`` config node); ``batch_size`` is per process."""
    return DATASETS.get(data_cfg.name)(data_cfg, batch_size=batch_size, device=device, rank=rank,
                                       world_size=world_size, seed=seed,
                                       eval_batch_size=eval_batch_size or batch_size)


__all__ = ["DATASETS", "register_dataset", "list_datasets", "build_data", "DataBundle", "DataNotFoundError"]
