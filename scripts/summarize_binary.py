"""The binary grid at a glance: each judged arm's top-1 mean ± std and method signals, and each claim's verdict.

    python scripts/summarize_binary.py [--papers sd_bnn ir2net] [--signals sign_flip_total ...] [--runs results/runs]

Reads the judged rows of sd_bnn/ir2net (engine.references: clean commit, the experiment file's exact config) and
prints, per experiment, n, top-1 mean ± std and the mean of the signals that show whether the method's own
parameters moved; then every sd_bnn/ir2net claim with the suite's verdict (95% CI of the paired difference against
the margin) and its evidence, exactly as `python evaluate.py report` judges it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from engine import references as R  # noqa: E402

PAPERS = ("sd_bnn", "ir2net")
SIGNALS = ("sign_flip_total", "wsd_alpha_abs_max", "asd_beta_std_samples", "restriction_kept_fraction")


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4g}" if values else "-"


def arm_table(rows: list[dict], papers=PAPERS, signals=SIGNALS) -> list[str]:
    """One line per judged experiment of ``papers``: n, top-1 mean ± std, the means of ``signals``."""
    arms: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("_judged") and r.get("paper") in papers:
            arms.setdefault(str(r.get("experiment_config") or r.get("experiment")), []).append(r)
    out = [f"{'experiment':<46} {'n':>2} {'top1 mean ± std':>16}  " + "  ".join(signals)]
    for exp, rs in sorted(arms.items()):
        top1 = [float(r["top1"]) for r in rs]
        std = statistics.stdev(top1) if len(top1) > 1 else float("nan")
        sig = []
        for s in signals:
            vals = [float(v) for r in rs if (v := (r.get("extra") or {}).get(s)) not in (None, "")]
            sig.append(f"{_mean(vals):>{len(s)}}")
        out.append(f"{exp:<46} {len(rs):>2} {statistics.fmean(top1):>8.2f} ± {std:<5.2f}  " + "  ".join(sig))
    return out


def claim_lines(rows: list[dict], papers=PAPERS) -> list[str]:
    refs = R.load_references()
    out = []
    for paper in papers:
        for claim in refs[paper].claims:
            res = R.evaluate_claim(claim, rows, refs[paper].conventions)
            out.append(f"{paper}:{claim.id} -> {res.status}")
            out += [f"    {ev}" for ev in res.evidence()]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", nargs="+", default=list(PAPERS))
    parser.add_argument("--signals", nargs="+", default=list(SIGNALS))
    parser.add_argument("--runs", default=str(R.RUNS_DIR), help="results folder (default: results/runs)")
    args = parser.parse_args(argv)
    rows = R.mark_judged(R.load_result_rows(args.runs))
    print("\n".join(arm_table(rows, args.papers, args.signals) + [""] + claim_lines(rows, args.papers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
