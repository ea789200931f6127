"""Result rows: one CSV row per finished run, appended atomically under a file lock.

Files: ``<results.dir>/<paper-or-experiment>.csv``. The header is fixed (``COLUMNS``); anything a method
adds goes into the ``extra`` column as JSON. Parallel writers (multirun jobs, DDP never: only rank 0
writes) serialize on ``<file>.lock``; a row is written with one ``write`` call and fsynced.

Each row exactly once: a run fixes its row (and run id) once in its run folder (``staged_row``), and
``append_row`` skips a row whose run id the file already holds, so a run killed after appending and resumed
does not append again. A writer killed mid-row (or a full disk) leaves a last line without its newline: the
next ``append_row`` moves that partial line to ``<file>.torn`` with a warning instead of gluing a row onto it;
``read_rows`` ignores it with the same warning. A failed write is rolled back.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys

from filelock import FileLock

COLUMNS = [
    "run_id", "timestamp", "experiment", "experiment_config", "reference", "paper", "dataset", "model", "method",
    "variant", "fidelity", "fidelity_note", "seed", "epochs", "steps", "top1", "top5", "best_top1", "best_or_last",
    "loss",
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


def append_row(path: str, row: dict) -> bool:
    """Append ``row`` to the CSV at ``path`` (header written if new), atomically under a lock; False (nothing
    written) when the file already holds a row with this ``run_id``."""
    line = _encode(row)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        lock = FileLock(path + ".lock")
        lock.acquire()
    except OSError as e:
        raise ResultsError(f"cannot write results to {path}: {e.strerror} (set paths.results_dir to a writable "
                           "folder)") from e
    try:
        if os.path.exists(path):
            _set_aside_torn_tail(path)
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        if not new:
            _check_header(path)
            if row.get("run_id") and row["run_id"] in {r.get("run_id") for r in _records(path)}:
                return False
        _write_or_roll_back(path, (",".join(COLUMNS) + "\n" if new else "") + line)
        return True
    finally:
        lock.release()


def _check_header(path: str) -> None:
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        raise ResultsError(f"{path}: header differs from engine.results.COLUMNS (missing {missing}); "
                           "move the old file aside or migrate it")


def _write_or_roll_back(path: str, text: str) -> None:
    """Append ``text`` with one write and fsync; on failure cut the file back to its old length."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with open(path, "a", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if os.path.exists(path):
            os.truncate(path, size)
        raise ResultsError(f"cannot write a row to {path}: {e.strerror} (check free disk space and that the "
                           "folder is writable); the file is unchanged") from e


def _set_aside_torn_tail(path: str) -> None:
    """A last line without its newline (a killed writer, a full disk) is moved to ``<path>.torn``."""
    with open(path, "rb") as f:
        data = f.read()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path + ".torn", "ab") as f:
        f.write(data[keep:] + b"\n")
    os.truncate(path, keep)
    _warn(f"{path} ended with a partial row (a writer was killed or the disk was full); moved it to {path}.torn")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _records(path: str) -> list[dict]:
    """The file's complete rows as raw dicts (a torn last line is left out with a warning)."""
    with open(path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        _warn(f"{path}: the last line is a partial row (no newline; a writer was killed); ignored here, the next "
              f"append moves it to {path}.torn")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ResultsError(f"{path}: missing columns {missing}")
    rows = []
    for row in reader:
        if None in row or None in row.values():
            raise ResultsError(f"{path}, line {reader.line_num}: {len(row.get(None) or []) + len(COLUMNS)} fields "
                               f"where the header has {len(COLUMNS)} (two rows glued together?); fix or remove it")
        rows.append(row)
    return rows


def read_rows(path: str) -> list[dict]:
    """Rows of a results CSV as dicts (``extra`` decoded); fails naming the file and the missing columns."""
    rows = _records(path)
    for i, row in enumerate(rows, start=2):
        try:
            row["extra"] = json.loads(row["extra"]) if row.get("extra") else {}
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}, row {i - 1}: column 'extra' is not JSON ({e})") from e
    return rows


def staged_row(path: str, make_row) -> dict:
    """The run's row, made once: saved as JSON at ``path`` (in the run folder) the first time, read back after a
    resume, so the row and its ``run_id`` stay the same and ``append_row`` can tell it is already written."""
    if os.path.exists(path):    # written whole (temp file, then rename)
        with open(path) as f:
            return json.load(f)
    row = make_row()
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(row, f, default=float)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ResultsError(f"cannot write {path}: {e.strerror} (check free disk space)") from e
    return row
