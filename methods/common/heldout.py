"""A held-out split of the training data, for methods that score candidates during training (ACP's fitness).

The held-out images are a fixed seed-0 draw from the training loader's images (the same for every run, seed and
arm, like ``data.tensor_loader.subset``); the rest trains. Scoring on it keeps the test set out of every choice a
method makes (the official ACP code scores on the test set: ``method.search_split=test``)."""
from __future__ import annotations

import torch

from data.tensor_loader import TensorLoader


def heldout_split(loader, n: int, batch_size: int | None = None, eval_batch_size: int = 500,
                  mix_seed: int | None = None):
    """``(fit_loader, heldout_loader)`` from a ``TensorLoader`` of training data: ``n`` fixed images held out
    (no augmentation) and the others served like ``loader`` (same augmentation, seed and batch size unless
    ``batch_size`` is given). The held-out images come in index order, or with ``mix_seed`` in one fixed random
    order drawn from it, so every batch mixes classes. Scoring with BN batch statistics needs the latter (NAT's
    shared-weight accuracy): on a class-sorted training subset index-ordered batches hold one class each, which
    batch-statistics BN normalises away (NAT's super-net then scores every cell near chance)."""
    if not isinstance(loader, TensorLoader):
        raise ValueError(f"a held-out split needs a tensor-backed training loader (small datasets); got "
                         f"{type(loader).__name__}. Use the test split instead (e.g. method.search_split=test).")
    total = len(loader.labels)
    if not 0 < n < total:
        raise ValueError(f"held-out size {n} must lie in (0, {total}) (the training split has {total} images)")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    held, rest = order[:n].sort().values, order[n:].sort().values
    if mix_seed is not None:
        held = held[torch.randperm(n, generator=torch.Generator().manual_seed(int(mix_seed)))]
    held, rest = held.to(loader.images.device), rest.to(loader.images.device)
    c = loader.images.shape[1]
    mean = (loader.mean.view(c) / 255).tolist()
    std = (loader.std.view(c) / 255).tolist()
    common = dict(mean=mean, std=std, device=loader.device, seed=loader.seed, rank=loader.rank,
                  world_size=loader.world_size)
    fit = TensorLoader(loader.images[rest], loader.labels[rest], batch_size or loader.batch_size, train=True,
                       crop_padding=loader.crop_padding, flip=loader.flip, **common)
    heldout = TensorLoader(loader.images[held], loader.labels[held], eval_batch_size, train=False, **common)
    return fit, heldout


__all__ = ["heldout_split"]
