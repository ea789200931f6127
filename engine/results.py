"""Result rows: one CSV row per finished run, appended atomically under a file lock.

Files: ``<results.dir>/<paper-or-experiment>.csv``. The header is fixed (``COLUMNS``); anything a method
adds goes into the ``extra`` column as JSON. Parallel writers (multirun jobs, DDP never: only rank 0
writes) serialize on ``<file>.lock``; a row is written with one ``write`` call and fsynced, so no row
is torn or lost.
"""
from __future__ import annotations

import csv
import io
import json
import os

from filelock import FileLock

COLUMNS = [
    "run_id", "timestamp", "experiment", "reference", "paper", "dataset", "model", "method", "variant",
    "fidelity", "seed", "epochs", "steps", "top1", "top5", "best_top1", "best_or_last", "loss",
    "params", "macs", "flops", "bops", "ops", "size_bits", "sparsity", "nonzero_params", "counter", "input_res",
    "latency_ms", "latency_device", "wall_time_s", "device", "world_size", "global_batch",
    "git_sha", "git_dirty", "config_hash", "torch_version", "command", "extra",
]


class ResultsError(ValueError):
    pass


def _encode(row: dict) -> str:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ResultsError(f"result row has columns not in engine.results.COLUMNS: {sorted(unknown)}; "
                           "put method-specific numbers under 'extra'")
    values = dict(row)
    if isinstance(values.get("extra"), dict):
        values["extra"] = json.dumps(values["extra"], sort_keys=True, default=float)
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writerow({k: values.get(k, "") for k in COLUMNS})
    return buf.getvalue()


def append_row(path: str, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` (header written if new), atomically under a lock."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    line = _encode(row)
    with FileLock(path + ".lock"):
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        if not new:
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            if header != COLUMNS:
                missing = [c for c in COLUMNS if c not in header]
                raise ResultsError(f"{path}: header differs from engine.results.COLUMNS (missing {missing}); "
                                   "move the old file aside or migrate it")
        with open(path, "a", newline="") as f:
            f.write((",".join(COLUMNS) + "\n" if new else "") + line)
            f.flush()
            os.fsync(f.fileno())


def read_rows(path: str) -> list[dict]:
    """Rows of a results CSV as dicts (``extra`` decoded); fails naming the file and the missing columns."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ResultsError(f"{path}: missing columns {missing}")
        rows = []
        for i, row in enumerate(reader, start=2):
            try:
                row["extra"] = json.loads(row["extra"]) if row.get("extra") else {}
            except json.JSONDecodeError as e:
                raise ResultsError(f"{path}, line {i}: column 'extra' is not JSON ({e})") from e
            rows.append(row)
    return rows
