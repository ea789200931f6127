"""Measured CPU latency of finished low-rank runs (and of their dense backbone), from their final checkpoints.

    python scripts/latency_lowrank.py outputs/<run>/<hash>-seed0/final.pt [...] --out results/measurements/lowrank_latency.csv

Each checkpoint is rebuilt as evaluate.py does (backbone -> method state -> ``transform`` -> weights), then timed:
median wall time of ``--reps`` forward passes at batch 1 and batch 64 after warm-up, eval mode, no grad, on the
threads torch uses here. One CSV row per model; the dense backbone of the first checkpoint is timed too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.complexity import measure  # noqa: E402
from engine.results import append_measurements  # noqa: E402
from methods import RunContext, build_method  # noqa: E402
from models import build_model  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

FIELDS = ["checkpoint", "method", "variant", "seed", "params", "macs", "latency_b1_ms", "latency_b64_ms", "threads",
          "torch_version"]


@torch.no_grad()
def latency_ms(model: torch.nn.Module, shape, batch: int, reps: int) -> float:
    model.eval()
    x = torch.randn(batch, *shape)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def rebuild(path: str):
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(state["config"])
    num_classes = {"cifar100": 100, "imagenet": 1000}.get(cfg.data.name, 10)
    size = 224 if cfg.data.name == "imagenet" else 32
    dense = build_model(cfg.model.name, num_classes=num_classes, image_size=size)
    model = build_model(cfg.model.name, num_classes=num_classes, image_size=size)
    method = build_method(cfg.method)
    method.load_state_dict(state["method"])
    model = method.transform(model, RunContext(num_classes, 3, size, torch.device("cpu")))
    model.load_state_dict(state["model"])
    return cfg, dense, model, (3, size, size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    rows = []
    for i, path in enumerate(args.checkpoints):
        cfg, dense, model, shape = rebuild(path)
        todo = [(path, cfg.method.name, cfg.get("variant") or "", model)]
        if i == 0:
            todo.insert(0, ("dense backbone", "baseline", "", dense))
        for name, meth, variant, m in todo:
            c = measure(m, shape)
            rows.append({"checkpoint": name, "method": meth, "variant": variant, "seed": cfg.seed, "params": c.params,
                         "macs": c.macs, "latency_b1_ms": round(latency_ms(m, shape, 1, args.reps), 3),
                         "latency_b64_ms": round(latency_ms(m, shape, 64, max(5, args.reps // 3)), 3),
                         "threads": torch.get_num_threads(), "torch_version": torch.__version__})
            print(rows[-1], flush=True)
    append_measurements(args.out, FIELDS, rows)


if __name__ == "__main__":
    main()
