"""Mean ± std per method of the reduced binary comparison and the verdict of each claim in sd_bnn/ir2net.yaml.

    python scripts/summarize_binary.py [results/runs]

Reads results/runs/{sd_bnn,ir2net}.csv (rows of fidelity paper/reduced), groups them on each claim's ``same``
fields, averages seeds per side and prints better.mean - worse.mean against the claim's margin. A plain reader of
the committed rows and the reference files; the suite-wide judge is engine/references.py.
"""
from __future__ import annotations

import os
import statistics
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine.results import read_rows  # noqa: E402


def _matches(row: dict, flt: dict) -> bool:
    for k, v in flt.items():
        allowed = v if isinstance(v, list) else [v]
        if str(row.get(k, "")) not in {str(a) for a in allowed}:
            return False
    return True


def _stats(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def main(runs_dir: str = os.path.join(ROOT, "results", "runs")) -> int:
    rows = []
    for paper in ("sd_bnn", "ir2net"):
        path = os.path.join(runs_dir, f"{paper}.csv")
        if os.path.exists(path):
            rows += [r for r in read_rows(path) if r["fidelity"] in ("paper", "reduced")]
    if not rows:
        print(f"no rows in {runs_dir}/{{sd_bnn,ir2net}}.csv")
        return 1
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["fidelity"], r["variant"], r["method"]), []).append(float(r["top1"]))
    print(f"{'dataset':<14} {'model':<10} {'fidelity':<8} {'method':<10} {'n':>2} {'top1 mean ± std':>18}")
    for (ds, model, fid, _variant, method), vals in sorted(groups.items()):
        m, s = _stats(vals)
        print(f"{ds:<14} {model:<10} {fid:<8} {method:<10} {len(vals):>2} {m:>10.2f} ± {s:.2f}")
    print()
    for paper in ("sd_bnn", "ir2net"):
        with open(os.path.join(ROOT, "results", "reference", f"{paper}.yaml")) as f:
            ref = yaml.safe_load(f)
        for claim in ref.get("claims") or []:
            c = claim["compare"]
            sides: dict[tuple, dict[str, list[float]]] = {}
            for r in rows:
                side = "better" if _matches(r, c["better"]) else "worse" if _matches(r, c["worse"]) else None
                if side:
                    key = tuple(r.get(f, "") for f in c["same"])
                    sides.setdefault(key, {"better": [], "worse": []})[side].append(float(r[c["metric"]]))
            for key, g in sorted(sides.items()):
                if not (g["better"] and g["worse"]):
                    continue
                (bm, bs), (wm, ws) = _stats(g["better"]), _stats(g["worse"])
                delta = bm - wm
                held = delta >= c["margin"]
                print(f"{paper}:{claim['id']} {dict(zip(c['same'], key))}: {bm:.2f}±{bs:.2f} (n={len(g['better'])}) vs "
                      f"{wm:.2f}±{ws:.2f} (n={len(g['worse'])}) delta {delta:+.2f} margin {c['margin']:+.2f} -> "
                      f"{'HELD' if held else 'NOT HELD'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
