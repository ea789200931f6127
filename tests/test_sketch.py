"""Network Sketching (methods/sketch.py): hand-computed goldens of direct approximation and approximation with
refinement, their structural properties, the associative implementation (outputs and addition counts) and an
end-to-end evaluate.py row. No official code exists: every golden below is computed by hand from the equations
in the module docstring (themselves unverified against the paper, ../shared/papers/sketch.md)."""
import csv
import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.common import native
from methods.sketch import (Sketch, accumulation_steps, associative_conv2d, associative_plan, bwn_approximation,
                            direct_approximation, refined_approximation, relative_errors, reconstruct, sketch_filters,
                            sketch_layer, spanning_order)

# One 2x2x2 filter (n = 8), chosen so that no residual entry is 0 (sign(0) would be a tie) and the refined
# coefficients differ from the direct ones at m = 2.  ||W||^2 = .04+.04+.09+.09+.25+.81+.09+.09 = 1.5
W = torch.tensor([[0.2, -0.2, 0.3, 0.3, -0.5, 0.9, -0.3, 0.3]], dtype=torch.float64)
B1 = [1, -1, 1, 1, -1, 1, -1, 1]            # sign W
# direct, j = 1: a1 = mean|W| = 3.0/8 = 3/8; R1 = W - 3/8 B1 = [-7, 7, -3, -3, -5, 21, 3, -3]/40
# ||R||^2 drops by n a^2 each step: ||R1||^2 = 1.5 - 8 (3/8)^2 = 3/8
B2 = [-1, 1, -1, -1, -1, 1, 1, -1]          # sign R1
# direct, j = 2: a2 = mean|R1| = (7+7+3+3+5+21+3+3)/320 = 13/80; ||R2||^2 = 3/8 - 8 (13/80)^2 = 131/800
# R2 = R1 - 13/80 B2 = [-1, 1, 7, 7, 3, 29, -7, 7]/80
B3 = [-1, 1, 1, 1, 1, 1, -1, 1]             # sign R2 (direct); the refined R2 has the same signs (below)
# direct, j = 3: a3 = mean|R2| = 62/640 = 31/320; ||R3||^2 = 131/800 - 8 (31/320)^2 = 227/2560
DIRECT_A = [3 / 8, 13 / 80, 31 / 320]
DIRECT_SQ_ERR = [3 / 8, 131 / 800, 227 / 2560]
# refined, j = 2: normal equations with B1.B1 = B2.B2 = 8, B1.B2 = -4, B1.W = 3.0, B2.W = -0.2:
#   [[8, -4], [-4, 8]] a = [3.0, -0.2]  ->  a = [[8, 4], [4, 8]]/48 [3.0, -0.2] = [23.2, 10.4]/48 = [29/60, 13/60]
#   R2 = W - (29/60 B1 + 13/60 B2) = [-4, 4, 2, 2, 12, 12, -2, 2]/60, ||R2||^2 = 336/3600 = 7/75
# refined, j = 3: B3 = sign R2 as above; B1.B3 = 2, B2.B3 = -2, B3.W = 1.2:
#   [[8, -4, 2], [-4, 8, -2], [2, -2, 8]] a = [3.0, -0.2, 1.2]  ->  a = [103, 51, 20]/220
#   (check: 8*103 - 4*51 + 2*20 = 660 = 3.0*220; -412 + 408 - 40 = -44; 206 - 102 + 160 = 264)
#   ||R3||^2 = ||W||^2 - a.B^T W = 1.5 - (309 - 10.2 + 24)/220 = 9/275
REFINED_A = [[3 / 8], [29 / 60, 13 / 60], [103 / 220, 51 / 220, 20 / 220]]
REFINED_SQ_ERR = [3 / 8, 7 / 75, 9 / 275]


@pytest.mark.golden
@pytest.mark.parametrize("m", [1, 2, 3])
def test_direct_approximation_hand_golden(m):
    bases, alphas = direct_approximation(W, m)
    torch.testing.assert_close(bases[0], torch.tensor([B1, B2, B3][:m], dtype=torch.float64))
    torch.testing.assert_close(alphas[0], torch.tensor(DIRECT_A[:m], dtype=torch.float64), rtol=0, atol=1e-12)
    err = relative_errors(W, bases, alphas)
    assert float(err[0] ** 2 * 1.5) == pytest.approx(DIRECT_SQ_ERR[m - 1], abs=1e-12)


