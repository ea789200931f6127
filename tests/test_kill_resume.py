"""A run killed (SIGKILL) at any point and resumed ends with the weights of an uninterrupted run, bit for bit,
exactly one results row, no temp files left and no point logged twice.

Each kill happens in a child process (from a fork server: a plain fork of pytest, which runs threads, can deadlock)
that patches one place of the engine to kill itself the n-th time it gets there; the parent then resumes the run in-process with ``trainer.resume=auto`` (or a checkpoint path).
"""
import csv
import glob
import io
import itertools
import multiprocessing
import os
import signal

import pytest
import torch

import engine.checkpoint
import engine.results
import engine.runner
from engine.results import append_row, read_rows
from engine.runner import run

TINY = ["data=synthetic", "data.train_size=64", "data.test_size=32", "data.image_size=8", "data.in_channels=1",
        "data.mean=[0.5]", "data.std=[0.25]", "model=lenet300_100", "trainer.epochs=3", "trainer.batch_size=16",
        "trainer.eval_batch_size=32", "trainer.optimizer.lr=0.05", "logger=csv", "trainer.log_every=1"]
FOREIGN_ROW = {"run_id": "another-run", "experiment": "another", "top1": 50.0}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(point: str, n: int) -> None:
    """Make the n-th arrival at ``point`` kill this process."""
    arrivals = itertools.count(1)

    def nth() -> bool:
        return next(arrivals) == n

    if point == "optimizer_step":
        step = torch.optim.SGD.step
        torch.optim.SGD.step = lambda self, *a, **k: die() if nth() else step(self, *a, **k)
    elif point == "checkpoint_write":          # half of the checkpoint bytes are in the temp file
        save = torch.save

        def torn_save(obj, f, *a, **k):
            if not nth():
                return save(obj, f, *a, **k)
            buffer = io.BytesIO()
            save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()

        engine.checkpoint.torch.save = torn_save
    elif point == "checkpoint_rename":         # the temp file is whole, the rename has not happened
        replace = os.replace
        engine.checkpoint.os.replace = lambda src, dst: die() if dst.endswith(".pt") and nth() else replace(src, dst)
    elif point == "before_row":                # row.json written, nothing appended
        append = engine.runner.append_row
        engine.runner.append_row = lambda path, row: die() if nth() else append(path, row)
    elif point in ("row_write", "after_row"):  # half a row on disk / the whole row, but no row_written marker
        write = engine.results._write_or_roll_back

        def killed_write(path, text):
            if point == "after_row":
                write(path, text)
            else:
                with open(path, "a") as f:
                    f.write(text[: len(text) // 2])
            die()

        engine.results._write_or_roll_back = killed_write
    else:
        raise ValueError(point)


def _killed_child(cfg: dict, point: str, n: int) -> None:
    from omegaconf import OmegaConf

    torch.set_num_threads(1)
    install_kill(point, n)
    try:
        run(OmegaConf.create(cfg))
    finally:
        os._exit(3)        # reached only if the kill point was never reached


def killed_run(cfg, point: str, n: int) -> None:
    """Run ``cfg`` in a child process that kills itself at ``point``; fails if the child was not killed."""
    from omegaconf import OmegaConf

    context = multiprocessing.get_context("forkserver")   # one clean server process forks the children
    context.set_forkserver_preload(["torch", "engine.runner"])
    child = context.Process(
        target=_killed_child, args=(OmegaConf.to_container(cfg, resolve=True), point, n))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, f"{point}:{n} did not kill the run (exit code {child.exitcode})"


def final_weights(output_dir: str) -> dict:
    (path,) = glob.glob(os.path.join(output_dir, "**", "final.pt"), recursive=True)
    return engine.checkpoint.load(path)["model"]


def logged_points(output_dir: str) -> list[tuple[str, str]]:
    """The (step, key) pairs of the run's metrics.csv, sorted."""
    (path,) = glob.glob(os.path.join(output_dir, "**", "metrics.csv"), recursive=True)
    with open(path, newline="") as f:
        return sorted((r["step"], r["key"]) for r in csv.DictReader(f))


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Every part of every run on one thread (the killed child, the resume, the reference): bit-identical weights
    need the same float reduction order, whatever thread count earlier tests left behind."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Final weights and logged points of the uninterrupted run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import CONF

    out = tmp_path_factory.mktemp("reference")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=TINY + [f"paths.output_dir={out}", f"paths.results_dir={out}",
                                                              "trainer.device=cpu", "trainer.progress=false"])
    GlobalHydra.instance().clear()
    run(cfg)
    return {"weights": final_weights(str(out)), "points": logged_points(str(out))}


# (place, n-th arrival): 3 epochs x 4 steps; checkpoint saves: last.pt per epoch, trained.pt, final.pt
KILLS = [("optimizer_step", 6), ("checkpoint_write", 2), ("checkpoint_write", 5), ("checkpoint_rename", 3),
         ("checkpoint_rename", 4), ("before_row", 1), ("row_write", 1), ("after_row", 1)]


@pytest.mark.parametrize("point,n", KILLS, ids=[f"{p}-{n}" for p, n in KILLS])
def test_killed_run_resumes_to_the_same_weights_and_one_row(compose, reference, point, n):
    cfg = compose(TINY)
    csv_path = engine.runner.results_path(cfg)
    append_row(csv_path, FOREIGN_ROW)          # a row of another run is already in the file
    killed_run(cfg, point, n)
    run(compose(TINY))
    weights, expected = final_weights(cfg.paths.output_dir), reference["weights"]
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    rows = read_rows(csv_path)
    assert [r["run_id"] for r in rows][0] == "another-run" and len(rows) == 2 and rows[1]["epochs"] == "3"
    assert not glob.glob(os.path.join(cfg.paths.output_dir, "**", "*.tmp*"), recursive=True)
    assert os.path.exists(csv_path + ".torn") == (point == "row_write")
    assert logged_points(cfg.paths.output_dir) == reference["points"]     # re-run epochs are not logged twice


def test_resume_from_a_checkpoint_path_continues_that_run(compose, reference, tmp_path):
    cfg = compose(TINY)
    killed_run(cfg, "optimizer_step", 7)
    (last,) = glob.glob(os.path.join(cfg.paths.output_dir, "**", "last.pt"), recursive=True)
    elsewhere = compose(TINY + [f"paths.output_dir={tmp_path}/elsewhere", f"trainer.resume={last}"])
    run(elsewhere)
    weights = final_weights(cfg.paths.output_dir)           # finished in the folder of the checkpoint it was given
    assert all(torch.equal(weights[k], reference["weights"][k]) for k in reference["weights"])
    assert not os.path.exists(f"{tmp_path}/elsewhere")
    assert len(read_rows(engine.runner.results_path(cfg))) == 1
