"""A finished run's latency measured afterwards (engine/run_latency.py) lands in its own row and nowhere else."""
import glob
import os

import pytest

from engine.results import ResultsError, append_row, read_rows, update_row
from engine.run_latency import fill_row_latency, main
from methods.common import packed_binary

LATENCY_KEYS = ("latency_ms", "latency_device", "extra")


def _tiny_pa_run(compose, tmp_path):
    from engine.runner import run
    cfg = compose(["method=pa", "method.M=2", "method.N=2", "model=resnet20", "data=synthetic", "data.image_size=8",
                   "data.train_size=16", "data.test_size=8", "trainer.batch_size=8", "trainer.eval_batch_size=8",
                   "trainer.epochs=1", "trainer.max_steps=1"])
    run(cfg)
    (final,) = glob.glob(str(tmp_path / "outputs" / "**" / "final.pt"), recursive=True)
    return os.path.dirname(final), str(tmp_path / "results" / "synthetic_resnet20_pa.csv")


@pytest.mark.skipif(not packed_binary.available(), reason=packed_binary.MISSING)
def test_latency_of_a_finished_run_fills_its_row_only(compose, tmp_path):
    run_dir, csv_path = _tiny_pa_run(compose, tmp_path)
    append_row(csv_path, {"run_id": "other", "top1": 1.0})            # a neighbour row keeps its bytes
    (before,) = [r for r in read_rows(csv_path) if r["run_id"] != "other"]
    assert before["latency_ms"] == ""
    other_line = open(csv_path).read().splitlines()[2]
    lat = fill_row_latency(run_dir)
    (after,) = [r for r in read_rows(csv_path) if r["run_id"] == before["run_id"]]
    assert float(after["latency_ms"]) == lat["latency_ms"] > 0
    assert after["latency_device"].startswith(lat["device"]) and "packed xnor-popcount, M=2 x N=2" in lat["device"]
    assert "measured after the run from its final.pt" in after["latency_device"]
    assert after["extra"]["latency"]["latency_ms_b64"] == lat["latency_ms_b64"]
    assert {k: v for k, v in after["extra"].items() if k != "latency"} == before["extra"]
    assert {k: v for k, v in after.items() if k not in LATENCY_KEYS} == \
        {k: v for k, v in before.items() if k not in LATENCY_KEYS}
    assert open(csv_path).read().splitlines()[2] == other_line
    assert fill_row_latency(run_dir) is None                          # measured once unless forced


def test_a_folder_without_a_finished_run_is_one_line_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="final.pt does not exist: give the folder of a finished"):
        main([str(tmp_path)])


def test_update_row_changes_one_line_and_keeps_crlf_neighbours(tmp_path):
    path = str(tmp_path / "rows.csv")
    for rid in ("a", "b", "c"):
        append_row(path, {"run_id": rid, "top1": 90.0, "extra": {"k": 1}})
    lines = open(path, newline="").read().split("\n")
    lines[1] += "\r"                                                    # a line written with CRLF elsewhere
    open(path, "w", newline="").write("\n".join(lines))
    update_row(path, "b", {"latency_ms": 2.5, "extra": {"latency": {"latency_ms": 2.5}}})
    new = open(path, newline="").read().split("\n")
    assert new[:2] == lines[:2] and new[3:] == lines[3:]
    rows = {r["run_id"]: r for r in read_rows(path)}
    assert rows["b"]["latency_ms"] == "2.5" and rows["b"]["extra"] == {"k": 1, "latency": {"latency_ms": 2.5}}
    with pytest.raises(ResultsError, match="0 rows with run_id 'zz'"):
        update_row(path, "zz", {"latency_ms": 1})
    with pytest.raises(ResultsError, match="not in engine.results.COLUMNS"):
        update_row(path, "a", {"speed": 1})


def test_rows_without_run_folder_are_timed_on_their_model_rebuilt_from_the_experiment_file(tmp_path):
    """--rows: only rows whose method's trained state changes weight values only, and whose experiment file still
    composes to the row's config hash, get a latency (labelled as rebuilt untrained); the others say why not."""
    from engine.provenance import config_hash
    from engine.references.experiments import compose_experiment
    from engine.run_latency import fill_rows_from_experiments
    base = {"experiment_config": "dns/mnist_lenet5", "seed": 1, "method": "dns", "git_dirty": False}
    current = config_hash(compose_experiment("dns/mnist_lenet5", 1))
    path = str(tmp_path / "dns.csv")
    for run_id, change in [("now", {"config_hash": current}), ("old", {"config_hash": "0123456789ab"}),
                           ("searched", {"config_hash": current, "method": "ucp"}),
                           ("timed", {"config_hash": current, "latency_ms": 9.0, "latency_device": "cpu"})]:
        append_row(path, {**base, **change, "run_id": run_id})
    done = dict(fill_rows_from_experiments(path))
    assert set(done) == {"now", "old", "searched"}
    assert done["old"].startswith("skipped: conf/experiment/dns/mnist_lenet5.yaml composes to another config hash")
    assert done["searched"].startswith("skipped: method ucp: its trained state fixes the architecture")
    rows = {r["run_id"]: r for r in read_rows(path)}
    assert float(rows["now"]["latency_ms"]) > 0 and rows["old"]["latency_ms"] == "" == rows["searched"]["latency_ms"]
    assert "rebuilt untrained from conf/experiment/dns/mnist_lenet5.yaml" in rows["now"]["latency_device"]
    assert rows["now"]["extra"]["latency"]["latency_ms_b64"] > 0
    assert rows["timed"]["latency_ms"] == "9.0"