@pytest.mark.golden
@pytest.mark.parametrize("m", [1, 2, 3])
def test_refined_approximation_hand_golden(m):
    bases, alphas = refined_approximation(W, m)
    torch.testing.assert_close(bases[0], torch.tensor([B1, B2, B3][:m], dtype=torch.float64))
    torch.testing.assert_close(alphas[0], torch.tensor(REFINED_A[m - 1], dtype=torch.float64), rtol=0, atol=1e-12)
    err = relative_errors(W, bases, alphas)
    assert float(err[0] ** 2 * 1.5) == pytest.approx(REFINED_SQ_ERR[m - 1], abs=1e-12)


@pytest.mark.golden
def test_m1_refined_is_bwn_per_filter_scaling():
    w = torch.randn(16, 27, generator=torch.Generator().manual_seed(0))
    bases, alphas = refined_approximation(w, 1)
    torch.testing.assert_close(bases[:, 0], torch.sign(w).double())
    torch.testing.assert_close(alphas[:, 0], w.abs().mean(1).double())
    b2, a2 = bwn_approximation(w)
    torch.testing.assert_close(reconstruct(bases, alphas), reconstruct(b2, a2))
    b3, a3 = direct_approximation(w, 1)
    torch.testing.assert_close(reconstruct(b3, a3), reconstruct(b2, a2))


def test_error_strictly_decreases_in_m_and_refined_never_worse():
    w = torch.randn(32, 72, generator=torch.Generator().manual_seed(1))
    prev = {"direct": None, "refined": None}
    for m in range(1, 7):
        errs = {v: relative_errors(w, *sketch_filters(w, m, v)) for v in ("direct", "refined")}
        assert bool((errs["refined"] <= errs["direct"] + 1e-12).all()), m
        if m >= 2:
            assert bool((errs["refined"] < errs["direct"]).any()), m       # refinement does something
        for v, e in errs.items():
            if prev[v] is not None:
                assert bool((e < prev[v]).all()), (v, m)
            prev[v] = e


def test_sketch_layer_writes_reconstruction_bits_and_scales():
    conv = nn.Conv2d(3, 4, 3, bias=False)
    w0 = conv.weight.detach().clone()
    err = sketch_layer(conv, 3, "refined")
    b, a = refined_approximation(w0.reshape(4, -1), 3)
    torch.testing.assert_close(conv.weight.detach(), reconstruct(b, a).reshape(w0.shape).float())
    assert conv.weight_bits == 3 and conv.sketch_basis.shape == (3, 4, 3, 3, 3)
    assert conv.sketch_basis.dtype == torch.int8 and conv.sketch_alpha.shape == (4, 3)
    assert not conv.sketch_alpha.requires_grad and err.shape == (4,)
    torch.testing.assert_close(err, relative_errors(w0.reshape(4, -1), b, a))     # against the FP weights
    assert bool((err > 0.05).all())
    from core.complexity import measure
    c = measure(nn.Sequential(conv), (3, 5, 5))
    assert c.size_bits == 4 * 27 * 3 + 4 * 3 * 32          # m bits per weight + 32 per scale


# ---- associative implementation -----------------------------------------------------------------------------------
HAND_BASES = torch.tensor([[[1, 1, 1, 1], [1, 1, 1, -1]],        # filter 0: nodes 0, 1
                           [[-1, -1, -1, -1], [1, 1, -1, -1]]],  # filter 1: nodes 2, 3
                          dtype=torch.float64)


@pytest.mark.golden
def test_addition_counts_on_hand_example():
    # Hamming: d01 = 1, d02 = 4, d03 = 2, d12 = 3, d13 = 1, d23 = 2; a derived edge costs d + 1 (2, 5, 3, 4, 2, 3),
    # a root edge n - 1 = 3. Prim from the root: node 0 (3); node 1 via 0 (2); node 3 via 1 (2; via 0 it was 3,
    # not < the root's 3); node 2 from the root (3; via 3 it costs 3 too: ties go to the root). Tree: 10.
    order, tree = spanning_order(HAND_BASES.reshape(4, 4))
    assert order == [(0, -1), (1, 0), (3, 1), (2, -1)] and tree == 10
    plan = associative_plan(HAND_BASES, "layer")
    # direct: O m (n - 1) = 4 * 3 = 12 binary-conv additions + O (m - 1) = 2 to sum the scaled results
    assert (plan["direct_adds"], plan["associative_adds"], plan["mults"]) == (14, 12, 4)
    # per filter: filter 0: 3 + 2; filter 1: 3 + 3 (d23 + 1 = 3 ties the root) -> 11, + 2 combining
    assert associative_plan(HAND_BASES, "filter")["associative_adds"] == 13
    # identical tensors are reused for free: two copies of one tensor cost n - 1 once
    assert spanning_order(torch.ones(2, 4)) == ([(0, -1), (1, 0)], 3)


