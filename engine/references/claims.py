"""Claims: a paper's comparative statements, judged on result rows from the confidence interval of the difference.

A claim compares two arms (``better`` and ``worse`` row filters) within groups of equal ``same`` columns. Each
experiment file on one side is its own arm, so a group yields one comparison per pair of arms: recipes are never
pooled. Arms that share seeds are paired by seed (Student t on the per-seed differences); otherwise Welch's t.
The verdict (``engine.references.stats.verdict``): held when the 95% CI lies above the margin, not held when it
lies below, inconclusive otherwise or with fewer than 3 seeds per arm. Only judged rows take part
(``engine.references.judging.mark_judged``).
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from engine.references import stats
from engine.references.rows import _float, row_value
from engine.references.schema import Claim, Conventions
from engine.results import from_clean_commit

def _matches(row: dict, flt: dict) -> bool:
    for col, want in flt.items():
        have = (row.get("extra") or {}).get(col[6:]) if col.startswith("extra.") else row.get(col)
        wants = want if isinstance(want, list) else [want]
        if None in wants and have in (None, "", "None", "null"):
            continue
        if str(have) not in {str(w) for w in wants}:
            # numbers written differently ("5" vs "5.0")
            hv = _float(have)
            if hv is None or all(_float(w) != hv for w in wants):
                return False
    return True


@dataclass
class Arm:
    """One experiment's rows on one side of a comparison: value and run id per seed."""

    experiment: str
    values: dict[str, float]
    run_ids: dict[str, str]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values.values())

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if self.n >= 2 else None

    def describe(self) -> str:
        std = "" if self.std is None else f" ± {self.std:.3f}"
        return f"{self.experiment or '?'} {self.mean:.3f}{std} (n={self.n}; seeds {','.join(sorted(self.values))})"


@dataclass
class Comparison:
    """better − worse for one group of the claim's ``same`` columns and one pair of arms."""

    key: tuple
    better: Arm
    worse: Arm | None          # None: a within-row claim (the worse side is a threshold or another column)
    interval: stats.Interval
    verdict: str
    why: str
    fidelity: str | None


def _judged(row: dict) -> bool:
    """Rows marked by ``mark_judged``; unmarked rows (synthetic tests) count when paper/reduced and committed."""
    if "_judged" in row:
        return bool(row["_judged"])
    return row.get("fidelity") in ("paper", "reduced") and from_clean_commit(row)


def _row_id(row: dict) -> str:
    return row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line')}"


def _arm_key(row: dict) -> str:
    return str(row.get("experiment_config") or row.get("experiment") or "")


def _add(arms: dict, row: dict, value: float) -> None:
    """The latest row of a seed wins (a rerun of the same config replaces an earlier one)."""
    arm = arms.setdefault(_arm_key(row), Arm(_arm_key(row), {}, {}))
    seed = str(row.get("seed", ""))
    arm.values[seed], arm.run_ids[seed] = value, _row_id(row)


def compare_arms(better: Arm, worse: Arm, margin: float) -> tuple[stats.Interval, str, str]:
    """Paired on the seeds both arms have (when at least 2), else Welch; then the verdict."""
    common = sorted(set(better.values) & set(worse.values))
    if len(common) >= 2:
        interval = stats.paired_interval([better.values[s] for s in common], [worse.values[s] for s in common])
    else:
        interval = stats.welch_interval(list(better.values.values()), list(worse.values.values()))
    word, why = stats.verdict(interval, margin)
    if len(common) >= 2 and len(common) < max(better.n, worse.n):
        why += f" (paired on the {len(common)} shared seeds)"
    return interval, word, why


@dataclass
class ClaimResult:
    claim: Claim
    comparisons: list[Comparison]

    def enforced(self, comparison: Comparison) -> bool:
        if self.claim.enforce is not None:
            return self.claim.enforce
        return comparison.fidelity == "paper"

    @property
    def status(self) -> str:
        """superseded / qualitative / not tested / held (every comparison held) / not held (none held, one or more
        not held) / inconclusive (anything else)."""
        if self.claim.superseded is not None:
            return "superseded"
        if self.claim.metric is None:
            return "qualitative"
        if not self.comparisons:
            return "not tested"
        words = {c.verdict for c in self.comparisons}
        if words == {stats.HELD}:
            return stats.HELD
        if stats.NOT_HELD in words and stats.HELD not in words:
            return stats.NOT_HELD
        return stats.INCONCLUSIVE

    def evidence(self) -> list[str]:
        out = []
        for c in self.comparisons:
            iv = c.interval
            if c.worse is None:   # within-row, keyed by experiment: each row's metric minus its threshold
                within = self.claim.within_row
                against = within["other"] if within["other"] is not None else f"{float(within['min']):g}"
                compared = f"per row {self.claim.metric} − {against}: {c.better.describe()}"
            else:
                label = ", ".join(f"{k}={v}" for k, v in zip(self.claim.same, c.key)) or "all rows"
                compared = (f"{label}: better {c.better.describe()} vs worse {c.worse.describe()}: difference "
                            f"{iv.diff:+.3f}")
            out.append(f"{compared}, 95% CI [{iv.low:+.3f}, {iv.high:+.3f}] ({iv.test}) vs margin "
                       f"{self.claim.margin:+g} -> {c.verdict}: {c.why}")
        return out


def _own_paper(claim: Claim, side: dict) -> dict:
    """A row filter restricted to the claim's own paper unless it names one."""
    return side if "paper" in side else {**side, "paper": claim.paper}


