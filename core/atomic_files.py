"""Files written so a kill or a failed write never leaves a truncated one: the content goes to ``<file>.tmp<pid>`` in
the same folder, is fsynced, and is renamed over the target (the folder fsynced too). A failed write (full disk,
unwritable folder) removes its temp file and raises ``AtomicWriteError`` with the reason; temp files of writers that
were killed (their pid no longer runs) are removed by the next write of that file. Checkpoints (engine/checkpoint.py)
and the states and genotypes methods write for their resume (search states, derived cells) all go through here."""
from __future__ import annotations

import glob
import os

import torch


class AtomicWriteError(OSError):
    """A write that did not land; ``reason`` is the one-line cause (e.g. "No space left on device")."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot write {path}: {reason} (check free disk space and that "
                         f"{os.path.dirname(os.path.abspath(path))} is writable)")
        self.path, self.reason = path, reason


def _write_atomically(path: str, mode: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temps(path)
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:             # a failed write or a kill (KeyboardInterrupt) mid-write: no temp left
        if os.path.exists(tmp):
            os.remove(tmp)
        if not isinstance(e, (OSError, RuntimeError)):   # torch.save reports a failed write as RuntimeError
            raise
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise AtomicWriteError(path, reason) from e


def save_tensors(obj, path: str) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (read it back with ``torch.load(path, weights_only=True)``)."""
    _write_atomically(path, "wb", lambda f: torch.save(obj, f))


def write_text(text: str, path: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _write_atomically(path, "w", lambda f: f.write(text))


def remove_stale_temps(path: str) -> None:
    """Delete ``<path>.tmp<pid>`` files left by writers that no longer run."""
    for tmp in glob.glob(glob.escape(path) + ".tmp*"):
        pid = tmp[len(path) + 4:]
        if pid.isdigit() and not _running(int(pid)):
            os.remove(tmp)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["AtomicWriteError", "save_tensors", "write_text", "remove_stale_temps"]
