"""Results rows, checkpoints and curves survive kills and full disks: torn last lines set aside, failed writes
rolled back, stale temp files removed, re-run epochs not logged twice."""
import errno
import os
import subprocess
import sys

import pytest
import torch

from engine import checkpoint
from engine.loggers import CsvLogger
from engine.results import ResultsError, append_row, read_rows


def test_a_torn_last_line_is_ignored_by_readers_and_set_aside_by_the_next_writer(tmp_path, capsys):
    path = str(tmp_path / "rows.csv")
    append_row(path, {"run_id": "a", "top1": 90.0})
    with open(path, "a") as f:
        f.write("b,2026-11-30,half a ro")                  # a writer killed mid-row
    assert [r["run_id"] for r in read_rows(path)] == ["a"]
    assert "last line is a partial row" in capsys.readouterr().err
    assert append_row(path, {"run_id": "c", "top1": 91.0})
    assert [(r["run_id"], r["top1"]) for r in read_rows(path)] == [("a", "90.0"), ("c", "91.0")]
    assert open(path + ".torn").read() == "b,2026-11-30,half a ro\n"
    assert f"moved it to {path}.torn" in capsys.readouterr().err


def test_a_row_whose_run_id_is_in_the_file_is_not_appended_again(tmp_path):
    path = str(tmp_path / "rows.csv")
    assert append_row(path, {"run_id": "a", "top1": 90.0})
    assert not append_row(path, {"run_id": "a", "top1": 90.0})
    assert len(read_rows(path)) == 1


def test_a_full_disk_leaves_the_results_file_as_it_was(tmp_path, monkeypatch):
    path = str(tmp_path / "rows.csv")
    append_row(path, {"run_id": "a"})
    before = open(path).read()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ResultsError, match="cannot write a row to .*rows.csv: No space left on device"):
        append_row(path, {"run_id": "b"})
    assert open(path).read() == before


def test_a_failed_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(checkpoint.CheckpointError, match="cannot write checkpoint .*last.pt: No space left"):
        checkpoint.save_atomic({"w": torch.zeros(1000)}, str(tmp_path / "last.pt"))
    assert os.listdir(tmp_path) == []


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    path = str(tmp_path / "last.pt")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, live = f"{path}.tmp{dead.stdout.strip()}", f"{path}.tmp{os.getppid()}"
    for name in (stale, live):
        open(name, "wb").write(b"partial")
    checkpoint.save_atomic({"w": torch.ones(2)}, path)
    assert sorted(os.listdir(tmp_path)) == sorted(["last.pt", os.path.basename(live)])
    assert torch.equal(checkpoint.load(path)["w"], torch.ones(2))


def test_csv_logger_rewinds_to_the_checkpoint_and_drops_a_partial_line(tmp_path):
    logger = CsvLogger(str(tmp_path))
    for step in (1, 2, 3):
        logger.log({"train/loss": float(step)}, step)
    logger.finish()
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("4,train/lo")                              # killed mid-line
    logger = CsvLogger(str(tmp_path))
    logger.rewind(2)                                       # resumed from the checkpoint of step 2
    logger.log({"train/loss": 3.5}, 3)
    logger.finish()
    assert open(tmp_path / "metrics.csv").read().splitlines() == [
        "step,key,value", "1,train/loss,1.0", "2,train/loss,2.0", "3,train/loss,3.5"]
