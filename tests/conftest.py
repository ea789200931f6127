"""Shared fixtures: the real config composed with every output under pytest's tmp dir, CPU, no logger."""
from __future__ import annotations

import os

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")
SHARED_DATA = os.environ.get("DATA_ROOT") or os.path.join(ROOT, "..", "shared", "data")

torch.set_num_threads(min(2, torch.get_num_threads()))


def has_shared(sub: str) -> bool:
    return os.path.exists(os.path.join(SHARED_DATA, sub))


@pytest.fixture
def compose(tmp_path, monkeypatch):
    """compose(overrides, config_name="config") -> cfg with outputs/results/W&B/cache under tmp_path."""
    monkeypatch.setenv("DATA_ROOT", os.path.abspath(SHARED_DATA))
    monkeypatch.setenv("WANDB_SILENT", "true")

    def _compose(overrides=(), config_name="config"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            base = [f"paths.output_dir={tmp_path}/outputs", f"paths.results_dir={tmp_path}/results",
                    f"paths.cache_dir={os.path.join(ROOT, '.cache')}", "logger=none", "trainer.device=cpu",
                    "trainer.progress=false"]
            return hydra_compose(config_name=config_name, overrides=base + list(overrides))

    yield _compose
    GlobalHydra.instance().clear()
