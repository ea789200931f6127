import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import CONF, SHARED_DATA, has_shared
from data import DataNotFoundError, build_data
from data.tensor_loader import TensorLoader, random_crop_flip


def data_cfg(name, **overrides):
    cfg = OmegaConf.load(os.path.join(CONF, "data", f"{name}.yaml"))
    cfg.root = SHARED_DATA
    if "cache_dir" in cfg:
        cfg.cache_dir = os.path.join(os.path.dirname(CONF), ".cache")
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


@pytest.mark.skipif(not has_shared("MNIST/raw"), reason="../shared/data/MNIST not present")
@pytest.mark.parametrize("name,first_train_labels,mean", [("mnist", [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], 0.1307),
                                                         ("fashion_mnist", None, 0.2860)])
def test_idx_datasets_load_exactly(name, first_train_labels, mean):
    bundle = build_data(data_cfg(name), batch_size=100)
    assert (bundle.train_size, bundle.test_size, bundle.in_channels, bundle.image_size) == (60000, 10000, 1, 28)
    images = bundle.train.images
    assert images.dtype == torch.uint8 and images.shape == (60000, 1, 28, 28)
    assert abs(images.float().mean().item() / 255 - mean) < 5e-4
    if first_train_labels:
        assert bundle.train.labels[:10].tolist() == first_train_labels
        assert bundle.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def write_tiny_cifar(root, name):
    folder, files, key = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"),
                          "cifar100": ("cifar-100-python", ["train", "test"], b"fine_labels")}[name]
    os.makedirs(os.path.join(root, folder))
    rng = np.random.default_rng(0)
    for f in files:
        with open(os.path.join(root, folder, f), "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                         key: list(rng.integers(0, 10, 8))}, fh)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_format_on_tiny_files(tmp_path, name):
    write_tiny_cifar(tmp_path, name)
    bundle = build_data(data_cfg(name, root=str(tmp_path)), batch_size=4)
    trains = 40 if name == "cifar10" else 8
    assert (bundle.train_size, bundle.test_size, bundle.image_size) == (trains, 8, 32)
    x, y = next(iter(bundle.train))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long


@pytest.mark.parametrize("name,expect", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw"),
                                         ("cifar10_jpeg", "cifar10-jpeg-q75.tar.gz"), ("imagenet", "imagenet/train")])
def test_missing_data_names_the_path_and_the_fix(tmp_path, name, expect):
    with pytest.raises(DataNotFoundError, match="DATA_ROOT") as err:
        build_data(data_cfg(name, root=str(tmp_path)), batch_size=4)
    assert expect in str(err.value) and str(tmp_path) in str(err.value)


def test_cifar10_jpeg_decodes_a_tiny_archive(tmp_path):
    src = tmp_path / "src"
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("airplane", "truck"):
            os.makedirs(src / split / cls)
            for i in range(n):
                Image.new("RGB", (32, 32), (200 if cls == "truck" else 10, 0, 0)).save(src / split / cls / f"{i:04d}.jpg", quality=75)
    os.makedirs(tmp_path / "cifar10-jpeg")
    with tarfile.open(tmp_path / "cifar10-jpeg" / "cifar10-jpeg-q75.tar.gz", "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(src / split, arcname=split)
    cfg = data_cfg("cifar10_jpeg", root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    bundle = build_data(cfg, batch_size=2)
    assert (bundle.train_size, bundle.test_size) == (6, 4)
    assert sorted(bundle.train.labels.tolist()) == [0, 0, 0, 9, 9, 9]
    red = bundle.train.images[bundle.train.labels == 9][:, 0].float().mean()
    assert red > 150                                  # the truck images are the red ones
    assert len(os.listdir(tmp_path / "cache")) >= 1    # decoded once into the cache


@pytest.mark.skipif(not has_shared("cifar10-jpeg"), reason="../shared/data/cifar10-jpeg not present")
def test_cifar10_jpeg_real_archive_shapes_and_class_balance():
    bundle = build_data(data_cfg("cifar10_jpeg"), batch_size=256)
    assert (bundle.train_size, bundle.test_size) == (50000, 10000)
    assert torch.bincount(bundle.test.labels).tolist() == [1000] * 10


def test_imagenet_folder_on_tiny_images(tmp_path):
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            os.makedirs(tmp_path / "imagenet" / split / cls)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 100, 50, 0)).save(tmp_path / "imagenet" / split / cls / f"{i}.JPEG")
    cfg = data_cfg("imagenet", root=str(tmp_path), num_classes=2, image_size=24, resize=28, num_workers=0)
    bundle = build_data(cfg, batch_size=2)
    x, y = next(iter(bundle.test))
    assert x.shape == (2, 3, 24, 24) and bundle.train_size == 4 and bundle.num_classes == 2


