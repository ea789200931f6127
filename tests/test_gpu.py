"""CUDA checks (``pytest -m gpu``; scripts/gpu_check.sh runs them): a binary ResNet-20 computes on CUDA what it computes
on the CPU; training steps never make the host wait for the GPU (CUDA's own sync detector in error mode); a run
records the GPU in its row. Skipped without CUDA."""
from __future__ import annotations

import os

import pytest
import torch

from engine import loss_watch
from engine.results import read_rows
from engine.runner import run
from methods.common.binary import BinarySpec
from models import build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = ["trainer.device=cuda", "data=synthetic", "data.train_size=512", "data.test_size=128", "model=resnet20",
        "trainer.batch_size=64", "trainer.eval_batch_size=128", "trainer.epochs=1", "trainer.log_every=1000",
        "data.augment.crop_padding=4", "data.augment.flip=true"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().norm().clamp_min(1e-12))


def test_binary_resnet20_forward_backward_matches_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    cpu = build_model("bireal_resnet20", num_classes=10, image_size=32, spec=BinarySpec("ede", "ede"))
    gpu = build_model("bireal_resnet20", num_classes=10, image_size=32, spec=BinarySpec("ede", "ede"))
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x, y = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10
    outs = []
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        logits = model(x.to(dev))
        torch.nn.functional.cross_entropy(logits, y.to(dev)).backward()
        outs.append((logits.detach(), [p.grad for p in model.parameters() if p.grad is not None]))
    (lc, gc), (lg, gg) = outs
    assert rel_err(lg, lc) < 1e-3      # a sign flipped by rounding at exactly ~0 moves a few logits slightly
    assert rel_err(torch.cat([g.flatten() for g in gg]).cpu(), torch.cat([g.flatten() for g in gc])) < 1e-2


@pytest.fixture
def sync_errors_between_log_points(monkeypatch):
    """CUDA's sync detector in error mode from each step's loss record to the next host read (log point, epoch end):
    any host sync inside a training step (data, forward, loss, backward, optimizer, method hooks) raises."""
    real_update, real_read = loss_watch.LossWatch.update, loss_watch.LossWatch.read

    def update(self, loss):
        real_update(self, loss)
        torch.cuda.set_sync_debug_mode("error")

    def read(self, value):
        torch.cuda.set_sync_debug_mode("default")
        return real_read(self, value)

    monkeypatch.setattr(loss_watch.LossWatch, "update", update)
    monkeypatch.setattr(loss_watch.LossWatch, "read", read)
    yield
    torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("method", [["method=baseline"], ["method=irnet"], ["method=sd_bnn"], ["method=ir2net"],
                                    ["method=dcff", "method.cprate='[0.5]*9+[0.0]*3'", "method.latency.enabled=false"]],
                         ids=["baseline", "irnet", "sd_bnn", "ir2net", "dcff"])
def test_training_steps_do_not_sync_on_cuda(compose, sync_errors_between_log_points, method):
    metrics = run(compose(CUDA + method + ["trainer.limit_batches=6"]))
    assert metrics["steps"] == 6


def test_a_cuda_run_records_the_gpu_in_its_row(compose):
    cfg = compose(CUDA + ["trainer.limit_batches=4"])
    run(cfg)
    rows = read_rows(os.path.join(cfg.paths.results_dir, "synthetic_resnet20_baseline.csv"))
    assert rows[-1]["device"] == torch.cuda.get_device_name(0)
