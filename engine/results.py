"""Result rows: one CSV row per finished run, appended atomically under a file lock.

Files: ``<results.dir>/<paper-or-experiment>.csv``. The header is fixed (``COLUMNS``); anything a method
adds goes into the ``extra`` column as JSON. Columns added later (``ADDED_COLUMNS``: ``map50``, a detector's
mAP@0.5) keep older files usable: a file written without them is read with them empty and appended to in its own
header (a row that has a value for a column its file lacks fails, naming the file). Parallel writers (multirun
jobs, DDP never: only rank 0 writes) serialize on ``<file>.lock``; a row is written with one ``write`` call and fsynced.

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
    "loss", "map50",
    "params", "macs", "flops", "bops", "ops", "size_bits", "sparsity", "nonzero_params", "counter", "input_res",
    "latency_ms", "latency_device", "wall_time_s", "device", "world_size", "global_batch",
    "git_sha", "git_dirty", "config_hash", "torch_version", "command", "extra",
]


ADDED_COLUMNS = ("map50",)   # absent from files written before they were added


def _older_layout(header: list[str]) -> bool:
    """``header`` is COLUMNS without (some of) the later-added columns."""
    return header == [c for c in COLUMNS if c in header] and set(COLUMNS) - set(header) <= set(ADDED_COLUMNS)


class ResultsError(ValueError):
    pass


def _encode(row: dict, columns: list[str] = COLUMNS) -> str:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ResultsError(f"result row has columns not in engine.results.COLUMNS: {sorted(unknown)}; "
                           "put method-specific numbers under 'extra'")
    values = dict(row)
    if isinstance(values.get("extra"), dict):
        values["extra"] = json.dumps(values["extra"], sort_keys=True, default=float)
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=columns, lineterminator="\n").writerow({k: values.get(k, "") for k in columns})
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
            header = _check_header(path)
            if header != COLUMNS:    # an older file: the row in its header, when it has nothing for the rest
                lost = [c for c in COLUMNS if c not in header and row.get(c) not in (None, "")]
                if lost:
                    raise ResultsError(f"{path} was written before column(s) {lost} existed and this row has them; "
                                       "write the row to another file (paths.results_dir) or migrate the old one")
                line = _encode(row, header)
            if row.get("run_id") and row["run_id"] in {r.get("run_id") for r in _records(path)}:
                return False
        _write_or_roll_back(path, (",".join(COLUMNS) + "\n" if new else "") + line)
        return True
    finally:
        lock.release()


def append_measurements(path: str, fields: list[str], rows: list[dict]) -> None:
    """Append ``rows`` to a measurement CSV (a probe's or benchmark's table under results/measurements, not run
    rows), writing the header ``fields`` when the file is new."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def update_row(path: str, run_id: str, fields: dict) -> None:
    """Set ``fields`` (columns of COLUMNS; ``extra`` a dict merged into the row's) on the row with ``run_id``, under
    the file's lock. Only that row's line changes (every other line keeps its bytes); the file is replaced
    atomically."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ResultsError(f"update_row: columns not in engine.results.COLUMNS: {sorted(unknown)}")
    with FileLock(path + ".lock"):
        header = _check_header(path)
        hits = [r for r in _records(path) if r.get("run_id") == run_id]
        with open(path, newline="") as f:
            lines = f.read().split("\n")
        at = [i for i, line in enumerate(lines) if line.startswith(f"{run_id},")]
        if len(hits) != 1 or len(at) != 1:
            raise ResultsError(f"{path}: {len(hits)} rows with run_id {run_id!r}, expected one")
        row = {k: hits[0][k] for k in header}
        if _encode(row, header).rstrip("\n") != lines[at[0]].rstrip("\r"):
            raise ResultsError(f"{path}: the row {run_id} does not re-encode to its own line (edited by hand?); "
                               "not rewriting it")
        if "extra" in fields:
            fields = {**fields, "extra": {**(json.loads(row["extra"]) if row.get("extra") else {}), **fields["extra"]}}
        lines[at[0]] = _encode({**row, **fields}, header).rstrip("\n")
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            f.write("\n".join(lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _check_header(path: str) -> list[str]:
    """The file's header: COLUMNS, or COLUMNS without the later-added ones (an older file)."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if header != COLUMNS and not _older_layout(header):
        missing = [c for c in COLUMNS if c not in header]
        raise ResultsError(f"{path}: header differs from engine.results.COLUMNS (missing {missing}); "
                           "move the old file aside or migrate it")
    return header


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
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in ADDED_COLUMNS]
    if missing:
        raise ResultsError(f"{path}: missing columns {missing}")
    rows = []
    for row in reader:
        if None in row or None in row.values():
            raise ResultsError(f"{path}, line {reader.line_num}: {len(row.get(None) or []) + len(reader.fieldnames)} "
                               f"fields where the header has {len(reader.fieldnames)} (two rows glued together?); fix or "
                               "remove it")
        rows.append({**dict.fromkeys(ADDED_COLUMNS, ""), **row})
    return rows


def from_clean_commit(row: dict) -> bool:
    """The row was made from committed code (``git_dirty`` false, however the CSV spelled it)."""
    return str(row.get("git_dirty")).lower() in ("false", "0")


def clean_rows_of(path: str, experiment: str, seed, config_hash: str) -> list[dict]:
    """Rows of ``path`` (none when the file is missing) from a clean commit for this experiment name, seed and
    config hash, oldest first: the rows a resumable grid or a calibration counts as already run."""
    if not os.path.exists(path):
        return []
    return [r for r in read_rows(path) if r["experiment"] == experiment and str(r["seed"]) == str(seed)
            and r["config_hash"] == config_hash and from_clean_commit(r)]


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
