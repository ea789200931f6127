"""Golden tests of the low-rank blocks (methods/common/decomposition.py) and TT-ADMM's ADMM math.

Fixed seeds, explicit tolerances; expected values are hand-computed in the comments or come from an
independent numpy TT-SVD written here (not the tensorly path the product uses)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from core.complexity import measure
from methods.common.decomposition import (LowRankConv2d, TTConv2d, TTLinear, TTSpec, kernel_to_tensor, tt_project,
                                          tt_svd, tt_to_tensor)
from methods.tt_admm import admm_init, admm_penalty, rho_at, u_step, z_step

pytestmark = pytest.mark.golden


def numpy_tt_svd_error(a: np.ndarray, ranks) -> float:
    """Independent TT-SVD (Oseledets 2011, Alg. 1): sequential truncated SVDs; returns ||A - TT(A)||_F."""
    d, shape, cores, c, r_prev = a.ndim, a.shape, [], a.copy(), 1
    for k in range(d - 1):
        c = c.reshape(r_prev * shape[k], -1)
        u, s, vh = np.linalg.svd(c, full_matrices=False)
        r = min(ranks[k + 1], len(s))
        cores.append(u[:, :r].reshape(r_prev, shape[k], r))
        c = s[:r, None] * vh[:r]
        r_prev = r
    cores.append(c.reshape(r_prev, shape[-1], 1))
    full = cores[0]
    for g in cores[1:]:
        full = np.tensordot(full, g, axes=([-1], [0]))
    return float(np.linalg.norm(full.reshape(shape) - a))


def unfolding_tails(a: np.ndarray, ranks) -> list[float]:
    """Per unfolding k: sqrt(sum of squared singular values beyond r_k) (the TT-SVD error bounds)."""
    out = []
    for k in range(1, a.ndim):
        s = np.linalg.svd(a.reshape(int(np.prod(a.shape[:k])), -1), compute_uv=False)
        out.append(float(np.sqrt((s[ranks[k]:] ** 2).sum())))
    return out


def test_tt_svd_full_rank_reconstructs_to_machine_precision():
    torch.manual_seed(0)
    spec = TTSpec([8, 4], [4, 4], [1, 1, 1, 1, 1, 1], 3)
    spec = spec.with_ranks(spec.full_ranks())
    assert spec.ranks == [1, 8, 32, 16, 4, 1]          # hand: min(prod left, prod right) per cut
    w = torch.randn(32, 16, 3, 3, dtype=torch.float64)
    full = tt_to_tensor(tt_svd(kernel_to_tensor(w, spec), spec.ranks))
    assert torch.allclose(full, kernel_to_tensor(w, spec), atol=1e-12, rtol=0)


def test_tt_svd_truncation_error_matches_independent_tt_svd_and_bounds():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 4, 9, 4, 8))
    ranks = [1, 6, 12, 10, 5, 1]
    ours = torch.from_numpy(a)
    err = float((tt_to_tensor(tt_svd(ours, ranks)) - ours).norm())
    ref = numpy_tt_svd_error(a, ranks)
    assert err == pytest.approx(ref, rel=1e-9)
    tails = unfolding_tails(a, ranks)
    assert err <= np.sqrt(sum(t ** 2 for t in tails)) * (1 + 1e-9)   # Oseledets' quasi-optimality bound
    assert err >= max(tails) * (1 - 1e-9)                               # no rank-r_k unfolding does better


@pytest.mark.parametrize("co,ci,out_f,in_f,stride", [(32, 16, [8, 4], [4, 4], 2), (16, 16, [16], [16], 1),
                                                     (24, 12, [2, 3, 4], [3, 4], 1)])
def test_tt_conv_at_full_rank_equals_dense_conv(co, ci, out_f, in_f, stride):
    torch.manual_seed(2)
    conv = nn.Conv2d(ci, co, 3, stride, 1, bias=True)
    spec = TTSpec(out_f, in_f, [1] * (len(out_f) + len(in_f) + 2), 3)
    tt = TTConv2d.from_conv(conv, spec.with_ranks(spec.full_ranks()))
    x = torch.randn(2, ci, 8, 8)
    assert (tt(x) - conv(x)).abs().max().item() < 1e-5
    assert (tt.dense_weight() - conv.weight).abs().max().item() < 1e-6


def test_tt_linear_and_svd_conv_at_full_rank_equal_dense():
    torch.manual_seed(3)
    lin = nn.Linear(24, 12)
    spec = TTSpec([3, 4], [4, 6], [1, 1, 1, 1, 1])
    tl = TTLinear.from_linear(lin, spec.with_ranks(spec.full_ranks()))
    x = torch.randn(5, 24)
    assert (tl(x) - lin(x)).abs().max().item() < 1e-5
    conv = nn.Conv2d(16, 32, 3, 2, 1, bias=False)
    low = LowRankConv2d.from_conv(conv, list(range(16)), rank=32)
    x = torch.randn(2, 16, 8, 8)
    assert (low(x) - conv(x)).abs().max().item() < 1e-5


def test_svd_conv_is_the_rank_r_truncation_of_the_pruned_matrix():
    torch.manual_seed(4)
    conv = nn.Conv2d(8, 6, 3, 1, 1, bias=False)
    keep, r = [0, 2, 3, 5, 7], 3
    low = LowRankConv2d.from_conv(conv, keep, rank=r)
    w = conv.weight.detach().clone()
    w[:, [1, 4, 6]] = 0
    u, s, vh = torch.linalg.svd(w.reshape(6, -1).double(), full_matrices=False)
    trunc = (u[:, :r] * s[:r]) @ vh[:r]
    assert torch.allclose(low.dense_weight().reshape(6, -1).double(), trunc, atol=1e-5)
    x = torch.randn(1, 8, 5, 5)
    ref = nn.functional.conv2d(x, trunc.reshape(6, 8, 3, 3).float(), padding=1)
    assert (low(x) - ref).abs().max().item() < 1e-5
    # counted by the engine: 5*3*9 + 3*6 params; MACs (5*9*3 + 3*6) * 25
    c = measure(low, (8, 5, 5))
    assert (c.params, c.macs) == (5 * 3 * 9 + 3 * 6, (5 * 9 * 3 + 3 * 6) * 25)


def test_tt_spec_params_and_macs_hand_computed_and_counted_by_engine():
    spec = TTSpec([8, 4], [4, 4], [1, 8, 32, 16, 4, 1], 3)
    # params: 1*8*8 + 8*4*32 + 32*9*16 + 16*4*4 + 4*4*1 = 64 + 1024 + 4608 + 256 + 16
    assert spec.params() == 5968
    # stride 2, 8x8 -> 4x4. input cores at 64 px: 16*4*4*1*64 + 4*4*1*4*64; k x k: 32*16*9*16;
    # output cores at 16 px: 1*8*8*4*16 + 8*4*32*1*16
    assert spec.macs((8, 8), (4, 4)) == 16384 + 4096 + 73728 + 4096 + 16384
    layer = TTConv2d(spec, stride=2, padding=1)
    c = measure(layer, (16, 8, 8))
    assert (c.params, c.macs) == (5968, 114688)


def test_admm_projection_keeps_ranks_and_is_idempotent():
    torch.manual_seed(5)
    spec = TTSpec([8, 4], [4, 8], [1, 6, 10, 10, 6, 1], 3)
    w = torch.randn(32, 32, 3, 3, dtype=torch.float64)
    z = tt_project(w, spec)
    a = kernel_to_tensor(z, spec).numpy()
    for k in range(1, a.ndim):    # every unfolding of Z has rank <= r_k
        s = np.linalg.svd(a.reshape(int(np.prod(a.shape[:k])), -1), compute_uv=False)
        assert s[spec.ranks[k]:].max() < 1e-9 * s[0]
    assert torch.allclose(tt_project(z, spec), z, atol=1e-10)
    assert float((w - z).norm()) > 0.1 * float(w.norm())      # a real projection, not the identity


def test_admm_steps_on_fixed_tensors():
    spec = {"w": TTSpec([2], [2], [1, 1, 1, 1], 1)}      # 2x2 matrix, TT rank 1 = matrix rank 1
    w = {"w": torch.tensor([[3.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)}
    Z, U = admm_init(w, spec)
    assert torch.allclose(Z["w"].reshape(2, 2), torch.tensor([[3.0, 0.0], [0.0, 0.0]]), atol=1e-6)
    assert torch.count_nonzero(U["w"]) == 0
    # penalty rho/2 ||W - Z + U||^2 = 0.5 * 0.1 * 1^2
    assert float(admm_penalty(w, Z, U, 0.1)) == pytest.approx(0.05, abs=1e-7)
    U = {"w": torch.tensor([[0.0, 0.0], [0.0, 2.0]]).reshape(2, 2, 1, 1)}
    Z = z_step(w, U, spec)             # W + U = diag(3, 3): rank-1 projection keeps one of the two directions
    assert float(Z["w"].norm()) == pytest.approx(3.0, abs=1e-6)
    U2 = u_step(w, Z, U)
    assert torch.allclose(U2["w"], U["w"] + w["w"] - Z["w"])
    assert rho_at(0, 1e-3, 5.0, [3]) == 1e-3 and rho_at(3, 1e-3, 5.0, [3]) == pytest.approx(5e-3)


def test_auto_shapes_and_feasible_ranks():
    from methods.common.decomposition import auto_spec, balanced_factors
    # the official ResNet-32 general shapes: 32 out -> [8, 4], 32 in -> [4, 8], 64 -> [8, 8]
    assert balanced_factors(32, 2, True) == [8, 4] and balanced_factors(32, 2, False) == [4, 8]
    assert auto_spec(64, 32, 3, "general").shape == [8, 8, 9, 4, 8]
    assert auto_spec(16, 16, 3, "special").ranks == [1, 16, 16, 1]
    # ranks [1, 40, 40, 40, 40, 1] on [8, 4, 9, 4, 8]: r1 <= 8, r4 <= 8, r3 <= 4 * 8 = 32, r2 <= min(8 * 4, 9 * 32)
    assert TTSpec([8, 4], [4, 8], [1, 40, 40, 40, 40, 1], 3).feasible().ranks == [1, 8, 32, 32, 8, 1]
