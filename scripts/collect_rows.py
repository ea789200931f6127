"""Bring the tracked rows a grid wrote in another checkout (a clean git worktree the reproduce scripts ran in) into
this one's results/runs/: every row of <other>/results/runs/<paper>.csv whose run id this checkout's file lacks is
appended (engine.results.append_row: locked, atomic, one row per run id; a missing file is created). Nothing is
judged here: the report judges each row by its own commit and config hash (engine/provenance.py).

Usage: python scripts/collect_rows.py <other checkout> [paper ...]     (default: every CSV there)
Then: python evaluate.py report, and commit the rows with the report (docs/run_queue.md)."""
import os
import sys

from engine.results import append_row, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collect(src_root: str, dst_root: str, papers: list[str] | None = None) -> dict[str, int]:
    """Append ``src_root``'s rows missing from ``dst_root`` (by run id); the number appended per CSV file."""
    src_dir, dst_dir = (os.path.join(r, "results", "runs") for r in (src_root, dst_root))
    if not os.path.isdir(src_dir):
        raise SystemExit(f"{src_dir}: no results/runs folder there (give the checkout the grid ran in)")
    names = [f"{p}.csv" for p in papers] if papers else sorted(n for n in os.listdir(src_dir) if n.endswith(".csv"))
    added = {}
    for name in names:
        src = os.path.join(src_dir, name)
        if not os.path.exists(src):
            raise SystemExit(f"{src}: no such results file (papers there: "
                             f"{sorted(n[:-4] for n in os.listdir(src_dir) if n.endswith('.csv'))})")
        dst = os.path.join(dst_dir, name)
        have = {r["run_id"] for r in read_rows(dst)} if os.path.exists(dst) else set()
        added[name] = sum(append_row(dst, row) for row in read_rows(src) if row["run_id"] not in have)
    return added


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for name, n in collect(argv[0], ROOT, argv[1:] or None).items():
        if n:
            print(f"{name}: +{n} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
