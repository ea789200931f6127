"""Training throughput of ResNet-20 on cifar10_jpeg: the suite's tensor loader + step vs a plain reference loop
(torchvision DataLoader with per-sample PIL transforms + a standard step), in one process, same model and batch.

    make bench                      # or: python scripts/bench_loader.py --steps 30 --batch 128
On CUDA it also reports the share of step time spent waiting for data (target: under 5 %).
"""
from __future__ import annotations

import argparse
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


def timed_loop(model, batches, steps, device, label=""):
    """(images/s, share of time waiting for data) over ``steps`` timed steps; a progress line every 10 steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    it = iter(batches)
    wait, t_begin = 0.0, time.perf_counter()
    for s in range(steps + 3):                       # 3 warm-up steps, untimed
        if s == 3:
            start, wait, images = time.perf_counter(), 0.0, 0
        if s > 3 and (s - 3) % 10 == 0:
            print(f"  {label}: step {s - 3}/{steps} ({time.perf_counter() - t_begin:.1f}s)", flush=True)
        t = time.perf_counter()
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wait += time.perf_counter() - t
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s >= 3:
            images += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    return images / total, wait / total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"bench: device {device} ({torch.get_num_threads()} threads), ResNet-20, batch {args.batch}, "
          f"{args.steps} timed steps per loop; loading cifar10_jpeg ...", flush=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = OmegaConf.load(os.path.join(root, "conf", "data", "cifar10_jpeg.yaml"))
    cfg.root = os.environ.get("DATA_ROOT", os.path.join(root, "..", "shared", "data"))
    cfg.cache_dir = os.path.join(root, ".cache")
    bundle = build_data(cfg, batch_size=args.batch, device=device)
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).to(device)
    print("suite loop (on-device uint8 tensor + batched aug) ...", flush=True)
    ours, ours_wait = timed_loop(model, bundle.train, args.steps, device, "suite")
    ref_ds = PILDataset(bundle.train.images.cpu(), bundle.train.labels.cpu(), list(cfg.mean), list(cfg.std))
    ref = DataLoader(ref_ds, args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                     pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).to(device)
    print(f"reference loop (DataLoader, {args.workers} workers, per-sample PIL) ...", flush=True)
    theirs, theirs_wait = timed_loop(model, ref, args.steps, device, "reference")
    print(f"{'loop':<44} {'images/s':>10} {'data wait':>10}")
    print(f"{'suite: on-device uint8 tensor + batched aug':<44} {ours:>10.1f} {100 * ours_wait:>9.1f}%")
    print(f"{'reference: DataLoader + per-sample PIL':<44} {theirs:>10.1f} {100 * theirs_wait:>9.1f}%")
    print(f"speed-up {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
