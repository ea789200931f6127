"""What the suite holds: ``python -m engine.catalog methods|models|experiments [pattern]``.

- ``methods``: every ``conf/method/<name>.yaml`` and registered method: family, implemented/pending status
  (``engine.references.method_status``), the papers whose reference entries or experiment files use it, and the
  first comment line of its config.
- ``models``: the model registry (``models.list_models``), with the pretrained weights known for each.
- ``experiments``: every ``conf/experiment/<paper>/<cell>.yaml`` (what ``experiment=`` takes): paper, reference
  entry, fidelity, and whether it can run here (``yes``, or why not: pending method, the reference entry's
  ``runnable`` reason, data missing under ``DATA_ROOT``).

``pattern`` is a shell-style filter on the name (``'resnet*'``, ``'dcff/*'``). Reads files only: nothing is
composed or run.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from dataclasses import dataclass

from engine import config_keys
from engine.references.experiments import load_experiment_configs, method_status
from engine.references.schema import ROOT, ReferenceError, load_references, lookup

CONF = ROOT / "conf"
KINDS = ("methods", "models", "experiments")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str
    status: str          # implemented | pending | missing (registered but no conf/method file)
    papers: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class ExperimentInfo:
    name: str            # <paper>/<cell>: what experiment= takes
    paper: str
    reference: str
    fidelity: str
    runnable: str        # "yes", or "no: <why>"


def _first_comment(path: str) -> str:
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                return line.lstrip("# ").strip()
            if line.strip():
                return ""
    return ""


def methods() -> list[MethodInfo]:
    from methods import list_methods

    base = CONF / "method"
    configured = {p[:-5] for p in os.listdir(base) if p.endswith(".yaml")}
    papers: dict[str, set[str]] = {}
    for ref in load_references().values():
        for entry in ref.entries.values():
            papers.setdefault(entry.method, set()).add(ref.paper)
    for exp in load_experiment_configs(CONF):
        if exp.method and exp.paper:
            papers.setdefault(exp.method, set()).add(exp.paper)
    out = []
    for name in sorted(configured | set(list_methods())):
        path = str(base / f"{name}.yaml")
        family = str(config_keys._option("method", name).get("family") or "") if name in configured else ""
        out.append(MethodInfo(name=name, family=family, status=method_status(name, CONF),
                              papers=tuple(sorted(papers.get(name, ()))),
                              summary=_first_comment(path) if name in configured else ""))
    return out


def models() -> list[tuple[str, str]]:
    """(registered name, pretrained weights known for it or "")."""
    from models import list_models
    from models.pretrained import PRETRAINED

    return [(n, f"pretrained: {PRETRAINED[n].source}, {PRETRAINED[n].reported_top1} % published" if n in PRETRAINED
             else "") for n in list_models()]


def data_path(option: str, data_root: str) -> str | None:
    """Where ``data=<option>`` reads its files under ``data_root`` (None for generated data)."""
    from data.vision import _CIFAR, _IDX

    cfg = config_keys._option("data", option)
    if cfg.get("synthetic"):          # written on first use (data/voc_synthetic.py)
        return None
    folders = {name: spec[0] for name, spec in {**_IDX, **_CIFAR}.items()}
    sub = cfg.get("archive") or cfg.get("folder") or folders.get(cfg.get("name"))
    return None if sub is None else os.path.join(data_root, sub)


def experiments(data_root: str | None = None) -> list[ExperimentInfo]:
    data_root = data_root or os.environ.get("DATA_ROOT") or "datasets"   # conf/config.yaml: paths.data_root
    refs = load_references()
    base = str(CONF / "experiment")
    out = []
    for exp in load_experiment_configs(CONF):
        why = []
        status = method_status(exp.method, CONF) if exp.method else "implemented"
        if status != "implemented":
            why.append(f"method {exp.method} {status}")
        if exp.reference:
            try:
                reason = lookup(refs, exp.reference).not_runnable_reason
            except ReferenceError as e:
                reason = str(e)
            if reason:
                why.append(reason)
        path = data_path(exp.data or "mnist", data_root)        # conf/config.yaml's default data group
        if path and not os.path.exists(path) and not why:
            why.append(f"data {exp.data or 'mnist'} not found at {path} (set DATA_ROOT)")
        out.append(ExperimentInfo(name=os.path.relpath(exp.path, base)[:-len(".yaml")], paper=exp.paper or "",
                                  reference=exp.reference or "", fidelity=exp.fidelity or "",
                                  runnable="yes" if not why else "no: " + "; ".join(why)))
    return out


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """Fixed-width columns (the last one free)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([str(v).ljust(w) for v, w in zip(r, widths)] + [str(r[-1])]).rstrip()
                     for r in [header, *rows])


def render(kind: str, pattern: str = "*") -> str:
    """The listing ``python -m engine.catalog <kind> [pattern]`` prints."""
    if kind == "methods":
        rows = [(m.name, m.family, m.status, ",".join(m.papers), m.summary) for m in methods()
                if fnmatch.fnmatch(m.name, pattern)]
        return _table(("method", "family", "status", "papers", "description"), rows)
    if kind == "models":
        rows = [m for m in models() if fnmatch.fnmatch(m[0], pattern)]
        return _table(("model", "weights"), rows) + "\nalso: timm:<arch> (any timm architecture)"
    if kind == "experiments":
        rows = [(e.name, e.paper, e.reference, e.fidelity, e.runnable) for e in experiments()
                if fnmatch.fnmatch(e.name, pattern)]
        return _table(("experiment", "paper", "reference", "fidelity", "runnable here"), rows)
    raise ValueError(f"unknown listing {kind!r}; choose one of: {', '.join(KINDS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter on the name, e.g. 'dcff/*'")
    args = parser.parse_args(argv)
    print(render(args.kind, args.pattern))
    return 0


if __name__ == "__main__":
    sys.exit(main())
