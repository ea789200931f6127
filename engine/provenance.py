"""Provenance of a run: git commit (+dirty flag), config hash, versions, the command line."""
from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys

import torch
from omegaconf import OmegaConf

# keys that do not change what is computed (where files go, how it is shown, whether to resume)
_IGNORED_TOP = ("paths", "logger", "hydra")
_IGNORED_TRAINER = ("resume", "progress", "log_every", "device", "eval_batch_size")


def git_info(root: str | None = None) -> tuple[str, bool]:
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return sha or "unknown", dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def config_hash(cfg) -> str:
    """Hash of the resolved config minus paths/logging/resume keys and the seed (so seeds share a hash)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in _IGNORED_TOP + ("seed",):
        data.pop(key, None)
    for key in _IGNORED_TRAINER:
        data.get("trainer", {}).pop(key, None)
    text = OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0])] + sys.argv[1:])


def torch_version() -> str:
    return torch.__version__