def claim_sides(claim: Claim) -> tuple[dict, dict]:
    """The ``better`` and ``worse`` row filters, each restricted to the claim's own paper unless it names one."""
    return _own_paper(claim, claim.better), _own_paper(claim, claim.worse)


def side_has_judged_rows(side: dict, rows: list[dict]) -> bool:
    return any(_judged(r) and _matches(r, side) for r in rows)


def evaluate_claim(claim: Claim, rows: list[dict], conv: Conventions | None = None) -> ClaimResult:
    """Judge ``claim`` on the judged rows of its own paper (unless a side names ``paper`` itself: another paper's
    baseline of the same model is a different recipe, pooling it would compare unlike things)."""
    if claim.metric is None or claim.superseded is not None:
        return ClaimResult(claim=claim, comparisons=[])
    if claim.within_row is not None:
        return _evaluate_within_row(claim, rows, conv)
    better, worse = claim_sides(claim)
    groups: dict[tuple, dict] = {}
    for row in rows:
        if not _judged(row):
            continue
        side = "better" if _matches(row, better) else ("worse" if _matches(row, worse) else None)
        v = None if side is None else row_value(row, claim.metric, conv)
        if v is None:
            continue
        key = tuple(row.get(f, "") if not f.startswith("extra.") else (row.get("extra") or {}).get(f[6:])
                    for f in claim.same)
        g = groups.setdefault(key, {"better": {}, "worse": {}, "equal": {}, "acts": [{} for _ in claim.acts],
                                    "fid": set()})
        _add(g[side], row, v)
        if claim.equal is not None:
            e = row_value(row, claim.equal.metric, conv)
            if e is not None:
                _add(g["equal"], row, e)
        for guard, arms in zip(claim.acts, g["acts"]):
            a = row_value(row, guard.metric, conv) if side == guard.side else None
            if a is not None:
                _add(arms, row, a)
        g["fid"].add(row.get("fidelity"))
    out = []
    for key, g in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        fid = next(iter(g["fid"])) if len(g["fid"]) == 1 else None
        for b in g["better"].values():
            for w in g["worse"].values():
                interval, word, why = compare_arms(b, w, claim.margin)
                idle = _unequal(claim, g["equal"], b.experiment, w.experiment) or _idle(
                    claim, g["acts"], b.experiment, w.experiment)
                if idle:
                    word, why = stats.INCONCLUSIVE, idle
                out.append(Comparison(key=key, better=b, worse=w, interval=interval, verdict=word, why=why,
                                      fidelity=fid))
    return ClaimResult(claim=claim, comparisons=out)


def _unequal(claim: Claim, equal_arms: dict, better: str, worse: str) -> str:
    """Why two arms are not compared at equal ``claim.equal.metric`` ("" when they are, or no guard)."""
    if claim.equal is None:
        return ""
    name, tol = claim.equal.metric, claim.equal.rel_tol
    if better not in equal_arms or worse not in equal_arms:
        return f"not compared: the rows do not record {name}, so equal {name} cannot be checked"
    b, w = equal_arms[better].mean, equal_arms[worse].mean
    if abs(b - w) > tol * max(abs(b), abs(w)):
        return (f"not compared: the arms differ in {name} ({b:.4g} vs {w:.4g}, more than {tol:.0%}); the claim "
                f"holds only at equal {name}")
    return ""


def _idle(claim: Claim, acts_arms: list[dict], better: str, worse: str) -> str:
    """Why the compared arms' method did not act, by the first of the claim's guards whose logged signal misses its
    bound on its side ("" when every guard passes, or there is none)."""
    for acts, arms in zip(claim.acts, acts_arms):
        experiment = better if acts.side == "better" else worse
        if experiment not in arms:
            return (f"not compared: {experiment} rows do not record {acts.metric}, so whether the method acted is "
                    "unknown")
        value = arms[experiment].mean
        if (acts.above is not None and value > acts.above) or (acts.below is not None and value < acts.below):
            continue
        bound = f"above {acts.above:g}" if acts.above is not None else f"below {acts.below:g}"
        return (f"not compared: the method did not act in {experiment} ({acts.metric} = {value:.4g}, needs {bound}: "
                f"{acts.why})")
    return ""


def _evaluate_within_row(claim: Claim, rows: list[dict], conv: Conventions | None) -> ClaimResult:
    """Per experiment: each row's ``metric − min`` (or ``metric − other``) over seeds, one-sample t against the
    margin (0 with ``min``)."""
    better = _own_paper(claim, claim.better)
    arms: dict[str, Arm] = {}
    fids: dict[str, set] = {}
    other = claim.within_row["other"]
    for row in rows:
        if not _judged(row) or not _matches(row, better):
            continue
        v = row_value(row, claim.metric, conv)
        w = float(claim.within_row["min"]) if other is None else row_value(row, other, conv)
        if v is None or w is None:
            continue
        _add(arms, row, v - w)
        fids.setdefault(_arm_key(row), set()).add(row.get("fidelity"))
    out = []
    for name, arm in sorted(arms.items()):
        interval = stats.one_sample_interval(list(arm.values.values()), 0.0)
        word, why = stats.verdict(interval, claim.margin)
        fid = next(iter(fids[name])) if len(fids[name]) == 1 else None
        out.append(Comparison(key=(name,), better=arm, worse=None, interval=interval, verdict=word, why=why,
                              fidelity=fid))
    return ClaimResult(claim=claim, comparisons=out)
