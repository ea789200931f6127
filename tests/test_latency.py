"""engine/latency.py: medians, thread count stated, restored afterwards."""
import torch
import torch.nn as nn

from engine.latency import compare_latency, measure_latency


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
    from engine.latency import row_latency
    res = row_latency(nn.Linear(4, 2), (4,), repeats=3, warmup=0, threads=1)
    assert res["latency_ms"] > 0 and "1 threads" in res["device"] and "batch 1" in res["device"]
