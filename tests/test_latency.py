"""core/latency.py: medians, thread count stated, restored afterwards."""
import pytest
import torch
import torch.nn as nn

from core.latency import compare_latency, interleaved_medians, measure_latency


def test_latency_median_and_threads():
    before = torch.get_num_threads()
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    res = measure_latency(model, (3, 8, 8), batch_sizes=(1, 4), repeats=5, warmup=1, threads=1)
    assert torch.get_num_threads() == before
    assert res["threads"] == 1 and "1 threads" in res["latency_device"]
    for bs in (1, 4):
        runs = sorted(res[f"per_run_ms_b{bs}"])
        assert len(runs) == 5 and abs(res[f"latency_ms_b{bs}"] - runs[2]) <= 5e-4 and runs[2] > 0   # median of 5 (runs rounded to 1 us)


def test_compare_reports_speedup_of_a_smaller_model():
    big = nn.Sequential(nn.Conv2d(3, 128, 3, padding=1), nn.Conv2d(128, 128, 3, padding=1))
    small = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    res = compare_latency(big, small, (3, 16, 16), batch_sizes=(8,), repeats=5, warmup=1, threads=1)
    assert res["speedup_b8"] == res["dense_latency_ms_b8"] / res["compact_latency_ms_b8"]
    assert res["speedup_b8"] > 2   # ~1000x fewer MACs; even on a loaded machine a clear speedup


def test_row_latency_has_the_result_row_keys():
    from core.latency import row_latency
    res = row_latency(nn.Linear(4, 2), (4,), repeats=3, warmup=0, threads=1)
    assert res["latency_ms"] > 0 and "1 threads" in res["device"] and "batch 1" in res["device"]


def test_defaults_fixed_threads_30_repeats_min_and_median():
    res = measure_latency(nn.Linear(4, 2), (4,), batch_sizes=(1, 64))
    assert res["threads"] == 1 and res["repeats"] >= 30
    for bs in (1, 64):
        runs = res[f"per_run_ms_b{bs}"]
        assert len(runs) >= 30 and res[f"latency_ms_min_b{bs}"] == pytest.approx(min(runs), abs=5e-4)


def test_compare_interleaves_dense_and_compact_in_blocks():
    calls = []

    class Tag(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    compare_latency(Tag("d"), Tag("c"), (2,), batch_sizes=(1,), repeats=6, warmup=0, threads=1, blocks=3)
    # blocks of 2 timed runs each: d d c c | c c d d | d d c c
    assert "".join(calls) == "ddcc" + "ccdd" + "ddcc"


def test_interleaved_medians_of_callables_warm_up_then_alternate_blocks():
    calls = []
    medians = interleaved_medians([lambda: calls.append("a"), lambda: calls.append("b")], repeats=4, warmup=1,
                                  blocks=2)
    assert "".join(calls) == "ab" + "aabb" + "bbaa"        # one warm-up each, then blocks of 2 in alternating order
    assert len(medians) == 2 and all(m >= 0 for m in medians)
