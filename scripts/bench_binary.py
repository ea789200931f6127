"""Step time of the binary methods relative to the full-precision ResNet-20 (a benchmark, not a test).

    OMP_NUM_THREADS=1 python scripts/bench_binary.py [--batch 128] [--steps 10] [--threads 1] [--size 32]

One training step = forward, the method's loss (IR²Net: the erased second pass), backward, SGD step, as in
engine/trainer.py, on random CIFAR-shaped data. Prints the median wall and process-CPU seconds per step and the
CPU ratio to the FP step (CPU time is what a loaded shared machine does not distort; the grid in
scripts/reproduce_binary.sh is sized from it). Target (issue 14): IR²Net <= 2.5x FP (two passes are the recipe,
so ~2x is the floor). Arms with the same step (Adam pairs, two-stage SD-BNN, ablations) share a row.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from methods import RunContext, build_method  # noqa: E402
from methods.base import Stage  # noqa: E402
from models import build_model  # noqa: E402

ARMS = {
    "fp": ("baseline", {}),
    "bnn": ("bnn", {}),
    "sign_ede": ("sd_bnn", {"asd.enabled": False, "wsd.enabled": False}),
    "irnet": ("irnet", {}),
    "sd_bnn": ("sd_bnn", {}),
    "approx_bnn": ("ir2net", {"restriction.enabled": False, "recovery.enabled": False}),
    "ir2net": ("ir2net", {}),
    "ir2net_no_restriction": ("ir2net", {"restriction.enabled": False}),
    "pa": ("pa", {}),                                   # the PA grid (scripts/reproduce_pa.sh): M = N = 3
    "pa_m1n1": ("pa", {"M": 1, "N": 1}),
    "pa_lstsq": ("pa", {"coefficients": "lstsq"}),
    "abc_net": ("abc_net", {}),
}


def build(method_name: str, over: dict, size: int):
    cfg = OmegaConf.load(f"conf/method/{method_name}.yaml")
    if "ede" in cfg:
        cfg.ede.epochs = 10
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    method = build_method(cfg)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=size, device=torch.device("cpu"))
    model = method.transform(build_model("resnet20", num_classes=10, image_size=size), ctx)
    method.on_stage_start(Stage("train"), model, ctx)
    return method, model


def bench(method, model, batch: int, size: int, steps: int, warmup: int = 2) -> tuple[float, float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    model.train()
    times, cpu = [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(x)
        loss = method.loss(model, x, out, y, F.cross_entropy(out, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--arms", default=",".join(ARMS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.size} px, "
          f"median of {args.steps} steps, load average {os.getloadavg()[0]:.1f}")
    print(f"{'arm':<22} {'wall ms':>8} {'CPU ms':>8} {'CPU/FP':>7}")
    base = None
    for arm in args.arms.split(","):
        name, over = ARMS[arm]
        method, model = build(name, over, args.size)
        wall, cpu = bench(method, model, args.batch, args.size, args.steps)
        base = cpu if arm == "fp" else base
        ratio = f"{cpu / base:6.2f}x" if base else "     -"
        print(f"{arm:<22} {wall * 1000:8.1f} {cpu * 1000:8.1f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
