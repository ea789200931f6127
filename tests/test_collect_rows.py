"""scripts/collect_rows.py: rows a grid wrote in another checkout are appended here once each, files created as needed."""
import importlib.util
import os

import pytest

from engine.results import append_row, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("collect_rows", os.path.join(ROOT, "scripts", "collect_rows.py"))
collect_rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_rows)


def _row(run_id, **kw):
    return {"run_id": run_id, "experiment": "mnist_lenet5", "paper": "dns", "seed": 0, "top1": 99.1,
            "git_dirty": False, "extra": {"dns": {"fc1": 0.5}}, **kw}


def test_rows_missing_here_are_appended_once_and_new_files_created(tmp_path):
    src, dst = tmp_path / "wt", tmp_path / "main"
    for rid in ("a", "b"):
        append_row(str(src / "results" / "runs" / "dns.csv"), _row(rid))
    append_row(str(src / "results" / "runs" / "sketch.csv"), _row("s", paper="sketch"))
    append_row(str(dst / "results" / "runs" / "dns.csv"), _row("a"))
    assert collect_rows.collect(str(src), str(dst)) == {"dns.csv": 1, "sketch.csv": 1}
    assert collect_rows.collect(str(src), str(dst)) == {"dns.csv": 0, "sketch.csv": 0}   # run again: nothing new
    rows = read_rows(str(dst / "results" / "runs" / "dns.csv"))
    assert [r["run_id"] for r in rows] == ["a", "b"]
    assert rows[1]["extra"] == {"dns": {"fc1": 0.5}} and rows[1]["top1"] == "99.1"


def test_an_unknown_paper_or_folder_is_refused_naming_it(tmp_path):
    append_row(str(tmp_path / "wt" / "results" / "runs" / "dns.csv"), _row("a"))
    with pytest.raises(SystemExit, match=r"nat.csv: no such results file \(papers there: \['dns'\]\)"):
        collect_rows.collect(str(tmp_path / "wt"), str(tmp_path / "main"), ["nat"])
    with pytest.raises(SystemExit, match="no results/runs folder there"):
        collect_rows.collect(str(tmp_path / "nowhere"), str(tmp_path / "main"))
