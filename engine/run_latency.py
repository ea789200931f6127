"""Latency of a finished run, measured afterwards from its checkpoint and written into its row.

    python -m engine.run_latency outputs/<name>/<hash>-seed<s> [...] [--results-dir results/runs]

A run trained with ``trainer.latency=false`` (or before the key existed) has empty ``latency_ms`` /
``latency_device`` columns. This rebuilds the run's model from its ``final.pt`` (config, weights and method state),
measures its method's deployed form (``Method.deployed``) as a run does (``engine.runner.measured_latency``: batch 1
and 64, one thread, median of repeated runs) and sets the two columns on the run's own row (its run id, from
``row.json`` in the run folder), saying in ``latency_device`` that the number was measured after the run, when and
at which commit; ``extra.latency`` gets the batch-64 figure too. Nothing else in the row changes. A row that already
has a latency is left alone unless ``--force``. Run it while nothing else loads the CPU (``flock`` on the queue's
lock file, as the reproduce scripts do).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date

from omegaconf import OmegaConf

from engine import checkpoint, provenance
from engine.results import ResultsError, read_rows, update_row
from engine.binary_export import rebuild_model
from engine.runner import measured_latency, results_path


def run_files(run_dir: str) -> tuple[str, str]:
    final, staged = os.path.join(run_dir, "final.pt"), os.path.join(run_dir, "row.json")
    for path in (final, staged):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist: give the folder of a finished train.py run "
                                    "(outputs/<name>/<hash>-seed<seed>)")
    return final, staged


def deployed_latency(blob: dict, final_path: str) -> dict:
    """``measured_latency`` of the deployed form of the model in a run's loaded ``final.pt`` (``blob``)."""
    model, method = rebuild_model(blob["config"], blob.get("method"))
    checkpoint.load_weights(model, blob, final_path, str(blob["config"]["model"]["name"]))
    data = blob["config"]["data"]
    return measured_latency(*method.deployed(model.eval()),
                            (int(data["in_channels"]), int(data["image_size"]), int(data["image_size"])))


def fill_row_latency(run_dir: str, results_dir: str | None = None, force: bool = False) -> dict | None:
    """Measure the run in ``run_dir`` and write its row's latency; returns the latency, or None when the row already
    had one (and not ``force``). ``results_dir``: where the row's CSV lives (default: the run's own
    ``paths.results_dir``)."""
    final, staged = run_files(run_dir)
    with open(staged) as f:
        run_id = json.load(f)["run_id"]
    blob = checkpoint.load(final)
    cfg = OmegaConf.create(blob["config"])
    csv_path = results_path(cfg)
    if results_dir is not None:
        csv_path = os.path.join(results_dir, os.path.basename(csv_path))
    if not os.path.exists(csv_path):
        raise FileNotFoundError(f"{csv_path} does not exist: pass --results-dir, the folder holding the run's rows")
    row = next((r for r in read_rows(csv_path) if r["run_id"] == run_id), None)
    if row is None:
        raise ResultsError(f"{csv_path} has no row with run id {run_id} (from {staged}); collect the run's row first")
    if row.get("latency_ms") and not force:
        return None
    lat = deployed_latency(blob, final)
    sha, dirty = provenance.git_info()
    when = f"measured after the run from its final.pt ({date.today().isoformat()}, commit {sha[:7]}" \
           f"{', dirty' if dirty else ''})"
    update_row(csv_path, run_id, {"latency_ms": lat["latency_ms"], "latency_device": f"{lat['device']}; {when}",
                                  "extra": {"latency": {**lat, "measured_after_run": when}}})
    return lat


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.run_latency", description=__doc__.split("\n")[0])
    ap.add_argument("run_dirs", nargs="+", help="folders of finished train.py runs (holding final.pt and row.json)")
    ap.add_argument("--results-dir", help="the folder of the rows' CSVs (default: each run's paths.results_dir)")
    ap.add_argument("--force", action="store_true", help="measure again where a row already has a latency")
    args = ap.parse_args(argv)
    for run_dir in args.run_dirs:
        lat = fill_row_latency(run_dir, args.results_dir, args.force)
        print(f"{run_dir}: " + ("row already has a latency (--force measures again)" if lat is None else
                                f"{lat['latency_ms']:.2f} ms at batch 1, {lat['latency_ms_b64']:.1f} ms at batch 64 "
                                f"({lat['device']})"), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
