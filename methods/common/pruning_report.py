"""What a channel-pruning run reports beside its row: dense vs compact params/FLOPs and measured CPU latency."""
from __future__ import annotations

from core.complexity import measure
from core.latency import DEFAULT_BLOCKS, DEFAULT_REPEATS, DEFAULT_WARMUP, compare_latency


def compression_report(dense, compact, input_shape, latency_cfg=None) -> dict:
    """Reductions by the suite's counter and, unless ``latency_cfg.enabled`` is false, dense vs compact CPU
    latency measured interleaved in blocks (median and min; batch sizes, repeats, blocks and the fixed thread
    count from ``latency_cfg``, core/latency.py defaults otherwise) with the measured speedups."""
    d, c = measure(dense, input_shape), measure(compact, input_shape)
    out = {"dense_params": d.params, "dense_flops": d.flops, "compact_params": c.params, "compact_flops": c.flops,
           "params_reduction_pct": 100.0 * (1 - c.params / d.params),
           "flops_reduction_pct": 100.0 * (1 - c.flops / d.flops)}
    cfg = dict(latency_cfg or {})
    if cfg.get("enabled", True):
        lat = compare_latency(dense, compact, input_shape, batch_sizes=tuple(cfg.get("batch_sizes", (1, 64))),
                              repeats=int(cfg.get("repeats", DEFAULT_REPEATS)),
                              warmup=int(cfg.get("warmup", DEFAULT_WARMUP)), threads=cfg.get("threads"),
                              blocks=int(cfg.get("blocks", DEFAULT_BLOCKS)))
        out.update({("latency_" + k if k in ("threads", "repeats") else k): v for k, v in lat.items()})
    return out
