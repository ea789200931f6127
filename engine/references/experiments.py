"""Experiment files (``conf/experiment/<paper>/<cell>.yaml``) as plain YAML, and methods' implementation status."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
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


def experiment_names(conf_dir: str | os.PathLike = ROOT / "conf") -> list[str]:
    """``<group>/<name>`` of every experiment file (what ``experiment=`` takes)."""
    base = os.path.join(str(conf_dir), "experiment")
    return sorted(os.path.relpath(p, base)[:-len(".yaml")]
                  for p in glob.glob(os.path.join(base, "**", "*.yaml"), recursive=True))


def experiment_hashes(names, conf_dir: str | os.PathLike = ROOT / "conf") -> dict[str, str]:
    """Config hash (``engine.provenance.config_hash``) of each named experiment file composed exactly as
    ``train.py experiment=<name>`` composes it; a missing file maps to ``"missing"``, a file that does not compose
    to ``"error: <why>"``. Composing is slow (~0.3 s a file), so hashes are kept in ``.cache/`` keyed by a digest
    of every file under ``conf_dir``."""
    conf_dir = os.path.abspath(str(conf_dir))
    cache_path = os.path.join(ROOT, ".cache", f"experiment_hashes-{_conf_digest(conf_dir)}.json")
    cached = {}
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
    todo = sorted({n for n in names if n and n not in cached})
    if todo:
        cached.update(_compose_hashes(todo, conf_dir))
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = f"{cache_path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(cached, f, sort_keys=True)
        os.replace(tmp, cache_path)
    return {n: cached[n] for n in names if n}


def _conf_digest(conf_dir: str) -> str:
    h = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(conf_dir, "**", "*.yaml"), recursive=True)):
        h.update(os.path.relpath(path, conf_dir).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _hydra_conf(conf_dir: str):
    """Hydra initialised on ``conf_dir`` for the block, and a caller's own Hydra state put back afterwards."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def compose_experiment(name: str, seed=None, conf_dir: str | os.PathLike = ROOT / "conf"):
    """``conf/experiment/<name>.yaml`` composed as ``train.py experiment=<name> [seed=<seed>]`` composes it."""
    from hydra import compose

    overrides = [f"experiment={name}"] + ([] if seed is None else [f"seed={seed}"])
    with _hydra_conf(os.path.abspath(str(conf_dir))):
        return compose(config_name="config", overrides=overrides)


def _compose_hashes(names: list[str], conf_dir: str) -> dict[str, str]:
    from hydra import compose

    from engine.provenance import config_hash

    out = {}
    with _hydra_conf(conf_dir):
        for name in names:
            if not os.path.exists(os.path.join(conf_dir, "experiment", f"{name}.yaml")):
                out[name] = "missing"
                continue
            try:
                out[name] = config_hash(compose(config_name="config", overrides=[f"experiment={name}"]))
            except Exception as e:   # noqa: BLE001 - reported per file, the others still hash
                out[name] = f"error: {str(e).splitlines()[0]}"
    return out
