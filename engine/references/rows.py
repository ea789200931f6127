"""Result rows as the judge reads them: a metric's value in base units, and every row of a results folder."""
from __future__ import annotations

import glob
import math
import os
from typing import Any

from engine.references.schema import FIDELITIES, RUNS_DIR, Conventions, PaperReference, ReferenceError, lookup

def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def row_value(row: dict, name: str, conv: Conventions | None = None) -> float | None:
    """A metric of a results row in base units (``%`` for accuracy, counts for complexity).

    ``top1_error`` = 100 − top1. ``flops`` follows the paper's convention (``macs`` -> our MACs column).
    Complexity from a row is our raw counter's (no BN/bias terms: they need the model). Anything else
    is read from the row's columns, then from its ``extra`` JSON (``extra.<name>`` also accepted).
    """
    if name.startswith("extra."):
        return _float((row.get("extra") or {}).get(name[6:]))
    if name in ("top1_error", "top5_error"):
        acc = _float(row.get(name[:4]))
        return None if acc is None else 100.0 - acc
    if name == "flops" and conv is not None and conv.flops == "macs":
        return _float(row.get("macs"))
    if name in row and name != "extra":
        return _float(row[name])
    return _float((row.get("extra") or {}).get(name))


def load_result_rows(directory: str | os.PathLike = RUNS_DIR,
                     refs: dict[str, PaperReference] | None = None) -> list[dict]:
    """All rows of ``directory/*.csv``; each gets ``_file`` and ``_line``. With ``refs``, a row whose
    ``reference`` names no entry, or whose ``fidelity`` is unknown, raises naming file, line and field."""
    from engine.results import read_rows
    rows = []
    for path in sorted(glob.glob(os.path.join(str(directory), "*.csv"))):
        for line, row in enumerate(read_rows(path), start=2):
            row["_file"], row["_line"] = path, line
            if row.get("fidelity") and row["fidelity"] not in FIDELITIES:
                raise ReferenceError(f"{path}, line {line}, run {row.get('run_id')!r}: field 'fidelity': unknown "
                                     f"value {row['fidelity']!r}; allowed: {list(FIDELITIES)}")
            if refs is not None and row.get("reference"):
                try:
                    lookup(refs, row["reference"])
                except ReferenceError as e:
                    raise ReferenceError(f"{path}, line {line}, run {row.get('run_id')!r}: field 'reference': "
                                         f"{e}") from None
            rows.append(row)
    return rows
