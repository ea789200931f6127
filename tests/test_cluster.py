"""Hydra launchers and sweepers (the ``cluster`` extra, installed by ``make install``): a joblib multirun of two jobs,
the SLURM launcher config and the submitit parameters it yields, a 3-trial Optuna search. Synthetic data."""
import glob
import os
import subprocess
import sys

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from conftest import CONF, ROOT
from engine.results import read_rows

TINY = ["data=synthetic", "data.train_size=64", "data.test_size=32", "data.in_channels=1", "data.image_size=8",
        "data.mean=[0.5]", "data.std=[0.25]", "model=lenet300_100", "trainer.epochs=1", "trainer.batch_size=16",
        "trainer.eval_batch_size=32", "trainer.device=cpu", "trainer.progress=false", "logger=none",
        "trainer.num_threads=1"]


def train(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RESULTS_DIR"}
    env.update(OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    done = subprocess.run([sys.executable, "train.py", *args, *TINY, f"paths.output_dir={tmp_path}/out"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_joblib_multirun_runs_two_jobs_in_parallel(tmp_path):
    train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1")
    (csv_path,) = glob.glob(f"{tmp_path}/out/results/*.csv")
    assert sorted(int(r["seed"]) for r in read_rows(csv_path)) == [0, 1]


def test_slurm_launcher_config_yields_the_submitit_parameters(tmp_path, monkeypatch):
    import submitit

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                                 "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90"])
    GlobalHydra.instance().clear()
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = launcher.params
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"], params["partition"]) == (2, 4, 4, "gpu")
    # what the launcher hands submitit (hydra_submitit_launcher's own mapping) is accepted, and the sbatch script
    # submitit would submit asks for those resources (no cluster: srun's presence check is stubbed)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = submitit.AutoExecutor(folder=str(tmp_path), cluster="slurm", slurm_max_num_timeout=3)
    base = ("timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
            "stderr_to_stdout")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    sbatch = executor._executor._make_submission_file_text("python train.py", "0")
    for line in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--time=90", "--partition=gpu",
                 "--cpus-per-task=8"):
        assert f"#SBATCH {line}" in sbatch, sbatch


def test_optuna_search_runs_three_trials(tmp_path):
    train(tmp_path, "hparams_search=mnist_lenet5_lr", "hydra.sweeper.n_trials=3",
          f"hydra.sweep.dir={tmp_path}/sweep")
    best = yaml.safe_load(open(f"{tmp_path}/sweep/optimization_results.yaml"))
    assert set(best["best_params"]) == {"trainer.optimizer.lr", "trainer.optimizer.weight_decay"}
    assert 0 <= best["best_value"] <= 100
    (csv_path,) = glob.glob(f"{tmp_path}/out/results/*.csv")
    assert len(read_rows(csv_path)) == 3


def test_multi_task_slurm_job_gets_torchrun_variables(monkeypatch):
    """Task 5 of a 2-node x 4-task job started by submitit: the rank variables DDP reads, as torchrun sets them."""
    from engine.distributed import from_slurm_tasks

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(key, "")      # recorded, so what from_slurm_tasks exports is undone after the test
        monkeypatch.delenv(key)
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
                       "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
                       "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NTASKS_PER_NODE": "4"}.items():
        monkeypatch.setenv(key, value)
    from_slurm_tasks()
    assert (os.environ["WORLD_SIZE"], os.environ["RANK"], os.environ["LOCAL_RANK"]) == ("8", "5", "1")
    assert os.environ["MASTER_ADDR"] == "gpu01"


def test_exported_rank_variables_do_not_leak():
    assert "WORLD_SIZE" not in os.environ and "RANK" not in os.environ
