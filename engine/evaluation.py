"""Top-1/top-5 accuracy and mean loss of a model over a loader (summed across DDP ranks).

The sums stay on the device and are read once at the end: no host sync per batch. A detection loader
(``loader.task == "detection"``, data/voc.py) is evaluated by engine/detection.py instead: mAP@0.5 as ``map50``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.distributed import all_reduce_sum


def primary_metric(ev: dict) -> str:
    """The evaluation's headline key: ``map50`` for a detector, ``top1`` otherwise."""
    return "map50" if "map50" in ev else "top1"


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device, limit_batches: int | None = None, autocast_dtype=None) -> dict:
    if getattr(loader, "task", "classification") == "detection":
        from engine.detection import evaluate_detection
        return evaluate_detection(model, loader, device, limit_batches, autocast_dtype)
    was_training = model.training
    model.eval()
    device = torch.device(device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)   # correct1, correct5, loss_sum
    n = 0
    for i, (x, y) in enumerate(loader):
        if limit_batches is not None and i >= limit_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        totals += torch.stack([hit[:, 0].sum().double(), hit.any(1).sum().double(),
                               F.cross_entropy(logits, y, reduction="sum").double()])
        n += len(y)
    model.train(was_training)
    c1, c5, loss, n = all_reduce_sum(torch.cat([totals, totals.new_full((1,), n)])).tolist()
    if n == 0:
        raise ValueError("evaluation saw no batches (empty test split or limit_eval_batches=0)")
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "samples": int(n)}
