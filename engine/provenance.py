"""Provenance of a run: git commit (+dirty flag), config hash, versions, the command line, and whether the row
is what its experiment file says.

A row is *judged* against a paper only when it is exactly its experiment file's config: launched with
``experiment=<group>/<name>`` and no override other than ``seed`` and the keys that do not change what is
computed (``NON_COMPUTATIONAL``). Anything else is recorded with ``fidelity=adhoc`` and the reason in
``fidelity_note``; the judge (``engine.verdicts``) additionally requires a clean commit and the experiment
file's current config hash.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

# keys that do not change what is computed (where files go, how it is shown, whether to resume, whether the trained
# model's CPU latency is measured after training)
_IGNORED_TOP = ("paths", "logger", "hydra", "allow_untrained")
_IGNORED_TRAINER = ("resume", "progress", "log_every", "device", "eval_batch_size", "num_threads", "latency")
#: override keys that leave a row judged: the seed, the experiment choice and the non-computational keys above
JUDGED_OVERRIDES = ("seed", "experiment")
JUDGED_FIDELITIES = ("paper", "reduced")


#: what runs write (rows, reports, analysis figures): appending a row to a tracked CSV does not make the code dirty
RESULTS_TREE = "results"


def git_info(root: str | None = None) -> tuple[str, bool]:
    """(HEAD commit, whether tracked files outside ``results/`` differ from it)."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     f":(exclude){RESULTS_TREE}"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return sha or "unknown", dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def _without_unset(node):
    """``node`` without the keys whose value is null, false or an empty list/mapping (recursively)."""
    if isinstance(node, dict):
        kept = {k: _without_unset(v) for k, v in node.items()}
        return {k: v for k, v in kept.items() if v is not None and v is not False and v != [] and v != {}}
    if isinstance(node, list):
        return [_without_unset(v) for v in node]
    return node


def _mask_paths(node, paths: list[tuple[str, str]]):
    """Strings that start with a ``paths.*`` folder written back as ``${paths.<name>}...``: where this machine
    keeps its data and outputs is not part of what a run computes."""
    if isinstance(node, dict):
        return {k: _mask_paths(v, paths) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_paths(v, paths) for v in node]
    if isinstance(node, str):
        for name, folder in paths:
            if node == folder or node.startswith(folder.rstrip("/") + "/"):
                return "${paths." + name + "}" + node[len(folder):]
    return node


def config_hash(cfg) -> str:
    """Hash of the resolved config minus paths/logging/resume keys, the seed (so seeds share a hash) and unset
    values (null, false, empty): a new option whose default is off leaves earlier rows' hashes as they were, so
    their verdicts survive it; any option set on, or any value changed, gives a new hash. Values under a
    ``paths.*`` folder (``data.root``, an analysis output folder) are hashed relative to it, so the hash is the
    same on every machine and for every ``DATA_ROOT`` / ``RESULTS_DIR``."""
    data = OmegaConf.to_container(cfg, resolve=True)
    folders = sorted(((k, str(v)) for k, v in (data.get("paths") or {}).items() if v not in (None, "", ".")),
                     key=lambda kv: -len(kv[1]))
    data = _without_unset(_mask_paths(data, folders))
    for key in _IGNORED_TOP + ("seed",):
        data.pop(key, None)
    for key in _IGNORED_TRAINER:
        data.get("trainer", {}).pop(key, None)
    text = OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def is_computational(key: str) -> bool:
    """Whether overriding config ``key`` (dotted, ``+``/``~``/``++`` prefixes allowed) changes what is computed."""
    key = key.lstrip("+~")
    top, _, rest = key.partition(".")
    if top in _IGNORED_TOP or top in JUDGED_OVERRIDES:
        return False
    return not (top == "trainer" and rest.split(".")[0] in _IGNORED_TRAINER)


@dataclass(frozen=True)
class Invocation:
    """How a run was launched: the experiment file chosen (``<group>/<name>``) and the command-line overrides."""

    experiment: str | None = None
    overrides: tuple[str, ...] = ()

    @classmethod
    def current(cls) -> "Invocation":
        """The running Hydra job's choice and overrides, else what a command line that composes by itself
        declared (``declare``); an empty invocation otherwise (a test's ``compose`` + ``run``), whose rows are
        therefore never judged."""
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            return cls(experiment=hc.runtime.choices.get("experiment"), overrides=tuple(hc.overrides.task))
        return _declared[-1] if _declared else cls()

    @classmethod
    def from_overrides(cls, overrides: list[str]) -> "Invocation":
        experiment = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("experiment=")), None)
        return cls(experiment=experiment, overrides=tuple(overrides))

    def declare(self) -> None:
        """For command lines that compose without ``@hydra.main`` (scripts/analyze.py): this process's runs
        were launched with these overrides."""
        _declared.append(self)

    def computational_overrides(self) -> list[str]:
        return [o for o in self.overrides if is_computational(o.split("=", 1)[0])]

    def fidelity(self, declared: str) -> tuple[str, str]:
        """(fidelity recorded in the row, why it differs from ``declared``; "" when it does not)."""
        if declared not in JUDGED_FIDELITIES:
            return declared, ""
        if not self.experiment:
            return "adhoc", f"declared {declared}, but not launched with experiment=<file>"
        extra = self.computational_overrides()
        if extra:
            return "adhoc", f"declared {declared}, but overridden: {' '.join(extra)}"
        return declared, ""


_declared: list[Invocation] = []


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0])] + sys.argv[1:])


def torch_version() -> str:
    return torch.__version__
