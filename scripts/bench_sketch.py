"""Time Network Sketching's associative implementation against the direct binary path (docs/sketch.md); not a test.

    flock /tmp/cpu-heavy.lock .venv/bin/python scripts/bench_sketch.py [--model resnet20] [--m 1,2,3,4,5]
        [--variant refined] [--threads 1] [--batch 1] [--repeats 20]

The pretrained CIFAR ResNet (DATA_ROOT) is sketched as the grid's cells are (``variant``, every conv but the first,
the classifier FP), and for each m every sketched conv runs its O*m binary convolutions through the native kernel
(csrc/sketch_associative.cpp) twice: direct (every tensor from its n entries) and associative (the layer's
spanning tree; a derived tensor from its parent plus its d differing entries). Same kernel, same im2col rows, so the
two times differ by the additions only. Inputs are random (the time does not depend on the values); the layer
shapes come from one forward pass at ``--batch``. Beside them: the counted additions (``associative_plan``) and
``F.conv2d`` of the reconstructed float weight (oneDNN, for scale). Times: per layer the median of ``--repeats``
calls after warm-up, the three timed interleaved in blocks (core.latency.interleaved_times), summed over layers,
per batch. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.latency import interleaved_medians  # noqa: E402
from methods.sketch import (accumulation_steps, associative_plan, binary_convs_native, layer_bases,  # noqa: E402
                            output_positions, sketch_layer, sketch_targets)
from models import build_model  # noqa: E402


def layer_inputs(model, names, batch: int) -> dict[str, tuple]:
    """Input shape of each named layer, from one forward pass of a random CIFAR batch."""
    shapes, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        hooks.append(modules[name].register_forward_pre_hook(
            lambda mod, args, name=name: shapes.__setitem__(name, tuple(args[0].shape))))
    with torch.no_grad():
        model(torch.randn(batch, 3, 32, 32))
    for h in hooks:
        h.remove()
    return shapes


def bench(model_name: str, m: int, variant: str, batch: int, repeats: int) -> dict:
    model = build_model(model_name, num_classes=10, image_size=32, pretrained=True).eval()
    targets, _ = sketch_targets(model, fp_first=True, fp_last=True, fp_downsample=False)
    convs = [(n, mod) for n, mod in targets if isinstance(mod, torch.nn.Conv2d)]
    shapes = layer_inputs(model, [n for n, _ in convs], batch)
    positions_of = output_positions(model, (3, 32, 32))
    row = {"m": m, "direct_ms": 0.0, "associative_ms": 0.0, "float_ms": 0.0, "direct_adds": 0, "tree_adds": 0}
    for name, conv in convs:
        sketch_layer(conv, m, variant)
        bases, _ = layer_bases(conv)                                         # (O, m, n), +-1
        plan = associative_plan(bases, "layer")
        bits, o = bases.reshape(-1, bases.shape[-1]).float(), conv.out_channels
        x = torch.randn(shapes[name])
        args = (tuple(conv.kernel_size), conv.stride[0], conv.padding[0], conv.dilation[0])
        direct, tree = (accumulation_steps(bits, plan["order"], associative) for associative in (False, True))
        weight = conv.weight.detach().float()
        times = interleaved_medians([lambda: binary_convs_native(x, direct, o * m, *args),
                                     lambda: binary_convs_native(x, tree, o * m, *args),
                                     lambda: F.conv2d(x, weight, None, conv.stride, conv.padding)],
                                    repeats=repeats, warmup=3)
        for key, ms in zip(("direct_ms", "associative_ms", "float_ms"), times):
            row[key] += ms
        combine = o * (m - 1)                                                # summing the scaled results: not timed
        row["direct_adds"] += positions_of[name] * (plan["direct_adds"] - combine)
        row["tree_adds"] += positions_of[name] * (plan["associative_adds"] - combine)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--m", default="1,2,3,4,5")
    ap.add_argument("--variant", default="refined")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{a.model} sketched ({a.variant}), batch {a.batch}, {a.threads} thread(s); binary convs of the sketched "
          f"layers, median of {a.repeats}, ms per batch")
    print("| m | direct (ms) | associative (ms) | time saved | additions saved (counted) | float conv of the "
          "reconstruction (ms) |")
    print("|---|---|---|---|---|---|")
    for m in (int(v) for v in a.m.split(",")):
        r = bench(a.model, m, a.variant, a.batch, a.repeats)
        print(f"| {m} | {r['direct_ms']:.2f} | {r['associative_ms']:.2f} | "
              f"{1 - r['associative_ms'] / r['direct_ms']:.1%} | {1 - r['tree_adds'] / r['direct_adds']:.1%} | "
              f"{r['float_ms']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
