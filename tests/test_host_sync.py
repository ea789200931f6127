"""No host sync per training step: a run reads tensors on the host (``.item()``, ``float()``, ``bool()``, ``.tolist()``,
``.cpu()``, ...) a fixed number of times (start, log points, epoch end, evaluation, row), however many steps it
takes. On CUDA each such read waits for the device; tests/test_gpu.py checks the same with CUDA's sync detector."""
from __future__ import annotations

import pytest
import torch

from engine.runner import run

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")

BASE = ["data=synthetic", "data.train_size=256", "data.test_size=64", "data.image_size=16", "model=resnet20",
        "trainer.batch_size=16", "trainer.eval_batch_size=64", "trainer.epochs=1", "trainer.log_every=1000",
        "trainer.optimizer.lr=0.05"]


def host_reads(fn) -> int:
    """Calls of the tensor methods that read a value on the host while ``fn()`` runs."""
    count = {"n": 0}
    with pytest.MonkeyPatch.context() as patch:
        for name in READS:
            real = getattr(torch.Tensor, name)

            def counted(self, *args, _real=real, **kwargs):
                count["n"] += 1
                return _real(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, counted)
        fn()
    return count["n"]


DCFF = ["method=dcff", "method.cprate='[0.5]*9+[0.0]*3'", "method.latency.enabled=false"]


@pytest.mark.parametrize("method", [["method=baseline"], ["method=irnet"], ["method=sd_bnn"], ["method=ir2net"], DCFF],
                         ids=["baseline", "irnet", "sd_bnn", "ir2net", "dcff"])
def test_host_reads_do_not_grow_with_the_number_of_steps(compose, method):
    def reads(steps):
        cfg = compose(BASE + method + [f"trainer.limit_batches={steps}",
                              f"paths.output_dir=${{paths.results_dir}}/../run{steps}"])
        return host_reads(lambda: run(cfg))

    few, more = reads(2), reads(6)
    assert more == few, f"{more - few} host reads in 4 extra training steps of {method[0]}"


def test_evaluation_reads_the_host_once_however_many_batches():
    from data.tensor_loader import TensorLoader
    from engine.evaluation import evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    images, labels = torch.randint(0, 256, (24, 3, 2, 2), dtype=torch.uint8), torch.arange(24) % 3

    def reads(batch):
        loader = TensorLoader(images, labels, batch, [0.5] * 3, [0.25] * 3, train=False)
        return host_reads(lambda: evaluate(model, loader, "cpu"))

    assert reads(24) == reads(4)
