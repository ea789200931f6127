"""One reference metric against the rows that cite its entry: bands, statuses."""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from engine.references.rows import row_value
from engine.references.schema import COMPLEXITY_METRICS, Conventions, Entry, Metric

@dataclass
class Judgement:
    """One metric of one entry against the rows that cite it (at one fidelity)."""
    entry: Entry
    metric: Metric
    fidelity: str
    values: list[float]            # ours, in the reference's unit
    run_ids: list[str]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    @property
    def delta(self) -> float | None:
        return None if self.mean is None or self.metric.value is None else self.mean - self.metric.value

    @property
    def band(self) -> float | None:
        return None if self.metric.band is None else self.metric.band.width(self.std)

    def within(self, value: float) -> bool:
        return (self.band is not None and self.metric.value is not None
                and abs(value - self.metric.value) <= self.band + 1e-9)

    @property
    def status(self) -> str:
        """reproduced / in band / out of band / known gap / reduced (claims only) / not run."""
        if not self.values:
            return "not run"
        if self.fidelity != "paper":
            return f"{self.fidelity} (judged by claims)"
        if self.band is None:
            return "informational"
        if self.within(self.mean):
            return "reproduced" if self.entry.verified else "in band"
        return "known gap" if self.entry.known_gap else "out of band"


def judged_experiments(entry: Entry, rows: list[dict], fidelity: str) -> list[str]:
    """The experiments (recipes) whose rows cite ``entry`` at ``fidelity``, each judged on its own."""
    return sorted({str(r.get("experiment") or "") for r in rows
                   if r.get("reference") == entry.ref and r.get("fidelity") == fidelity})


def judge_metric(entry: Entry, metric: Metric, rows: list[dict], fidelity: str, conv: Conventions,
                 experiment: str | None = None) -> Judgement:
    """Values of ``metric`` from the rows citing ``entry`` at ``fidelity`` (converted to the metric's unit); with
    ``experiment``, only that recipe's rows (seeds of one recipe give the std; two recipes are not pooled)."""
    values, ids = [], []
    for row in rows:
        if row.get("reference") != entry.ref or row.get("fidelity") != fidelity:
            continue
        if experiment is not None and str(row.get("experiment") or "") != experiment:
            continue
        v = row_value(row, metric.name, conv)
        if v is None:
            continue
        values.append(v / metric.scale if metric.name in COMPLEXITY_METRICS else v)
        ids.append(row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line', '?')}")
    return Judgement(entry=entry, metric=metric, fidelity=fidelity, values=values, run_ids=ids)
