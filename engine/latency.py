"""Measured cost beside theoretical cost: CPU inference latency of a model.

``measure_latency(model, input_shape)`` times forward passes at batch 1 and batch 64 (configurable) on
CPU under ``torch.inference_mode`` in eval mode, after warm-up runs, and returns the **median** of the
repeated runs in milliseconds together with the thread count it ran with (set for the measurement and
restored afterwards). Numbers depend on the machine and on other load; compare dense and compact models
measured in the same process, one after the other (``compare_latency``).
"""
from __future__ import annotations

import copy
import platform
import statistics
import time

import torch
import torch.nn as nn


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_sizes=(1, 64), repeats: int = 20,
                    warmup: int = 3, threads: int | None = None, min_time_s: float = 0.0) -> dict:
    """Median CPU latency (ms per forward pass) at each batch size.

    Returns ``{"latency_ms_b1": ..., "latency_ms_b64": ..., "threads": n, "repeats": r,
    "latency_device": "cpu: <model name>, <n> threads", "per_run_ms_b1": [...], ...}``.
    ``min_time_s`` adds repeats until that much time was spent at a batch size (stabler medians).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"latency: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    old_threads = torch.get_num_threads()
    n_threads = int(threads or old_threads)
    model = copy.deepcopy(model).to("cpu").eval()
    out: dict = {"threads": n_threads, "repeats": repeats, "warmup": warmup,
                 "input_shape": list(input_shape), "latency_device": f"cpu: {_cpu_name()}, {n_threads} threads"}
    torch.set_num_threads(n_threads)
    try:
        for bs in batch_sizes:
            x = torch.randn(int(bs), *input_shape)
            for _ in range(warmup):
                model(x)
            times, start = [], time.perf_counter()
            while len(times) < repeats or (time.perf_counter() - start) < min_time_s:
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
            out[f"latency_ms_b{bs}"] = statistics.median(times)
            out[f"per_run_ms_b{bs}"] = [round(t, 3) for t in times]
    finally:
        torch.set_num_threads(old_threads)
    return out


def compare_latency(dense: nn.Module, compact: nn.Module, input_shape, **kw) -> dict:
    """Dense vs compact latency (measured alternately, same settings) and the speedup dense/compact."""
    d = measure_latency(dense, input_shape, **kw)
    c = measure_latency(compact, input_shape, **kw)
    res = {"threads": d["threads"], "latency_device": d["latency_device"], "repeats": d["repeats"]}
    for key in d:
        if key.startswith("latency_ms_b"):
            res[f"dense_{key}"] = d[key]
            res[f"compact_{key}"] = c[key]
            res[f"speedup_{key.removeprefix('latency_ms_')}"] = d[key] / c[key] if c[key] > 0 else float("nan")
    return res


def row_latency(model: nn.Module, input_shape, batch_size: int = 1, **kw) -> dict:
    """What ``engine.runner.result_row(latency=...)`` reads: ``latency_ms`` (median at ``batch_size``) and
    ``device`` (CPU model and thread count), plus the batch size used."""
    res = measure_latency(model, input_shape, batch_sizes=(batch_size,), **kw)
    return {"latency_ms": res[f"latency_ms_b{batch_size}"], "device": f"{res['latency_device']}, batch {batch_size}",
            "batch_size": batch_size}
