"""Benchmark (not a test): measured CPU speedup / MACs reduction of every compact model in the committed rows.

    python scripts/bench_compact_latency.py [--papers dcff ucp tt_admm cc] [--limit N] [--threads 1]
        [--repeats 30] --out results/measurements/compact_latency.csv

Each distinct compact structure found in results/runs/<paper>.csv (DCFF/UCP/L1: ``extra.channel_config``;
TT-ADMM/TT-SVD: ``extra.ranks``; CC: ``extra.plan``) is rebuilt with random weights (latency does not depend on
the values) beside its dense backbone and timed with core/latency.compare_latency: dense and compact
interleaved in blocks, ``--repeats`` runs per model at batch 1 and 64, a fixed thread count, median and min.
``efficiency`` = measured speedup / (dense MACs / compact MACs): 1 means the MACs saved are time saved; channel
pruning should come near 1 at batch 64, factorised forms (TT cores, CC's 1x1 after k x k) are often slower than
their MACs on CPU (more, smaller convs and memory traffic).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.complexity import measure  # noqa: E402
from core.latency import compare_latency  # noqa: E402
from engine.results import read_rows  # noqa: E402
from methods.common.decomposition import LowRankConv2d, TTConv2d, TTSpec, set_submodule  # noqa: E402
from models import build_model  # noqa: E402

FIELDS = ["source", "model", "kind", "dense_macs", "compact_macs", "macs_reduction", "speedup_b1", "speedup_min_b1",
          "speedup_b64", "speedup_min_b64", "efficiency_b1", "efficiency_b64", "efficiency_min_b64",
          "dense_ms_b64", "compact_ms_b64", "threads", "repeats", "latency_device", "torch_version"]


def _dense(name: str) -> torch.nn.Module:
    return build_model(name, num_classes=10, in_channels=3, image_size=32)


def compact_from_row(row: dict) -> tuple[str, torch.nn.Module] | None:
    """(kind, compact model with random weights) of a row's structure, or None when the row has none."""
    ex, name = row["extra"], row["model"]
    if ex.get("channel_config"):
        return "channels", build_model(name, num_classes=10, in_channels=3, image_size=32,
                                       channel_config=ex["channel_config"])
    if ex.get("ranks"):
        model = _dense(name)
        for layer, ranks in ex["ranks"].items():
            conv = model.get_submodule(layer)
            if len(ranks) != 4:
                raise ValueError(f"{layer}: only the 'special' TT layout [C_out, k*k, C_in] is rebuilt here")
            spec = TTSpec([conv.out_channels], [conv.in_channels], ranks, conv.kernel_size[0])
            set_submodule(model, layer, TTConv2d(spec, conv.stride, conv.padding, conv.dilation, conv.bias is not None))
        return "tt", model
    if ex.get("plan"):
        model = _dense(name)
        for layer, p in ex["plan"].items():
            conv = model.get_submodule(layer)
            keep = list(range(conv.in_channels - int(p["pruned"])))
            set_submodule(model, layer, LowRankConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], keep,
                                                      p["rank"], conv.stride, conv.padding, conv.dilation,
                                                      conv.bias is not None))
        return "cc", model
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", nargs="+", default=["dcff", "ucp", "tt_admm", "cc"])
    ap.add_argument("--limit", type=int, default=None, help="at most this many distinct structures per paper")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="results/measurements/compact_latency.csv")
    args = ap.parse_args()
    seen, out = set(), []
    for paper in args.papers:
        n_paper = 0
        path = f"results/runs/{paper}.csv"
        if not os.path.exists(path):
            continue
        for row in read_rows(path):
            ex = row["extra"]
            key = json.dumps([row["model"], ex.get("channel_config"), ex.get("ranks"), ex.get("plan")], sort_keys=True)
            if key in seen or (args.limit is not None and n_paper >= args.limit):
                continue
            built = compact_from_row(row)
            if built is None:
                continue
            seen.add(key)
            n_paper += 1
            kind, compact = built
            dense = _dense(row["model"])
            shape = (3, 32, 32)
            dm, cm = measure(dense, shape).macs, measure(compact, shape).macs
            lat = compare_latency(dense.eval(), compact.eval(), shape, batch_sizes=(1, 64), repeats=args.repeats,
                                  threads=args.threads)
            red = dm / cm
            rec = {"source": f"{paper}:{row['experiment']}:{row['method']}:{row['variant']}:seed{row['seed']}",
                   "model": row["model"], "kind": kind, "dense_macs": dm, "compact_macs": cm,
                   "macs_reduction": round(red, 4), "threads": lat["threads"], "repeats": lat["repeats"],
                   "latency_device": lat["latency_device"], "torch_version": torch.__version__,
                   "dense_ms_b64": round(lat["dense_latency_ms_b64"], 3),
                   "compact_ms_b64": round(lat["compact_latency_ms_b64"], 3)}
            for k in ("speedup_b1", "speedup_min_b1", "speedup_b64", "speedup_min_b64"):
                rec[k] = round(lat[k], 4)
            rec["efficiency_b1"] = round(lat["speedup_b1"] / red, 4)
            rec["efficiency_b64"] = round(lat["speedup_b64"] / red, 4)
            rec["efficiency_min_b64"] = round(lat["speedup_min_b64"] / red, 4)
            print(f"{rec['source']:<75} {kind:<8} MACs /{red:5.2f}  speedup b1 {rec['speedup_b1']:5.2f} "
                  f"b64 {rec['speedup_b64']:5.2f} (min {rec['speedup_min_b64']:5.2f})  efficiency b64 "
                  f"{rec['efficiency_b64']:4.2f}", flush=True)
            out.append(rec)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(out)
    print(f"{len(out)} compact models -> {args.out}")


if __name__ == "__main__":
    main()
