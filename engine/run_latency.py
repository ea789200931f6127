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

    python -m engine.run_latency --rows results/runs/dns.csv

Rows whose run folder is gone: for methods whose trained state changes weight VALUES only, never the computation
(``ARCHITECTURE_FROM_CONFIG``: dense baselines, DNS masks, INQ levels; all run on the dense kernels), the model is
rebuilt untrained from the row's experiment file at the row's seed and timed the same way. Only rows whose file
still composes to the row's config hash are filled, and ``latency_device`` says the model was rebuilt untrained.
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
from engine.references.experiments import compose_experiment
from engine.runner import measured_latency, results_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    return _timed(model, method, blob["config"]["data"])


def _timed(model, method, data) -> dict:
    """``measured_latency`` of ``method``'s deployed form of ``model`` at the run config's input size."""
    return measured_latency(*method.deployed(model.eval()),
                            (int(data["in_channels"]), int(data["image_size"]), int(data["image_size"])))


def _write_latency(csv_path: str, run_id: str, lat: dict, how: str) -> None:
    """Set the row's latency columns (and ``extra.latency``), saying ``how`` it was measured, when and at which
    commit; nothing else in the row changes."""
    sha, dirty = provenance.git_info()
    when = f"measured after the run {how} ({date.today().isoformat()}, commit {sha[:7]}{', dirty' if dirty else ''})"
    update_row(csv_path, run_id, {"latency_ms": lat["latency_ms"], "latency_device": f"{lat['device']}; {when}",
                                  "extra": {"latency": {**lat, "measured_after_run": when}}})


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
    _write_latency(csv_path, run_id, lat, "from its final.pt")
    return lat


ARCHITECTURE_FROM_CONFIG = ("baseline", "dns", "inq")


def why_not_rebuildable(row: dict) -> str:
    """"" when the row's model can be rebuilt untrained from its experiment file and timed, else why not."""
    if row["method"] not in ARCHITECTURE_FROM_CONFIG:
        return (f"method {row['method']}: its trained state fixes the architecture (give the run folder instead); "
                f"rebuilt untrained only: {', '.join(ARCHITECTURE_FROM_CONFIG)}")
    if not row.get("experiment_config"):
        return "no experiment file recorded"
    if not os.path.exists(os.path.join(ROOT, "conf", "experiment", f"{row['experiment_config']}.yaml")):
        return f"conf/experiment/{row['experiment_config']}.yaml no longer exists"
    return ""


def fill_rows_from_experiments(csv_path: str, force: bool = False) -> list[tuple[str, str]]:
    """Latency for the rows of ``csv_path`` that have none (every row with ``force``), each timed on its model rebuilt
    untrained from its experiment file; returns (run id, what happened) per row considered."""
    done = []
    for row in read_rows(csv_path):
        if row.get("latency_ms") and not force:
            continue
        why = why_not_rebuildable(row)
        cfg = None if why else compose_experiment(row["experiment_config"], row["seed"])
        current = cfg is not None and provenance.config_hash(cfg)
        if current and current != row["config_hash"]:
            why = (f"conf/experiment/{row['experiment_config']}.yaml composes to another config hash now "
                   f"({current} vs the row's {row['config_hash']})")
        if why:
            done.append((row["run_id"], f"skipped: {why}"))
            continue
        model, method = rebuild_model(OmegaConf.to_container(cfg, resolve=True), None)
        lat = _timed(model, method, cfg.data)
        _write_latency(csv_path, row["run_id"], lat,
                       f"on its model rebuilt untrained from conf/experiment/{row['experiment_config']}.yaml; "
                       f"{row['method']} runs the dense kernels, so the weights' values do not change the time")
        done.append((row["run_id"], f"{lat['latency_ms']:.3f} ms at batch 1, {lat['latency_ms_b64']:.2f} ms at "
                                    f"batch 64"))
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.run_latency", description=__doc__.split("\n")[0])
    ap.add_argument("run_dirs", nargs="*", help="folders of finished train.py runs (holding final.pt and row.json)")
    ap.add_argument("--results-dir", help="the folder of the rows' CSVs (default: each run's paths.results_dir)")
    ap.add_argument("--rows", metavar="CSV", help="a results CSV: fill its rows without latency whose model rebuilds "
                                                  "untrained from the experiment file (run folders gone)")
    ap.add_argument("--force", action="store_true", help="measure again where a row already has a latency")
    args = ap.parse_args(argv)
    if not args.run_dirs and not args.rows:
        ap.error("give run folders, or --rows <results CSV>")
    if args.rows:
        for run_id, what in fill_rows_from_experiments(args.rows, args.force):
            print(f"{run_id}: {what}", flush=True)
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
