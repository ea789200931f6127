"""Files a method writes during a run and reads back on resume (search states, derived genotypes): written to a
temporary name in the same folder and renamed over the target, so a run killed mid-write leaves the previous file
(or none), never a truncated one."""
from __future__ import annotations

import os

import torch


def save_tensors(obj, path: str) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (read it back with ``torch.load(path, weights_only=True)``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_text(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
