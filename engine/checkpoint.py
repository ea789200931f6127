"""Atomic checkpoints (write temp, fsync, rename) loaded with ``weights_only=True``.

A write that fails (full disk, unwritable folder) leaves no temp file; temp files of writers that were killed
(``<file>.tmp<pid>`` of a process that no longer runs) are removed by the next write of that file. A file that
is not a readable checkpoint, or whose weights do not fit the model, fails with ``CheckpointError`` naming it.
"""
from __future__ import annotations

import os
import re

import torch

from core.atomic_files import AtomicWriteError, save_tensors


class CheckpointError(ValueError):
    pass


def save_atomic(obj, path: str) -> None:
    """``obj`` saved to ``path`` atomically (core/atomic_files.py); a failed write raises ``CheckpointError``."""
    try:
        save_tensors(obj, path)
    except AtomicWriteError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.reason} (check free disk space and that "
                              f"{os.path.dirname(os.path.abspath(path))} is writable, or set paths.output_dir)") from e


def load(path: str, map_location="cpu"):
    """The object saved at ``path`` (tensors, dicts, lists, numbers, strings only: ``weights_only=True``)."""
    expected = "a .pt file written by train.py (final.pt, last.pt) or a state dict saved with torch.save"
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory; expected {expected}")
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist; expected {expected}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); expected {expected}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:   # torch reports truncation, text and pickles of other objects with many types
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {reason}); expected "
                              f"{expected}; a truncated file is rewritten by running its run again") from None


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


def unwrap_state_dict(blob, path: str = "checkpoint") -> dict:
    """A model state dict from our checkpoint (``model``), a ``state_dict`` blob, or a bare state dict."""
    for key in ("model", "state_dict"):
        if isinstance(blob, dict) and key in blob and isinstance(blob[key], dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"{path} holds no model weights (a {type(blob).__name__}); expected a dict of "
                              "tensors, or a dict with one under 'model' or 'state_dict'")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in blob.items()}


def load_weights(model: torch.nn.Module, blob, path: str, model_name: str) -> None:
    """``model.load_state_dict`` of the blob's weights; a checkpoint of another model fails naming both."""
    state = unwrap_state_dict(blob, path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
    if missing or unexpected or misshaped:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape differs:", misshaped)) if keys]
        raise CheckpointError(f"{path} does not hold weights of model={model_name} as configured "
                              f"({'; '.join(parts)}); pass the model= (and method=) it was trained with")
    model.load_state_dict(state)


def run_folder_of(resume: str) -> str | None:
    """``trainer.resume=<checkpoint path>``: the run folder holding it (``<run>/final.pt`` or
    ``<run>/stage<i>-<name>/last.pt``), which the run continues in; None for ``auto`` and ``never``."""
    if resume in ("auto", "never"):
        return None
    folder, name = os.path.split(os.path.abspath(resume))
    if name == "final.pt":
        return folder
    if name in ("last.pt", "trained.pt") and re.fullmatch(r"stage\d+-.+", os.path.basename(folder)):
        return os.path.dirname(folder)
    raise CheckpointError(f"trainer.resume={resume}: expected a checkpoint inside a run folder, "
                          "<run>/stage<i>-<name>/last.pt or <run>/final.pt (use trainer.init_checkpoint to start "
                          "from other weights)")
