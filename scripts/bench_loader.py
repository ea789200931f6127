"""Training throughput of ResNet-20 on cifar10_jpeg: the suite's tensor loader + step vs a plain reference loop
(torchvision DataLoader with per-sample PIL transforms + a standard step), in one process, same model and batch.

    make bench                      # or: python scripts/bench_loader.py --steps 30 --batch 128
Each loop is also timed on one batch held fixed: the difference is the share of step time spent waiting for data.
On CUDA the step is the trainer's (bf16 autocast, channels_last), the suite loop runs under CUDA's sync detector in
error mode (a host sync in a step fails the bench), and a data wait of 5 % or more fails it (exit 1).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import build_data  # noqa: E402
from models import build_model  # noqa: E402

MAX_WAIT = 0.05   # on CUDA: the suite loop's data wait must stay under this share of step time


class PILDataset(Dataset):
    """The same uint8 images served the classic way: one PIL image per sample through torchvision transforms."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels = images.permute(0, 2, 3, 1).numpy(), labels
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        return self.tf(Image.fromarray(self.images[i])), int(self.labels[i])


def make_step(model, device):
    """One training step as the trainer runs it on ``device`` (bf16 autocast and channels_last on CUDA); no host sync."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cuda = device.type == "cuda"

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


@contextlib.contextmanager
def no_host_sync(device, check: bool):
    """CUDA's sync detector in error mode inside the block (when ``check``): a host sync raises."""
    on = check and device.type == "cuda"
    if on:
        torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        if on:
            torch.cuda.set_sync_debug_mode("default")


def seconds(step, batches, steps, device, check_syncs=False) -> float:
    """Wall time of ``steps`` steps drawing from the iterator ``batches``, the device idle at start and end."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with no_host_sync(device, check_syncs):
        for _ in range(steps):
            step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(name, batches, args, device, check_syncs=False):
    """(images/s, share of step time waiting for data) of ``batches`` feeding a fresh ResNet-20: rounds of 10 steps
    drawing from the loader alternate with rounds on one batch held fixed (so load changes hit both alike)."""
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step = make_step(model, device)
    loader = (batch for _ in itertools.count() for batch in batches)    # epoch after epoch
    fixed = itertools.repeat(next(loader))
    seconds(step, loader, 3, device)                                    # warm-up, untimed
    seconds(step, fixed, 3, device)
    full = compute = 0.0
    for done in range(0, args.steps, 10):
        n = min(10, args.steps - done)
        full += seconds(step, loader, n, device, check_syncs)
        compute += seconds(step, fixed, n, device, check_syncs)
        print(f"  {name}: step {done + n}/{args.steps} ({full + compute:.1f}s)", flush=True)
    return args.steps * args.batch / full, max(0.0, 1.0 - compute / full)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="timed steps per loop (default: 30 on CPU, 200 on CUDA)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.steps = args.steps or (200 if device.type == "cuda" else 30)
    print(f"bench: device {device} ({torch.get_num_threads()} threads), ResNet-20, batch {args.batch}, "
          f"{args.steps} timed steps per loop; loading cifar10_jpeg ...", flush=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = OmegaConf.load(os.path.join(root, "conf", "data", "cifar10_jpeg.yaml"))
    cfg.root = os.environ.get("DATA_ROOT", os.path.join(root, "..", "shared", "data"))
    cfg.cache_dir = os.path.join(root, ".cache")
    bundle = build_data(cfg, batch_size=args.batch, device=device)
    print("suite loop (on-device uint8 tensor + batched aug) ...", flush=True)
    ours, ours_wait = measure("suite", bundle.train, args, device, check_syncs=True)
    ref_ds = PILDataset(bundle.train.images.cpu(), bundle.train.labels.cpu(), list(cfg.mean), list(cfg.std))
    ref = DataLoader(ref_ds, args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                     pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    print(f"reference loop (DataLoader, {args.workers} workers, per-sample PIL) ...", flush=True)
    theirs, theirs_wait = measure("reference", ref, args, device)
    print(f"{'loop':<44} {'images/s':>10} {'data wait':>10}")
    print(f"{'suite: on-device uint8 tensor + batched aug':<44} {ours:>10.1f} {100 * ours_wait:>9.1f}%")
    print(f"{'reference: DataLoader + per-sample PIL':<44} {theirs:>10.1f} {100 * theirs_wait:>9.1f}%")
    print(f"speed-up {ours / theirs:.2f}x")
    if device.type == "cuda":
        print("suite loop: no host sync in any timed step (CUDA sync detector in error mode)")
        if ours_wait >= MAX_WAIT:
            sys.exit(f"error: the suite loop waits for data {100 * ours_wait:.1f}% of step time on CUDA "
                     f"(target under {100 * MAX_WAIT:.0f}%)")


if __name__ == "__main__":
    main()
