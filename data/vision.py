"""MNIST, Fashion-MNIST (IDX files) and CIFAR-10/100 (python pickles) in torchvision's on-disk layouts.

Files are read directly (no per-sample objects); ``download: true`` asks torchvision to fetch them first.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch
import torchvision
from torchvision.datasets.mnist import read_image_file, read_label_file

from data import DataNotFoundError, register_dataset
from data.tensor_loader import tensor_bundle

_IDX = {"mnist": ("MNIST", torchvision.datasets.MNIST), "fashion_mnist": ("FashionMNIST", torchvision.datasets.FashionMNIST)}
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", torchvision.datasets.CIFAR10, [f"data_batch_{i}" for i in range(1, 6)],
                ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", torchvision.datasets.CIFAR100, ["train"], ["test"], b"fine_labels"),
}


class DataFileError(ValueError):
    """A dataset file exists but does not hold what its format promises (truncated, wrong size or kind)."""


def _missing(name: str, path: str, hint: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"dataset '{name}' not found: searched {os.path.abspath(path)}. {hint} "
        f"Set DATA_ROOT (or data.root=...) to the folder that holds it, or pass data.download=true when online.")


def load_idx(name: str, root: str, download: bool = False):
    """(train_images, train_labels), (test_images, test_labels) as uint8 (N, 1, 28, 28) / int64 tensors."""
    folder, cls = _IDX[name]
    raw = os.path.join(root, folder, "raw")
    files = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if download and not all(os.path.exists(os.path.join(raw, f)) for f in files):
        cls(root, train=True, download=True)
    if not all(os.path.exists(os.path.join(raw, f)) for f in files):
        raise _missing(name, raw, f"Expected the IDX files {', '.join(files)} (torchvision's {folder}/raw layout).")
    def split(img, lab):
        images, labels = os.path.join(raw, img), os.path.join(raw, lab)
        n = check_idx(images, IDX_IMAGES)
        if check_idx(labels, IDX_LABELS) != n:
            raise DataFileError(f"{labels} holds {check_idx(labels, IDX_LABELS)} labels but {images} holds {n} "
                                "images; restore both files of the split")
        return read_image_file(images).unsqueeze(1), read_label_file(labels).long()

    return split(files[0], files[1]), split(files[2], files[3])


IDX_IMAGES, IDX_LABELS = (2051, (28, 28)), (2049, ())   # magic number (uint8, dims), shape after the count


def check_idx(path: str, kind) -> int:
    """The item count of an IDX file, after checking its magic number, shape and length against ``kind``."""
    magic, shape = kind
    what = "images (N x 28 x 28)" if shape else "labels (N)"
    with open(path, "rb") as f:
        head = f.read(4 + 4 * (1 + len(shape)))
    size = os.path.getsize(path)
    fix = "restore it (compare with SHA256SUMS) or fetch it again with data.download=true"
    if len(head) < 4 + 4 * (1 + len(shape)) or int.from_bytes(head[:4], "big") != magic:
        raise DataFileError(f"{path} is not an IDX file of uint8 {what} (expected magic number {magic}); {fix}")
    dims = [int.from_bytes(head[i:i + 4], "big") for i in range(4, len(head), 4)]
    expected = len(head) + int(np.prod(dims))
    if tuple(dims[1:]) != shape or size != expected:
        raise DataFileError(f"{path} is damaged: header says {' x '.join(map(str, dims))} {what.split()[0]} "
                            f"({expected} bytes) but the file has {size} bytes and shape {tuple(dims[1:])} "
                            f"(expected {shape}); {fix}")
    return dims[0]


def load_cifar(name: str, root: str, download: bool = False):
    """CIFAR-10/100 python batches -> uint8 (N, 3, 32, 32) images and int64 labels."""
    folder, cls, train_files, test_files, label_key = _CIFAR[name]
    base = os.path.join(root, folder)
    if download and not os.path.isdir(base):
        cls(root, train=True, download=True)
    if not all(os.path.exists(os.path.join(base, f)) for f in train_files + test_files):
        raise _missing(name, base, f"Expected torchvision's {folder}/ with {', '.join(train_files + test_files)}.")

    def read(files):
        xs, ys = [], []
        for f in files:
            with open(os.path.join(base, f), "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(batch[label_key])
        return torch.from_numpy(np.concatenate(xs)), torch.tensor(ys, dtype=torch.long)

    return read(train_files), read(test_files)


def _register(name: str, loader):
    def build(cfg, **kw):
        train, test = loader(name, cfg.root, bool(cfg.get("download", False)))
        return tensor_bundle(cfg, train, test, **kw)

    build.__name__ = name
    register_dataset(build, name=name)


for _name in _IDX:
    _register(_name, load_idx)
for _name in _CIFAR:
    _register(_name, load_cifar)
