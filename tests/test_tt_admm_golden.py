"""TT-ADMM against the official code (tests/golden/tt_admm/: miaoyin390/DNN-Compression-Tensor-ADMM's ADMM class
driven in engines.py's order on a fixed conv; the JSON header says how): projection, Z/U order, penalty."""
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from methods import RunContext, build_method
from methods.common.decomposition import TTSpec, tt_project
from methods.tt_admm import admm_penalty

from tests.golden import load

pytestmark = pytest.mark.golden
TOL = dict(atol=2e-5, rtol=0)


@pytest.fixture(scope="module")
def golden():
    header, data = load("tt_admm", "admm_updates")
    return data


def _spec(g):
    return TTSpec([g["tt_shape"][0]], [g["tt_shape"][2]], g["ranks"], 3)


def _method(g, order):
    cfg = {"name": "tt_admm", "layers": {"0": {"out": [8], "in": [4], "ranks": g["ranks"]}}, "rho": g["rho"],
           "admm_order": order, "eval_decomposition": False,
           "stages": [{"name": "admm", "admm": True}, {"name": "ft", "decompose": True}]}
    return build_method(OmegaConf.create(cfg))


def _run(g, order):
    """The method's hooks in the engine's order: stage start, loss every step, epoch end."""
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(g["w0"])
    m = _method(g, order)
    ctx = RunContext(num_classes=10, in_channels=4, image_size=6, device="cpu")
    m.transform(model, ctx)
    stage = m.stages()[0]
    m.on_stage_start(stage, model, ctx)
    seen = []
    for epoch in range(2):
        loss = m.loss(model, None, None, None, torch.zeros(()))        # first step of the epoch
        grad, = torch.autograd.grad(loss, model[0].weight)
        seen.append((m.Z["0"].clone(), m.U["0"].clone(), float(loss.detach()), grad))
        with torch.no_grad():
            model[0].weight.add_(g["delta"])
        m.on_epoch_end(model, epoch, ctx)
    return seen


def test_projection_is_the_official_tt_svd(golden):
    torch.testing.assert_close(tt_project(golden["w0"], _spec(golden)), golden["z_init"], **TOL)


def test_penalty_is_the_official_term(golden):
    w = golden["w0"].clone().requires_grad_(True)
    pen = admm_penalty({"0": w}, {"0": golden["z_0"]}, {"0": golden["u_0"]}, golden["rho"])
    assert float(pen.detach()) == pytest.approx(golden["penalty_0"], rel=1e-4)


def test_official_order_matches_official_code(golden):
    for e, (z, u, pen, grad) in enumerate(_run(golden, "official")):
        torch.testing.assert_close(z, golden[f"z_{e}"], **TOL)
        torch.testing.assert_close(u, golden[f"u_{e}"], **TOL)
        assert pen == pytest.approx(golden[f"penalty_{e}"], rel=1e-4)
        torch.testing.assert_close(grad, golden[f"penalty_grad_{e}"], atol=1e-7, rtol=1e-4)


def test_epoch_end_variant_differs(golden):
    """Ours before issue 15: epoch 0 trains with U = 0 (the official code has U = W - Z from the start)."""
    (z, u, pen, _), _ = _run(golden, "epoch_end")
    assert float(u.abs().max()) == 0.0 and float(golden["u_0"].abs().max()) > 1e-2
    assert pen < golden["penalty_0"] * 0.9
