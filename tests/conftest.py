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


def tiny_ctx():
    """RunContext of the 1x4x4, 3-class inputs that ``method_steps`` feeds."""
    from methods import RunContext
    return RunContext(num_classes=3, in_channels=1, image_size=4, device=torch.device("cpu"))


class TinyConvNet(torch.nn.Module):
    """conv 1->4 (3x3) -> ReLU -> fc 16->3: one conv and one fc layer for method golden tests."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def method_steps(method, model, opt, n, seed=0):
    """The engine's per-step hook order on random 1x4x4 inputs (3 classes):
    loss -> backward -> after_backward -> optimizer step -> after_step."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        x = torch.randn(8, 1, 4, 4, generator=g)
        y = torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        method.after_backward(model, i)
        opt.step()
        method.after_step(model, i)


def kill_at_evaluation(monkeypatch, n: int):
    """Make the trainer's ``n``-th evaluation raise KeyboardInterrupt (a simulated kill of the run); returns the
    function that puts the real evaluation back (for the resumed run)."""
    from engine import trainer as trainer_module
    real, calls = trainer_module.evaluate, {"n": 0}

    def dying_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", dying_evaluate)
    return lambda: monkeypatch.setattr(trainer_module, "evaluate", real)
