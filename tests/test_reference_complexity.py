"""Exact complexity: every reference metric marked ``exact: true`` is recomputed from its architecture.

The model is ``models.build_model(entry.model, num_classes=<dataset>, in_channels=, image_size=,
**entry.architecture)``, measured by ``core.complexity`` and counted under the paper's declared
``conventions`` (``engine.references.convention_counts``). It must match the printed value within the
paper's rounding; a value off the rounding but within 1% passes with a warning that prints both numbers
(the report's "Exact complexity" section lists these entries); anything further is a failure showing both,
or an xfail carrying the entry's ``known_gap`` reason and both numbers.
"""
from __future__ import annotations

import functools
import warnings

import pytest

from engine import references as R

DATASET_SHAPES = {"mnist": (10, (1, 28, 28)), "fashion_mnist": (10, (1, 28, 28)), "cifar10": (10, (3, 32, 32)),
                  "cifar10_jpeg": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32)),
                  "imagenet": (1000, (3, 224, 224))}

REFS = R.load_references()
#: counts recomputable from the architecture; other exact metrics (e.g. TT params, bits per weight) are
#: recomputed by their method's own tests
FROM_MODEL = ("params", "flops", "macs", "bops", "ops", "size_bits")
CASES = [(e, m) for ref in REFS.values() for e in ref.entries.values() for m in e.metrics.values()
         if m.exact and m.name in FROM_MODEL]


def input_shape(entry: R.Entry) -> tuple[int, ...]:
    arch = entry.architecture if isinstance(entry.architecture, dict) else {}
    res = entry.protocol.get("input_res") or arch.get("input_res")
    if res:
        return tuple(res)
    conv = REFS[entry.paper].conventions
    default = DATASET_SHAPES[entry.dataset][1]
    if conv.input_res and conv.input_res[0] == default[0] and entry.dataset != "imagenet":
        return conv.input_res
    return default


@functools.lru_cache(maxsize=None)
def counts(ref: str) -> dict:
    from models import build_model
    entry = R.lookup(REFS, ref)
    num_classes, _ = DATASET_SHAPES[entry.dataset]
    shape = input_shape(entry)
    kwargs = {"num_classes": num_classes, "in_channels": shape[0], "image_size": shape[-1]}
    kwargs.update({k: v for k, v in (entry.architecture or {}).items() if k != "input_res"})
    model = build_model(entry.model, **kwargs)
    return R.convention_counts(model, shape, REFS[entry.paper].conventions)


@pytest.mark.parametrize("entry,metric", CASES, ids=[f"{e.ref}.{m.name}" for e, m in CASES])
def test_exact_complexity(entry, metric):
    if isinstance(entry.architecture, str):
        pytest.skip(f"{entry.ref}: architecture specified in {entry.architecture!r}, recomputed by the method's tests")
    if entry.dataset not in DATASET_SHAPES:
        pytest.fail(f"{entry.path}: entry '{entry.key}': field 'dataset' {entry.dataset!r} has no input shape here")
    c = counts(entry.ref)
    if metric.name not in c or c[metric.name] is None:
        pytest.fail(f"{entry.path}: entry '{entry.key}': field 'metrics.{metric.name}.exact': the convention "
                    f"({REFS[entry.paper].conventions}) gives no {metric.name}")
    ours = c[metric.name] / metric.scale
    status = R.exact_status(metric.value, ours)
    msg = (f"{entry.ref} {metric.name}: reported {metric.value:g} {metric.unit}, ours {ours:.4f} {metric.unit} "
           f"({REFS[entry.paper].conventions.counter}, flops={REFS[entry.paper].conventions.flops}; "
           f"raw conv/linear MACs {c['raw_macs'] / metric.scale:.4f}; {status})")
    if status == "mismatch" and entry.gap(metric.name):     # only the metrics the known gap names
        pytest.xfail(f"known gap: {entry.gap(metric.name)} ({msg})")
    assert status != "mismatch", msg
    if status != "exact":
        warnings.warn(msg)