def test_synthetic_is_learnable_and_deterministic():
    a = build_data(data_cfg("synthetic"), batch_size=32)
    b = build_data(data_cfg("synthetic"), batch_size=32)
    assert torch.equal(a.train.images, b.train.images) and a.train_size == 512


def test_epoch_order_depends_only_on_seed_and_epoch():
    imgs, labels = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 2, 2).contiguous(), torch.arange(20)
    make = lambda: TensorLoader(imgs, labels, 5, [0.0], [1 / 255], train=True, seed=3)  # noqa: E731
    first, second = make(), make()
    first.set_epoch(4)
    second.set_epoch(4)
    assert [y.tolist() for _, y in first] == [y.tolist() for _, y in second]
    second.set_epoch(5)
    assert [y.tolist() for _, y in first] != [y.tolist() for _, y in second]


def test_imagenet_epoch_order_depends_on_the_run_seed_too():
    """The ImageFolder loader's shuffle is reseeded with the run seed and the epoch (it used the epoch alone, so
    every seed of an ImageNet run saw the same batch order)."""
    from torch.utils.data import DataLoader
    from data.imagenet import EpochLoader

    def order(seed, epoch):
        loader = EpochLoader(DataLoader(list(range(32)), 8, shuffle=True, generator=torch.Generator()), seed)
        loader.set_epoch(epoch)
        return torch.cat(list(loader)).tolist()

    assert order(0, 2) == order(0, 2) and order(0, 2) != order(1, 2) and order(0, 2) != order(0, 3)


def test_ddp_shards_are_disjoint_and_cover_the_epoch():
    imgs, labels = torch.zeros(12, 1, 2, 2, dtype=torch.uint8), torch.arange(12)
    seen = []
    for rank in range(2):
        loader = TensorLoader(imgs, labels, 3, [0.0], [1.0], train=True, seed=0, rank=rank, world_size=2)
        seen += [v for _, y in loader for v in y.tolist()]
    assert sorted(seen) == list(range(12))


def test_crop_is_a_shifted_window_and_flip_mirrors():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = random_crop_flip(x, padding=1, flip=False, gen=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x[:1], (1, 1, 1, 1))
    windows = {tuple(padded[0, 0, i:i + 4, j:j + 4].flatten().tolist()) for i in range(3) for j in range(3)}
    assert all(tuple(o.flatten().tolist()) in windows for o in out[:, 0])
    assert len({tuple(o.flatten().tolist()) for o in out[:, 0]}) > 3       # several shifts drawn
    flipped = random_crop_flip(x, padding=0, flip=True, gen=torch.Generator().manual_seed(0))
    assert any(torch.equal(f, x[0].flip(2)) for f in flipped) and any(torch.equal(f, x[0]) for f in flipped)


def test_subsets_are_class_mixed_even_when_files_are_class_ordered():
    from data.tensor_loader import subset
    labels = torch.arange(10).repeat_interleave(100)               # stored class by class, like the JPEG archive
    images = torch.zeros(1000, 1, 2, 2, dtype=torch.uint8)
    _, picked = subset(images, labels, 200)
    counts = torch.bincount(picked, minlength=10)
    assert counts.min() >= 8 and counts.sum() == 200                  # every class present
    assert torch.equal(subset(images, labels, 200)[1], picked)       # the same subset every time
