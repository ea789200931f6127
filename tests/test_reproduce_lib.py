"""scripts/reproduce_lib.sh: what the reproduce grids run, as their DRY=1 listing shows it."""
import os
import subprocess
import sys

from engine.provenance import is_computational

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry(grid: str, *seeds: str, results_dir: str) -> list[str]:
    """The runs the grid would start against the rows in results_dir (an empty folder: every run of those seeds)."""
    env = {**os.environ, "DRY": "1", "PY": sys.executable, "RESULTS_DIR": results_dir}
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", f"reproduce_{grid}.sh"), *seeds], env=env,
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.startswith("run  train.py")]


def test_grid_training_runs_measure_latency_with_a_judged_override(tmp_path):
    runs = _dry("aip", "0", results_dir=str(tmp_path))
    assert [r.split()[2] for r in runs] == [f"aip/cifar10_jpeg_resnet56_{a}" for a in ("aip", "no_disc", "no_kt")]
    assert all(r.endswith("seed=0 trainer.latency=true") for r in runs)
    assert not is_computational("trainer.latency")   # so these rows stay judged


def test_detection_grid_turns_latency_off(tmp_path):
    runs = _dry("detection", "0", results_dir=str(tmp_path))
    assert runs and all(r.endswith("trainer.latency=false") for r in runs)
