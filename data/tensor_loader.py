"""Loader for datasets held as one uint8 tensor (N, C, H, W) on the training device.

Each epoch draws a permutation from a generator seeded by (seed, epoch), so epoch ``e`` is the same
whether or not the run was resumed; each DDP rank takes a strided shard of it. Augmentation (random
crop with zero padding, horizontal flip) is batched tensor work on the device, also seeded per epoch.
On CUDA, batches are prepared a chunk of several at a time (about 64 MB of floats): a few kernel launches serve
many steps, and the random draws reach the device in one non-blocking copy per chunk. Every value is the same as
preparing batch by batch, as on the CPU (the draws are made in the same order).
"""
from __future__ import annotations

import math

import torch
from data import DataBundle

CHUNK_BYTES = 64 << 20   # on CUDA batches are prepared several at a time, about this many bytes of float images


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the host) moved to ``device``; to CUDA through pinned memory without blocking (a plain copy from
    pageable memory waits for the GPU's queue: a host sync per batch)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def crop_flip_draws(sizes: list[int], padding: int, flip: bool, gen: torch.Generator):
    """Host tensors (dy, dx, flip mask) for consecutive batches of ``sizes``, drawn batch by batch from ``gen``
    (dy, dx, mask of the first batch, then of the next, ...); None where that augmentation is off."""
    dy, dx, mask = [], [], []
    for b in sizes:
        if padding:
            dy.append(torch.randint(0, 2 * padding + 1, (b,), generator=gen))
            dx.append(torch.randint(0, 2 * padding + 1, (b,), generator=gen))
        if flip:
            mask.append(torch.rand(b, generator=gen) < 0.5)
    return tuple(torch.cat(t) if t else None for t in (dy, dx, mask))


def crop_flip(x: torch.Tensor, padding: int, dy, dx, mask) -> torch.Tensor:
    """Pad-and-crop (zero padding) at per-sample offsets ``dy``, ``dx`` and horizontal flip where ``mask``, batched on
    ``x``'s device; the draws are moved there without blocking."""
    b, c, h, w = x.shape
    if padding:
        dy, dx = to_device(dy, x.device), to_device(dx, x.device)
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if mask is not None:
        x = torch.where(to_device(mask, x.device)[:, None, None, None], x.flip(3), x)
    return x


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Batched pad-and-crop (zero padding) and horizontal flip of a float batch (B, C, H, W)."""
    return crop_flip(x, padding, *crop_flip_draws([x.shape[0]], padding, flip, gen))


class TensorLoader:
    """Iterates normalized float batches ``(x, y)`` from uint8 images on ``device``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std, *,
                 train: bool, device="cpu", crop_padding: int = 0, flip: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"TensorLoader wants uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size, self.train = batch_size, train
        self.crop_padding, self.flip = (crop_padding, flip) if train else (0, False)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        c = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.train:
            gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per_rank = n // self.world_size if self.train else math.ceil(n / self.world_size)
            order = order[self.rank::self.world_size][:per_rank]
        return order

    def __len__(self) -> int:
        n = len(self._indices())
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self._indices())

    def __iter__(self):
        order = self._indices()
        n = len(self)
        sizes = [min(self.batch_size, len(order) - i * self.batch_size) for i in range(n)]
        order = to_device(order[:sum(sizes)], self.device)
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch + 7919 * (self.rank + 1))
        batch_bytes = 4 * self.batch_size * self.images[0].numel()
        per_chunk = 1 if self.device.type == "cpu" else max(1, CHUNK_BYTES // batch_bytes)
        for first in range(0, n, per_chunk):
            chunk = sizes[first:first + per_chunk]
            idx = order[first * self.batch_size:first * self.batch_size + sum(chunk)]
            x = self.images.index_select(0, idx).float()
            if self.crop_padding or self.flip:
                x = crop_flip(x, self.crop_padding, *crop_flip_draws(chunk, self.crop_padding, self.flip, gen))
            yield from zip(((x - self.mean) / self.std).split(chunk), self.labels.index_select(0, idx).split(chunk))


def subset(images: torch.Tensor, labels: torch.Tensor, n):
    """A fixed class-mixed subset of ``n`` examples (``None`` keeps all).

    The indices are a seed-0 random draw, sorted, identical for every run and seed, so reduced-budget runs of
    different methods see the same images. (A plain "first n" would be a few classes only on files stored in
    class order, such as the JPEG CIFAR-10 archive.)
    """
    if n is None:
        return images, labels
    if n > len(labels):
        raise ValueError(f"subset of {n} asked, but the split has only {len(labels)} examples")
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return images[keep], labels[keep]


def tensor_bundle(cfg, train_xy, test_xy, *, batch_size, eval_batch_size, device, rank, world_size, seed):
    """A DataBundle of two TensorLoaders from (images, labels) pairs, honouring the config's subsets/augment."""
    (xtr, ytr), (xte, yte) = subset(*train_xy, cfg.get("train_subset")), subset(*test_xy, cfg.get("test_subset"))
    aug = cfg.get("augment") or {}
    common = dict(mean=list(cfg.mean), std=list(cfg.std), device=device, seed=seed, rank=rank, world_size=world_size)
    train = TensorLoader(xtr, ytr, batch_size, train=True, crop_padding=int(aug.get("crop_padding", 0)),
                         flip=bool(aug.get("flip", False)), **common)
    test = TensorLoader(xte, yte, eval_batch_size, train=False, **common)
    return DataBundle(train=train, test=test, num_classes=int(cfg.num_classes), in_channels=xtr.shape[1],
                      image_size=xtr.shape[-1], train_size=len(ytr), test_size=len(yte),
                      mean=tuple(cfg.mean), std=tuple(cfg.std))
