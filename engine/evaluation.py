"""Top-1/top-5 accuracy and mean loss of a model over a loader (summed across DDP ranks)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.distributed import all_reduce_sum


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device, limit_batches: int | None = None, autocast_dtype=None) -> dict:
    was_training = model.training
    model.eval()
    device = torch.device(device)
    totals = torch.zeros(4, dtype=torch.float64, device=device)   # correct1, correct5, loss_sum, n
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
        totals += torch.tensor([hit[:, 0].sum().item(), hit.any(1).sum().item(),
                                F.cross_entropy(logits, y, reduction="sum").item(), len(y)],
                               dtype=torch.float64, device=device)
    model.train(was_training)
    c1, c5, loss, n = all_reduce_sum(totals).tolist()
    if n == 0:
        raise ValueError("evaluation saw no batches (empty test split or limit_eval_batches=0)")
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "samples": int(n)}