@pytest.mark.golden
@pytest.mark.skipif(not native.available(), reason=native.MISSING)
@pytest.mark.parametrize("scope,associative", [("layer", True), ("filter", True), ("layer", False)])
def test_associative_conv_equals_direct_binary_conv(scope, associative):
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    sketch_layer(conv, 3, "direct")
    bases = conv.sketch_basis.transpose(0, 1).double()              # (O, m, C, kh, kw)
    alphas = conv.sketch_alpha.detach().double()
    plan = associative_plan(bases.reshape(5, 3, -1), scope)
    x = torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64)
    out = associative_conv2d(x, bases, alphas, plan["order"], stride=2, padding=1, associative=associative)
    ref = F.conv2d(x, (alphas[:, :, None, None, None] * bases).sum(1), None, 2, 1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)     # the native kernel sums in float32
    # some tensors really are derived from a parent (the path is exercised, not just the roots)
    assert any(p >= 0 for _, p in plan["order"])


def test_accumulation_steps_do_the_counted_additions():
    """The kernel's steps read d entries for a derived tensor (d = Hamming to its parent) and n for a root: the
    entries behind the addition counts of test_addition_counts_on_hand_example."""
    bits = HAND_BASES.reshape(4, 4)
    order, _ = spanning_order(bits)
    tree = accumulation_steps(bits, order)
    assert tree["node"].tolist() == [0, 1, 3, 2] and tree["parent"].tolist() == [-1, 0, 1, -1]
    assert tree["offset"].diff().tolist() == [4, 1, 1, 4]                # root n, d01 = 1, d13 = 1, root n
    assert tree["index"][4:6].tolist() == [3, 2] and tree["coef"][4:6].tolist() == [-2.0, -2.0]   # 2 B_k[i] there
    direct = accumulation_steps(bits, order, associative=False)
    assert direct["parent"].tolist() == [-1] * 4 and direct["offset"].diff().tolist() == [4] * 4


# ---- config and entrypoint -----------------------------------------------------------------------------------------
def test_bad_method_options_fail_with_the_key():
    from omegaconf import OmegaConf
    with pytest.raises(ValueError, match="method.variant"):
        Sketch(OmegaConf.create({"name": "sketch", "variant": "greedy"}))
    with pytest.raises(ValueError, match="method.m=1"):
        Sketch(OmegaConf.create({"name": "sketch", "variant": "bwn", "m": 2}))


def test_unknown_sketch_key_is_rejected(compose):
    from engine.config import ConfigError, validate
    with pytest.raises(ConfigError, match="method.foo"):
        validate(compose(["method=sketch", "+method.foo=1", "data=synthetic", "model=resnet20"],
                         config_name="evaluate"))


def _rows(tmp_path):
    out = []
    for root, _, files in os.walk(tmp_path / "results"):
        for f in files:
            if f.endswith(".csv"):
                with open(os.path.join(root, f)) as fh:
                    out += list(csv.DictReader(fh))
    return out


@pytest.mark.smoke
def test_evaluate_writes_sketch_row(compose, tmp_path):
    from engine.evaluator import evaluate_checkpoint
    base = ["data=synthetic", "data.test_size=40", "data.train_size=64", "model=resnet20", "allow_untrained=true",
            "method=sketch", "method.m=2", "method.variant=refined", "trainer.eval_batch_size=16"]
    metrics = evaluate_checkpoint(compose(base + ["method.bn_reestimate_images=32", "method.test_shards=4",
                                                  "seed=1"], config_name="evaluate"))
    fp = evaluate_checkpoint(compose(base + ["method.variant=fp"], config_name="evaluate"))
    rows = _rows(tmp_path)
    assert len(rows) == 2
    extra = json.loads(rows[0]["extra"])
    assert metrics["samples"] == 10 and extra["test_shard"] == "1/4" and extra["bn_reestimated_on"] == 32
    assert extra["sketch_m"] == 2 and extra["sketched_layers"] == 18     # 19 convs + fc, minus first conv and fc
    assert 0.0 < extra["sketch_rel_error"] < 1.0 and len(extra["sketch_rel_error_layers"]) == 18
    assert 0 < extra["sketch_adds_associative"] < extra["sketch_adds_direct"]
    assert extra["sketch_param_bits"] == extra["sketch_binary_bits"] + extra["sketch_scale_bits"]
    assert int(rows[0]["size_bits"]) < int(rows[1]["size_bits"])           # sketched weights at 2 bits
    assert json.loads(rows[1]["extra"])["sketched_layers"] == 0 and fp["samples"] == 40
