"""CIFAR-10 as JPEG q75 (``../shared/data/cifar10-jpeg``): decoded once into a cached uint8 tensor file.

The archive holds ``{train,test}/<class>/NNNN.jpg``; classes take torchvision's CIFAR-10 order. Images are
sorted by path, so the cache (and every run) sees one fixed order. The cache is written atomically under a
lock, so parallel jobs decode it once.
"""
from __future__ import annotations

import os
import tarfile

import torch
from filelock import FileLock
from torchvision.io import decode_jpeg

from data import DataNotFoundError, register_dataset
from data.tensor_loader import tensor_bundle

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def decode_archive(path: str):
    """{'train': (images, labels), 'test': (...)} from the tar.gz at ``path``."""
    members: dict[str, list[tuple[str, int, bytes]]] = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 3 or not parts[2].endswith(".jpg"):
                continue
            split, cls, _ = parts
            if split not in members or cls not in CLASSES:
                raise ValueError(f"{path}: unexpected member {m.name} (want train|test/<cifar10 class>/*.jpg)")
            members[split].append((m.name, CLASSES.index(cls), tar.extractfile(m).read()))
    out = {}
    for split, items in members.items():
        items.sort(key=lambda t: t[0])
        images = torch.stack([decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8)) for _, _, b in items])
        out[split] = (images, torch.tensor([label for _, label, _ in items], dtype=torch.long))
    return out


def load_cached(archive: str, cache_dir: str):
    if not os.path.exists(archive):
        raise DataNotFoundError(
            f"dataset 'cifar10_jpeg' not found: searched {os.path.abspath(archive)}. It ships in the project's "
            "shared data folder: set DATA_ROOT=../shared/data (data.archive is relative to data.root).")
    stat = os.stat(archive)
    os.makedirs(cache_dir, exist_ok=True)
    cache = os.path.join(cache_dir, f"cifar10_jpeg_{stat.st_size}.pt")
    with FileLock(cache + ".lock"):
        if not os.path.exists(cache):
            print(f"decoding {archive} once into {cache} ...", flush=True)
            blob = decode_archive(archive)
            tmp = cache + ".tmp"
            torch.save({k: {"images": v[0], "labels": v[1]} for k, v in blob.items()}, tmp)
            os.replace(tmp, cache)
    blob = torch.load(cache, map_location="cpu", weights_only=True)
    return (blob["train"]["images"], blob["train"]["labels"]), (blob["test"]["images"], blob["test"]["labels"])


@register_dataset("cifar10_jpeg")
def cifar10_jpeg(cfg, **kw):
    train, test = load_cached(os.path.join(cfg.root, cfg.archive), cfg.cache_dir)
    return tensor_bundle(cfg, train, test, **kw)
