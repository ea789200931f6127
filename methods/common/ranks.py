"""A method's own trainable parts under DDP. The engine wraps only the backbone in DistributedDataParallel, so
the parameters a method trains itself (AIP's discriminator, GDFQ's generator, NAT++'s policy, NASB's alphas) get
per-rank gradients from per-rank batches: stepped as they are, the ranks' copies drift apart. ``average_grads``
before such a step averages the gradients across ranks, as DDP does for the backbone, so every rank takes the same
step and the copies stay equal (they start equal: each is drawn from the method's generator, seeded alike)."""
from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_grads(params) -> None:
    """Replace each trainable parameter's gradient by its mean over the ranks (in place; no-op on one process), in
    one all-reduce of the flattened gradients. A parameter without a gradient on this rank takes part with zeros, so
    every rank sends the same buffer; it is left without one again when no rank had one (an optimizer then skips
    it, as it would have)."""
    n = world_size()
    if n == 1:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    missing = [p.grad is None for p in params]
    flat = torch.cat([torch.zeros(p.numel(), device=p.device, dtype=p.dtype) if none else p.grad.reshape(-1)
                      for p, none in zip(params, missing)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for p, none, part in zip(params, missing, flat.div_(n).split([p.numel() for p in params])):
        if not none:
            p.grad.copy_(part.view_as(p))
        elif part.any():
            p.grad = part.view_as(p).clone()
