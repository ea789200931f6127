"""scripts/run_queue.sh: grids run one after another in a clean worktree of HEAD, with their NAME=VALUE words."""
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_GRID = 'echo "$(basename "$PWD") MODELS=${MODELS:-unset} $(git rev-parse --short HEAD)" >> "$QUEUE_TEST_LOG"\n'


def _repo(tmp_path):
    """A tiny repository holding run_queue.sh and a fake grid that records where and with what it ran."""
    repo = tmp_path / "main"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "run_queue.sh"), repo / "scripts")
    (repo / "scripts" / "reproduce_fake.sh").write_text(FAKE_GRID)
    (repo / ".venv").mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "results").mkdir()
    (repo / "results" / "rows.csv").write_text("run_id\n")
    subprocess.run(git + ["add", "scripts", "results"], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    return repo


def _queue(repo, tmp_path, *words):
    env = {**os.environ, "RUNS_DIR": str(tmp_path / "runs"), "QUEUE_TEST_LOG": str(tmp_path / "log"),
           "DATA_ROOT": str(tmp_path)}
    return subprocess.run(["bash", str(repo / "scripts" / "run_queue.sh"), *words], env=env, capture_output=True,
                          text=True)


def test_grids_run_in_order_in_a_worktree_of_head_with_their_own_words(tmp_path):
    repo = _repo(tmp_path)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    out = _queue(repo, tmp_path, "MODELS=resnet56", "fake", "fake")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "log").read_text().splitlines() == [f"runs MODELS=resnet56 {head}", f"runs MODELS=unset {head}"]
    assert os.path.islink(tmp_path / "runs" / ".venv")
    assert out.stdout.count("=== ") == 4 and "end fake rc=0" in out.stdout


def test_unknown_grid_and_dirty_worktree_fail_naming_the_problem(tmp_path):
    repo = _repo(tmp_path)
    out = _queue(repo, tmp_path, "fkae")
    assert out.returncode == 2 and "no scripts/reproduce_fkae.sh" in out.stderr
    (tmp_path / "runs" / "scripts" / "reproduce_fake.sh").write_text("exit 0\n")
    out = _queue(repo, tmp_path, "fake")
    assert out.returncode == 1 and "uncommitted changes" in out.stderr and not (tmp_path / "log").exists()


def test_rows_appended_under_results_do_not_stop_a_restarted_queue(tmp_path):
    repo = _repo(tmp_path)
    assert _queue(repo, tmp_path, "fake").returncode == 0
    with open(tmp_path / "runs" / "results" / "rows.csv", "a") as rows:
        rows.write("abc123\n")
    out = _queue(repo, tmp_path, "fake")
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "log").read_text().splitlines()) == 2
