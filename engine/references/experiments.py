"""Experiment files (``conf/experiment/<paper>/<cell>.yaml``) as plain YAML, and methods' implementation status."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import yaml

from engine.references.schema import ROOT, ReferenceError

@dataclass
class ExperimentConfig:
    path: str
    paper: str | None
    name: str | None
    reference: str | None
    fidelity: str | None
    variant: str | None
    method: str | None
    data: str | None
    model: str | None
    command: str | None


def read_experiment(path: str, base: str) -> tuple[dict, dict, str]:
    """(top-level fields, config groups, text) of one experiment file, on top of the experiment files it
    extends through its defaults list (``- /experiment/<group>/<name>``)."""
    try:
        with open(path) as f:
            text = f.read()
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ReferenceError(f"{path}: not valid YAML: {e}") from None
    fields, groups = {}, {}
    for d in raw.get("defaults") or []:
        if isinstance(d, str) and d.startswith("/experiment/"):
            parent_fields, parent_groups, _ = read_experiment(os.path.join(base, d[len("/experiment/"):] + ".yaml"),
                                                               base)
            _merge(fields, parent_fields)
            groups.update(parent_groups)
        elif isinstance(d, dict):
            for k, v in d.items():
                groups[k.replace("override", "").strip().lstrip("/")] = v
    _merge(fields, {k: v for k, v in raw.items() if k != "defaults"})
    return fields, groups, text


def _merge(base: dict, over: dict) -> None:
    """Hydra-style override of nested mappings: ``over`` wins key by key."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def load_experiment_configs(conf_dir: str | os.PathLike = ROOT / "conf") -> list[ExperimentConfig]:
    """Plain-YAML view of ``conf/experiment/**.yaml`` (reference, fidelity, method/data/model overrides)."""
    out = []
    base = os.path.join(str(conf_dir), "experiment")
    for path in sorted(glob.glob(os.path.join(base, "**", "*.yaml"), recursive=True)):
        raw, groups, text = read_experiment(path, base)
        command = next((ln.lstrip("# ").strip() for ln in text.splitlines()
                        if ln.startswith("#") and ln.lstrip("# ").startswith("python ")), None)
        out.append(ExperimentConfig(path=path, paper=raw.get("paper"), name=raw.get("name"),
                                    reference=raw.get("reference"), fidelity=raw.get("fidelity"),
                                    variant=None if raw.get("variant") is None else str(raw.get("variant")),
                                    method=groups.get("method"), data=groups.get("data"), model=groups.get("model"),
                                    command=command))
    return out


def method_status(method: str | None, conf_dir: str | os.PathLike = ROOT / "conf") -> str:
    """'implemented', 'pending' (conf/method/<name>.yaml says implemented: false) or 'missing'."""
    if not method:
        return "missing"
    path = os.path.join(str(conf_dir), "method", f"{method}.yaml")
    if not os.path.exists(path):
        return "missing"
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    return "pending" if raw.get("implemented") is False else "implemented"
