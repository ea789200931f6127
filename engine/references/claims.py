"""Claims: a paper's comparative statements, tested on result rows."""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from engine.references.rows import _float, row_value
from engine.references.schema import Claim, Conventions

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
class ClaimGroup:
    key: tuple
    better: list[float]
    worse: list[float]
    better_ids: list[str]
    worse_ids: list[str]
    fidelity: str | None

    @property
    def diff(self) -> float:
        return statistics.fmean(self.better) - statistics.fmean(self.worse)


@dataclass
class ClaimResult:
    claim: Claim
    groups: list[ClaimGroup]

    def held(self, group: ClaimGroup) -> bool:
        return group.diff >= self.claim.margin - 1e-9

    def enforced(self, group: ClaimGroup) -> bool:
        if self.claim.enforce is not None:
            return self.claim.enforce
        return group.fidelity == "paper"

    @property
    def status(self) -> str:
        if self.claim.metric is None:
            return "qualitative (no row comparison)"
        if not self.groups:
            return "not tested"
        held = [self.held(g) for g in self.groups]
        return "held" if all(held) else ("not held" if not any(held) else "mixed")

    def evidence(self) -> list[str]:
        out = []
        for g in self.groups:
            label = ", ".join(f"{k}={v}" for k, v in zip(self.claim.same, g.key)) or "all rows"
            out.append(f"{label}: better {statistics.fmean(g.better):.3f} (n={len(g.better)}; "
                       f"{' '.join(g.better_ids)}) − worse {statistics.fmean(g.worse):.3f} (n={len(g.worse)}; "
                       f"{' '.join(g.worse_ids)}) = {g.diff:+.3f} vs margin {self.claim.margin:+.3f} -> "
                       f"{'held' if self.held(g) else 'NOT held'}")
        return out


def evaluate_claim(claim: Claim, rows: list[dict], conv: Conventions | None = None) -> ClaimResult:
    """Group rows by the claim's ``same`` fields, average seeds per side, compare with the margin.

    Only ``paper`` and ``reduced`` rows take part (``smoke``/``adhoc`` rows are never judged), and only rows of
    the claim's own paper unless a side names ``paper`` itself (another paper's baseline of the same model is a
    different recipe: pooling it would compare unlike things)."""
    if claim.metric is None:
        return ClaimResult(claim=claim, groups=[])
    if claim.within_row is not None:
        return _evaluate_within_row(claim, rows, conv)
    better = claim.better if "paper" in claim.better else {**claim.better, "paper": claim.paper}
    worse = claim.worse if "paper" in claim.worse else {**claim.worse, "paper": claim.paper}
    groups: dict[tuple, dict] = {}
    for row in rows:
        if row.get("fidelity") not in ("paper", "reduced"):
            continue
        side = "better" if _matches(row, better) else ("worse" if _matches(row, worse) else None)
        if side is None:
            continue
        v = row_value(row, claim.metric, conv)
        if v is None:
            continue
        key = tuple(row.get(f, "") if not f.startswith("extra.") else (row.get("extra") or {}).get(f[6:])
                    for f in claim.same)
        g = groups.setdefault(key, {"better": [], "worse": [], "better_ids": [], "worse_ids": [], "fid": set()})
        g[side].append(v)
        g[side + "_ids"].append(row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line')}")
        g["fid"].add(row.get("fidelity"))
    out = []
    for key, g in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if g["better"] and g["worse"]:
            fid = g["fid"].pop() if len(g["fid"]) == 1 else None
            out.append(ClaimGroup(key=key, better=g["better"], worse=g["worse"], better_ids=g["better_ids"],
                                  worse_ids=g["worse_ids"], fidelity=fid))
    return ClaimResult(claim=claim, groups=out)


def _evaluate_within_row(claim: Claim, rows: list[dict], conv: Conventions | None) -> ClaimResult:
    """One group per matching row: ``metric >= min`` (worse side = the threshold), or
    ``metric - other >= margin`` (worse side = the row's ``other`` value)."""
    out = []
    better = claim.better if "paper" in claim.better else {**claim.better, "paper": claim.paper}
    for row in rows:
        if row.get("fidelity") not in ("paper", "reduced") or not _matches(row, better):
            continue
        v = row_value(row, claim.metric, conv)
        other = claim.within_row["other"]
        w = float(claim.within_row["min"]) if other is None else row_value(row, other, conv)
        if v is None or w is None:
            continue
        rid = row.get("run_id") or f"{os.path.basename(row.get('_file', '?'))}:{row.get('_line')}"
        out.append(ClaimGroup(key=(rid,), better=[v], worse=[w], better_ids=[rid],
                              worse_ids=["threshold" if other is None else other], fidelity=row.get("fidelity")))
    return ClaimResult(claim=claim, groups=out)
