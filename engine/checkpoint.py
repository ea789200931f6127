"""Atomic checkpoints (write temp, fsync, rename) loaded with ``weights_only=True``."""
from __future__ import annotations

import os
import torch


def save_atomic(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str, map_location="cpu"):
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict:
    """Torch RNG states (training code draws randomness only from torch, or from generators it saves)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap_state_dict(blob) -> dict:
    """A model state dict from our checkpoint (``model``), a ``state_dict`` blob, or a bare state dict."""
    for key in ("model", "state_dict"):
        if isinstance(blob, dict) and key in blob and isinstance(blob[key], dict):
            blob = blob[key]
            break
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in blob.items()}
