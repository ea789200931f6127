"""ImageNet (ILSVRC-2012) as an ImageFolder root: ``<root>/<folder>/{train,val}/<wnid>/*.JPEG``.

Standard augmentation (RandomResizedCrop + flip for training; resize + center crop for evaluation) in
DataLoader workers; DDP ranks read disjoint shards through DistributedSampler.
"""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torchvision import datasets, transforms

from data import DataBundle, DataNotFoundError, register_dataset


class EpochLoader:
    """A DataLoader whose sampler follows ``set_epoch``: a DistributedSampler (seeded with the run seed) gets the
    epoch; a shuffling loader's generator is reseeded with the run ``seed`` and the epoch (data/tensor_loader.py's
    rule), so runs with different seeds see different orders."""

    def __init__(self, loader: DataLoader, seed: int = 0):
        self.loader = loader
        self.seed = int(seed)

    def set_epoch(self, epoch: int) -> None:
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        elif self.loader.generator is not None:
            self.loader.generator.manual_seed(self.seed * 100003 + epoch)

    def __len__(self):
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.loader.sampler)

    def __iter__(self):
        return iter(self.loader)


def _split(root: str, split: str, transform, n):
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise DataNotFoundError(
            f"dataset 'imagenet' not found: searched {os.path.abspath(path)}. Expected an ImageFolder layout "
            f"<data.root>/<data.folder>/{{train,val}}/<class>/*.JPEG (e.g. ILSVRC-2012 after the usual valprep). Set DATA_ROOT (or data.root=...) to the folder above it.")
    ds = datasets.ImageFolder(path, transform)
    return Subset(ds, range(n)) if n is not None else ds


@register_dataset("imagenet")
def imagenet(cfg, *, batch_size, eval_batch_size, device, rank, world_size, seed):
    root = os.path.join(cfg.root, cfg.folder)
    norm = transforms.Normalize(list(cfg.mean), list(cfg.std))
    size = int(cfg.image_size)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    test_tf = transforms.Compose([transforms.Resize(int(cfg.resize)), transforms.CenterCrop(size),
                                  transforms.ToTensor(), norm])
    train_ds = _split(root, "train", train_tf, cfg.get("train_subset"))
    test_ds = _split(root, "val", test_tf, cfg.get("test_subset"))
    workers = int(cfg.get("num_workers", 8))
    pin = torch.device(device).type == "cuda"
    if world_size > 1:
        train_sampler = DistributedSampler(train_ds, world_size, rank, shuffle=True, seed=seed, drop_last=True)
        test_sampler = DistributedSampler(test_ds, world_size, rank, shuffle=False)
        train = DataLoader(train_ds, batch_size, sampler=train_sampler, num_workers=workers, pin_memory=pin,
                           drop_last=True, persistent_workers=workers > 0)
    else:
        gen = torch.Generator().manual_seed(seed)
        test_sampler = None
        train = DataLoader(train_ds, batch_size, shuffle=True, generator=gen, num_workers=workers, pin_memory=pin,
                           drop_last=True, persistent_workers=workers > 0)
    test = DataLoader(test_ds, eval_batch_size, sampler=test_sampler, num_workers=workers, pin_memory=pin)
    classes = len(train_ds.dataset.classes if isinstance(train_ds, Subset) else train_ds.classes)
    if classes != int(cfg.num_classes):
        raise ValueError(f"imagenet at {root} has {classes} classes but data.num_classes={cfg.num_classes}")
    return DataBundle(train=EpochLoader(train, seed), test=EpochLoader(test), num_classes=classes, in_channels=3,
                      image_size=size, train_size=len(train_ds), test_size=len(test_ds),
                      mean=tuple(cfg.mean), std=tuple(cfg.std))
