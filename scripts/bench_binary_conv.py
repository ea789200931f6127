"""Benchmark the XNOR-popcount kernel against FP32 conv (docs/binary_inference.md); not a test.

    flock /tmp/cpu-heavy.lock .venv/bin/python scripts/bench_binary_conv.py [--threads 1,0] [--repeats 20]

1. Every binary conv of the ImageNet Bi-Real ResNet-18 body (``bireal_resnet18`` at 224 px, batch 1; shapes
   taken from a forward pass): the packed conv (input sign + bit packing included) vs ``F.conv2d`` of the same
   shape on the float input, per layer and in total. ``--threads 0`` means all cores.
2. End to end: an exported-then-reloaded binary ResNet-20 (``bireal_resnet20``, CIFAR 32 px, batch 1) through the
   float +-1 path and the packed path, with the largest logit difference.

Times are the median of ``--repeats`` calls after warm-up, the two paths timed interleaved in blocks
(core.latency.interleaved_times). Prints markdown tables.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.latency import interleaved_medians  # noqa: E402
from methods.common.binary_export import export_binary, load_binary_export  # noqa: E402
from methods.common.packed_binary import pack_weight, packed_conv2d  # noqa: E402
from models import build_model  # noqa: E402
from models.binary_layers import BinaryConv2d, BinarySpec  # noqa: E402


def body_layers(image_size: int = 224) -> list[tuple[str, BinaryConv2d, tuple]]:
    """(name, layer, input shape) of every binary conv in Bi-Real ResNet-18, from one forward pass at batch 1."""
    model = build_model("bireal_resnet18", num_classes=1000, image_size=image_size, spec=BinarySpec()).eval()
    shapes = {}

    def record(name):
        def hook(module, args):
            shapes[name] = tuple(args[0].shape)
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, BinaryConv2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    mods = dict(model.named_modules())
    return [(name, mods[name], shape) for name, shape in shapes.items()]


def bench_layers(threads: int, repeats: int) -> None:
    rows, tot_fp, tot_bin = [], 0.0, 0.0
    for name, m, shape in body_layers():
        x = torch.randn(shape)
        w = torch.randn_like(m.weight).sign()
        words, tap_pop = pack_weight(w)
        s, p = m.stride[0], m.padding[0]
        fp, binary = interleaved_medians([lambda: F.conv2d(x, w, stride=s, padding=p),
                                          lambda: packed_conv2d(x, words, tap_pop, m.kernel_size, s, p)],
                                         repeats=repeats, warmup=3)
        tot_fp, tot_bin = tot_fp + fp, tot_bin + binary
        shape_txt = f"{shape[1]}->{m.out_channels} {m.kernel_size[0]}x{m.kernel_size[1]}/{s} @{shape[2]}"
        rows.append(f"| {name} | {shape_txt} | {fp:.3f} | {binary:.3f} | {fp / binary:.1f}x |")
    print(f"\n### Bi-Real ResNet-18 body convs, batch 1, {threads} thread(s)\n")
    print("| layer | shape (in->out k/stride @input) | FP32 conv2d ms | packed ms | speedup |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    print(f"| **total** | {len(rows)} convs | {tot_fp:.3f} | {tot_bin:.3f} | **{tot_fp / tot_bin:.1f}x** |")


def bench_end_to_end(threads: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = build_model("bireal_resnet20", num_classes=10, image_size=32,
                        spec=BinarySpec(act_estimator="approx", weight_estimator="clipped")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.crbin")
        export_binary(model, path)
        flt = load_binary_export(path, build_model("bireal_resnet20", num_classes=10, image_size=32,
                                                   spec=BinarySpec()), packed=False).eval()
        pkd = load_binary_export(path, build_model("bireal_resnet20", num_classes=10, image_size=32,
                                                   spec=BinarySpec()), packed=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        diff = (flt(x) - pkd(x)).abs().max().item()
        f_ms, p_ms = interleaved_medians([lambda: flt(x), lambda: pkd(x)], repeats=repeats, warmup=3)
    print(f"\n### Exported binary ResNet-20 (bireal_resnet20, 32 px), batch 1, {threads} thread(s)\n")
    print("| path | latency ms | speedup |\n|---|---:|---:|")
    print(f"| float +-1 (FP32 conv) | {f_ms:.3f} | 1.0x |\n| packed | {p_ms:.3f} | {f_ms / p_ms:.1f}x |")
    print(f"\nlargest |logit difference| float vs packed: {diff:.3g}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,0", help="comma list; 0 = all cores")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores")
    for t in (int(v) for v in args.threads.split(",")):
        n = t or os.cpu_count()
        torch.set_num_threads(n)
        bench_layers(n, args.repeats)
        bench_end_to_end(n, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
