"""The first non-finite training loss of a stage, found without a host sync per step.

On CUDA, reading a loss (``bool(torch.isfinite(loss))``, ``loss.item()``) makes the host wait for the device, so
each step would stall the launch queue. :class:`LossWatch` instead keeps, on the loss's device, the index and value
of the first non-finite loss; the trainer reads it together with the loss it logs, once per log point and at the
epoch end (:meth:`LossWatch.read`), and stops there naming the step where the loss went bad.
"""
from __future__ import annotations

import torch


class LossWatch:
    def __init__(self, device, first_step: int):
        self.first_step = first_step                      # steps done before this watch began (resumed stages)
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.count = zero.clone()                         # steps watched
        self.bad_at = zero - 1                            # steps watched before the first non-finite loss; -1: none
        self.bad_value = zero.clone()

    def update(self, loss: torch.Tensor) -> None:
        """Record this step's loss (device work only)."""
        loss = loss.detach().double()
        new = (self.bad_at < 0) & ~torch.isfinite(loss)
        self.bad_at = torch.where(new, self.count, self.bad_at)
        self.bad_value = torch.where(new, loss, self.bad_value)
        self.count += 1

    def read(self, value: torch.Tensor) -> tuple[float, tuple[int, float] | None]:
        """``value`` as a float and (steps done before it, loss) of the first non-finite loss or None, in one host
        read."""
        v, at, bad = torch.stack([value.detach().double(), self.bad_at, self.bad_value]).tolist()
        return v, (None if at < 0 else (self.first_step + int(at), bad))
