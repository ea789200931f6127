import multiprocessing as mp

import pytest

from engine.results import COLUMNS, ResultsError, append_row, clean_rows_of, read_rows


def _writer(path, worker, n):
    for i in range(n):
        append_row(path, {"run_id": f"w{worker}-{i}", "command": "x" * 2000, "top1": worker + i / 100,
                          "extra": {"worker": worker, "i": i, "note": "comma, quote \" and\nnewline"}})


def test_eight_parallel_writers_lose_and_tear_no_row(tmp_path):
    path = str(tmp_path / "runs" / "p.csv")
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w, 25)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = read_rows(path)
    assert len(rows) == 200
    assert sorted(r["run_id"] for r in rows) == sorted(f"w{w}-{i}" for w in range(8) for i in range(25))
    assert all(r["command"] == "x" * 2000 and r["extra"]["note"] == "comma, quote \" and\nnewline" for r in rows)
    assert open(path).read().count(",".join(COLUMNS)) == 1


def test_unknown_column_is_refused(tmp_path):
    with pytest.raises(ResultsError, match="latency"):
        append_row(str(tmp_path / "a.csv"), {"latency": 3})


def test_a_file_with_another_header_is_not_appended_to(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("run_id,top1\nabc,1\n")
    with pytest.raises(ResultsError, match="missing"):
        append_row(str(path), {"run_id": "x"})
    with pytest.raises(ResultsError, match=r"old.csv: missing columns"):
        read_rows(str(path))


def test_clean_rows_of_counts_only_committed_rows_of_that_experiment_seed_and_hash(tmp_path):
    path = str(tmp_path / "p.csv")
    assert clean_rows_of(path, "a", 0, "h1") == []          # no file yet: nothing has run
    base = {"experiment": "a", "seed": 0, "config_hash": "h1", "git_dirty": False}
    for run_id, change in [("ok", {}), ("dirty", {"git_dirty": True}), ("unknown", {"git_dirty": ""}),
                           ("other_seed", {"seed": 1}), ("old_hash", {"config_hash": "h0"}),
                           ("other_exp", {"experiment": "b"}), ("ok2", {})]:
        append_row(path, {**base, **change, "run_id": run_id})
    assert [r["run_id"] for r in clean_rows_of(path, "a", "0", "h1")] == ["ok", "ok2"]
