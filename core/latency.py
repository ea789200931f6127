"""Measured cost beside theoretical cost: CPU inference latency of a model.

``measure_latency(model, input_shape, batch_sizes)`` times forward passes (eval mode, ``torch.inference_mode``)
at each batch size after warm-up runs and returns the **median** and the **minimum** of ``repeats`` (>= 30 by
default) timed runs in milliseconds, with the thread count it ran with: a FIXED count (``DEFAULT_THREADS`` = 1
unless given), set for the measurement, recorded in ``latency_device`` and restored afterwards. A fixed count
makes rows comparable across runs and machines' load; one thread is also the least disturbed by other jobs on
a shared machine.

``compare_latency(dense, compact, ...)`` measures the two models **interleaved in blocks**: the repeats are split
into ``blocks`` blocks and each block times dense then compact (odd blocks compact then dense), so slow drifts of
the machine's load fall on both models alike; the speedup is reported from the medians and from the minima.
Before issue 15 all dense runs came first and all compact runs after (2 warm-ups, 10 repeats): identical
architectures showed batch-1 "speedups" from 0.66x to 1.71x.
"""
from __future__ import annotations

import copy
import math
import platform
import statistics
import time

import torch
import torch.nn as nn

DEFAULT_THREADS = 1
DEFAULT_REPEATS = 30
DEFAULT_WARMUP = 5
DEFAULT_BLOCKS = 5


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device(n_threads: int) -> str:
    return f"cpu: {_cpu_name()}, {n_threads} threads"


def _check(repeats: int, warmup: int, blocks: int) -> None:
    if repeats < 1 or warmup < 0 or blocks < 1:
        raise ValueError(f"latency: repeats >= 1, warmup >= 0 and blocks >= 1 needed, got {repeats}, {warmup}, {blocks}")


def _timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def interleaved_times(calls: list, repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
                      blocks: int = DEFAULT_BLOCKS) -> list[list[float]]:
    """Milliseconds of ``repeats`` timed runs of each zero-argument callable after ``warmup`` runs, taken in
    ``blocks`` blocks that alternate the callables (in order, reversed in odd blocks), so a slow drift of the
    machine's load falls on all of them alike."""
    per_block = math.ceil(repeats / blocks)
    for call in calls:
        for _ in range(warmup):
            call()
    times = [[] for _ in calls]
    for b in range(blocks):
        order = list(range(len(calls)))
        if b % 2:
            order.reverse()
        for i in order:
            times[i] += _timed(calls[i], per_block)
    return times


def interleaved_medians(calls: list, **kw) -> list[float]:
    """The median ms of each callable (:func:`interleaved_times`)."""
    return [statistics.median(t) for t in interleaved_times(calls, **kw)]


@torch.inference_mode()
def _interleaved(models: list[nn.Module], input_shape, batch_sizes, repeats: int, warmup: int, blocks: int
                 ) -> list[dict]:
    """Per model, per batch size, ``repeats`` timed forward passes (:func:`interleaved_times`)."""
    res = [dict() for _ in models]
    for bs in batch_sizes:
        x = torch.randn(int(bs), *input_shape)
        times = interleaved_times([lambda m=m: m(x) for m in models], repeats, warmup, blocks)
        for i, t in enumerate(times):
            res[i][f"latency_ms_b{bs}"] = statistics.median(t)
            res[i][f"latency_ms_min_b{bs}"] = min(t)
            res[i][f"per_run_ms_b{bs}"] = [round(v, 3) for v in t]
    return res


def _run(models, input_shape, batch_sizes, repeats, warmup, threads, blocks):
    _check(repeats, warmup, blocks)
    old = torch.get_num_threads()
    n_threads = int(threads or DEFAULT_THREADS)
    models = [copy.deepcopy(m).to("cpu").eval() for m in models]
    torch.set_num_threads(n_threads)
    try:
        return n_threads, _interleaved(models, input_shape, tuple(batch_sizes), repeats, warmup, blocks)
    finally:
        torch.set_num_threads(old)


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_sizes=(1, 64),
                    repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP, threads: int | None = None,
                    blocks: int = DEFAULT_BLOCKS) -> dict:
    """Median and minimum CPU latency (ms per forward pass) at each batch size.

    Returns ``{"latency_ms_b1": median, "latency_ms_min_b1": min, "per_run_ms_b1": [...], ..., "threads": n,
    "repeats": r, "warmup": w, "input_shape": [...], "latency_device": "cpu: <model name>, <n> threads"}``."""
    n_threads, (res,) = _run([model], input_shape, batch_sizes, repeats, warmup, threads, blocks)
    return {"threads": n_threads, "repeats": len(res[f"per_run_ms_b{batch_sizes[0]}"]), "warmup": warmup,
            "input_shape": list(input_shape), "latency_device": _device(n_threads), **res}


def compare_latency(dense: nn.Module, compact: nn.Module, input_shape, batch_sizes=(1, 64),
                    repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP, threads: int | None = None,
                    blocks: int = DEFAULT_BLOCKS) -> dict:
    """Dense vs compact latency measured interleaved in blocks (same process, inputs, threads), and the
    speedups dense/compact of the medians (``speedup_b<bs>``) and of the minima (``speedup_min_b<bs>``)."""
    n_threads, (d, c) = _run([dense, compact], input_shape, batch_sizes, repeats, warmup, threads, blocks)
    res = {"threads": n_threads, "latency_device": _device(n_threads),
           "repeats": len(d[f"per_run_ms_b{batch_sizes[0]}"]), "blocks": blocks, "warmup": warmup}
    for bs in batch_sizes:
        for kind, suffix in (("median", ""), ("min", "min_")):
            dk, ck = d[f"latency_ms_{suffix}b{bs}"], c[f"latency_ms_{suffix}b{bs}"]
            res[f"dense_latency_ms_{suffix}b{bs}"] = dk
            res[f"compact_latency_ms_{suffix}b{bs}"] = ck
            res[f"speedup_{suffix}b{bs}"] = dk / ck if ck > 0 else float("nan")
    return res


def row_latency(model: nn.Module, input_shape, batch_size: int = 1, **kw) -> dict:
    """What ``engine.runner.result_row(latency=...)`` reads: ``latency_ms`` (median at ``batch_size``) and
    ``device`` (CPU model and thread count), plus the batch size used."""
    res = measure_latency(model, input_shape, batch_sizes=(batch_size,), **kw)
    return {"latency_ms": res[f"latency_ms_b{batch_size}"], "device": f"{res['latency_device']}, batch {batch_size}",
            "batch_size": batch_size}
