"""Which rows are judged, and one reference metric against the judged rows that cite its entry.

A row is judged only when it is what it says (``mark_judged``): fidelity ``paper`` or ``reduced`` as recorded at
run time (a run with any override but ``seed`` is recorded ``adhoc``), made from a clean commit, launched from an
experiment file that still exists, and with that file's current config hash (otherwise the row is superseded).
Every other row is kept and shown as "not judged" with its reason.

A metric's band is the paper's ± or the entry's floor, whichever is wider; our seed spread is shown beside it and
never widens it. Rows of different experiment files (recipes) are judged apart.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from engine.references.experiments import experiment_hashes
from engine.references.rows import row_value
from engine.references.schema import COMPLEXITY_METRICS, ROOT, Conventions, Entry, Metric
from engine.results import from_clean_commit

JUDGED_FIDELITIES = ("paper", "reduced")


def not_judged_reason(row: dict, current_hash: str | None) -> str:
    """Why ``row`` is not judged ("" when it is); ``current_hash``: its experiment file's config hash now."""
    fidelity = row.get("fidelity")
    if fidelity not in JUDGED_FIDELITIES:
        note = row.get("fidelity_note")
        return f"fidelity {fidelity}" + (f" ({note})" if note else "")
    if not from_clean_commit(row):
        return "made from uncommitted code (git_dirty)"
    experiment = row.get("experiment_config")
    if not experiment:
        return "no experiment file recorded (made before rows carried one, or not launched with experiment=)"
    if current_hash == "missing":
        return f"superseded: conf/experiment/{experiment}.yaml no longer exists"
    if current_hash is None or current_hash.startswith("error"):
        return f"conf/experiment/{experiment}.yaml does not compose ({current_hash})"
    if row.get("config_hash") != current_hash:
        return (f"superseded: config {row.get('config_hash')} differs from conf/experiment/{experiment}.yaml's "
                f"current config {current_hash}")
    return ""


def mark_judged(rows: list[dict], conf_dir: str | os.PathLike = ROOT / "conf") -> list[dict]:
    """Set ``row["_judged"]`` and ``row["_not_judged"]`` (the reason) on every row; returns ``rows``."""
    hashes = experiment_hashes([r.get("experiment_config") for r in rows], conf_dir)
    for row in rows:
        reason = not_judged_reason(row, hashes.get(row.get("experiment_config") or ""))
        row["_judged"], row["_not_judged"] = not reason, reason
    return rows


@dataclass
class Judgement:
    """One metric of one entry against the judged rows of one recipe that cite it."""
    entry: Entry
    metric: Metric
    fidelity: str
    values: list[float]            # ours, in the reference's unit
    run_ids: list[str]
    experiment: str | None = None  # the recipe (experiment file) judged; None: all recipes citing the entry

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Our seed spread: shown beside the band, never part of it."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    @property
    def delta(self) -> float | None:
        return None if self.mean is None or self.metric.value is None else self.mean - self.metric.value

    @property
    def band(self) -> float | None:
        return None if self.metric.band is None else self.metric.band.width()

    def within(self, value: float) -> bool:
        return (self.band is not None and self.metric.value is not None
                and abs(value - self.metric.value) <= self.band + 1e-9)

    @property
    def known_gap(self) -> str | None:
        """The entry's known-gap reason when it names this metric (a gap explains only the metrics it names, and,
        where it states a side, only a mean on that side of the paper's value)."""
        return self.entry.gap(self.metric.name, self.delta)

    @property
    def status(self) -> str:
        """reproduced / in band / recounted / out of band / known gap / informational / <fidelity> (judged by
        claims) / not run."""
        if not self.values:
            return "not run"
        if self.fidelity != "paper":
            return f"{self.fidelity} (judged by claims)"
        if self.band is None:
            return "informational"
        if self.within(self.mean):
            if self.entry.evidence_of(self.experiment) == "recount":
                return "recounted"
            return "reproduced" if self.entry.verified else "in band"
        return "known gap" if self.known_gap else "out of band"


def judged_experiments(entry: Entry, rows: list[dict], fidelity: str) -> list[str]:
    """The experiments (recipes) whose judged rows cite ``entry`` at ``fidelity``, each judged on its own."""
    return sorted({_recipe(r) for r in rows
                   if r.get("_judged") and r.get("reference") == entry.ref and r.get("fidelity") == fidelity})


def _recipe(row: dict) -> str:
    return str(row.get("experiment_config") or row.get("experiment") or "")


def judge_metric(entry: Entry, metric: Metric, rows: list[dict], fidelity: str, conv: Conventions,
                 experiment: str | None = None) -> Judgement:
    """Values of ``metric`` from the judged rows citing ``entry`` at ``fidelity`` (in the metric's unit); with
    ``experiment`` (an experiment file, ``<group>/<name>``), only that recipe's rows."""
    values, ids = [], []
    for row in rows:
        if not row.get("_judged") or row.get("reference") != entry.ref or row.get("fidelity") != fidelity:
            continue
        if experiment is not None and _recipe(row) != experiment:
            continue
        v = row_value(row, metric.name, conv)
        if v is None:
            continue
        values.append(v / metric.scale if metric.name in COMPLEXITY_METRICS else v)
        ids.append(row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line', '?')}")
    return Judgement(entry=entry, metric=metric, fidelity=fidelity, values=values, run_ids=ids, experiment=experiment)
