"""NASB (methods/nasb.py, models/nasb.py): hand goldens of the DARTS equations we adopt (no official code exists),
the derived net's OPs, the genotype as a `model=` config, and a tiny search -> derive -> retrain run."""
import glob
import math
import os

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from core.complexity import measure
from engine.runner import build_backbone, run
from methods import RunContext, build_method
from methods.nasb import (arch_step, conv_edges, derive_cell, derive_genotype, edge_agreement, mixed_op,
                          mixed_op_weights, random_genotype)
from models import build_model
from models.binary_layers import BinarySpec
from models.nasb import BIREAL_GENOTYPE, MixedOp, cell_edges, leaf_nodes, load_genotype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(os.path.relpath(p, os.path.join(ROOT, "conf", "experiment"))[:-5]
                     for p in glob.glob(os.path.join(ROOT, "conf", "experiment", "nasb", "*.yaml")))
TINY = ["data=synthetic", "data.train_size=32", "data.test_size=16", "trainer.batch_size=8",
        "trainer.eval_batch_size=16", "trainer.epochs=1", "model.cells=[1,1,1]", "model.width=4"]
SPEC = BinarySpec(act_estimator="approx", weight_estimator="clipped", scaling="bireal")


# ---- continuous relaxation ----------------------------------------------------------------------------------
@pytest.mark.golden
def test_mixed_op_weights_are_the_softmax_of_alpha_hand_golden():
    alpha = torch.tensor([[math.log(1.0), math.log(2.0), math.log(3.0), math.log(4.0)],
                          [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    w = mixed_op_weights(alpha)
    assert torch.allclose(w, torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25] * 4], dtype=torch.float64), atol=1e-12)
    outs = [torch.full((2,), c, dtype=torch.float64) for c in (5.0, -1.0, 2.0, 0.5)]
    # 0.1*5 + 0.2*(-1) + 0.3*2 + 0.4*0.5 = 0.5 - 0.2 + 0.6 + 0.2 = 1.1
    assert torch.allclose(mixed_op(outs, w[0]), torch.full((2,), 1.1, dtype=torch.float64), atol=1e-12)


@pytest.mark.golden
def test_mixed_op_module_weights_each_candidate_and_skips_none_hand_golden():
    """MixedOp over [none, skip_connect, avg_pool_3x3] with softmax(log [1, 2, 3]) = [1/6, 2/6, 3/6] on a constant
    input 2: none adds 0, the identity 2, the average pool (padding excluded) 2 -> (2/6)*2 + (3/6)*2 = 5/3."""
    op = MixedOp(SPEC, ["none", "skip_connect", "avg_pool_3x3"], 2, 2, 1, "hardtanh", False)
    w = mixed_op_weights(torch.log(torch.tensor([1.0, 2.0, 3.0])))
    out = op(torch.full((1, 2, 3, 3), 2.0), w)
    assert torch.allclose(out, torch.full((1, 2, 3, 3), 5.0 / 3.0), atol=1e-6)


@pytest.mark.golden
def test_supernet_uses_the_softmax_of_its_alphas():
    """A supernet whose alphas put (numerically) all weight on bconv_3x3_res computes the Bi-Real cell network."""
    torch.manual_seed(0)
    sup = build_model("nasb_supernet", num_classes=10, spec=SPEC, width=4, cells=[1, 1, 1], affine=True)
    ref = build_model("nasb_cell", num_classes=10, spec=SPEC, genotype={
        "normal": [[["bconv_3x3_res", 0]], [["bconv_3x3_res", 1]]],
        "reduce": [[["bconv_3x3_res", 0]], [["bconv_3x3_res", 1]]]}, width=4, cells=[1, 1, 1])
    with torch.no_grad():
        for alpha, ops in ((sup.alphas_normal, sup.normal_ops), (sup.alphas_reduce, sup.reduce_ops)):
            alpha.fill_(-1e4)
            # node 1: its one edge (row 0); node 2: the edge from node 1 (row 2); the edge 0 -> 2 (row 1): none
            alpha[0, ops.index("bconv_3x3_res")] = 0.0
            alpha[2, ops.index("bconv_3x3_res")] = 0.0
            alpha[1, ops.index("none")] = 0.0
    # copy the chosen edges' weights into the derived net
    src = {}
    for c, cell in enumerate(sup.cells):
        ops = sup.reduce_ops if sup.plan[c][2] else sup.normal_ops
        src[c] = [cell.edges[0].ops[ops.index("bconv_3x3_res")], cell.edges[2].ops[ops.index("bconv_3x3_res")]]
    with torch.no_grad():
        for c, cell in enumerate(ref.cells):
            for mod, key in zip(src[c], ("0_1_bconv_3x3_res", "1_2_bconv_3x3_res")):
                cell.edges[key].load_state_dict(mod.state_dict())
        for name in ("conv1", "bn1", "head_bn", "fc"):
            getattr(ref, name).load_state_dict(getattr(sup, name).state_dict())
    sup.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(sup(x), ref(x), atol=1e-5)


# ---- derivation -------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_derivation_top_k_edges_by_weight_excluding_none_hand_golden():
    ops = ["none", "a", "b"]
    assert cell_edges(3) == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    w = torch.tensor([
        [0.8, 0.15, 0.05],    # 0->1: none is largest but excluded: a (0.15)
        [0.1, 0.3, 0.6],      # 0->2: b 0.6
        [0.05, 0.7, 0.25],    # 1->2: a 0.7  (strongest into node 2)
        [0.9, 0.05, 0.05],    # 0->3: a/b tie 0.05 -> a (the earlier op); strength 0.05
        [0.2, 0.2, 0.6],      # 1->3: b 0.6
        [0.3, 0.4, 0.3],      # 2->3: a 0.4
    ])
    # k = 1: node 1 <- (a, 0); node 2 <- (a, 1); node 3 <- (b, 1)
    assert derive_cell(w, ops, 3, 1) == [[["a", 0]], [["a", 1]], [["b", 1]]]
    # k = 2 (DARTS): node 1 has one candidate; node 2 keeps 1 (0.7) then 0 (0.6); node 3 keeps 1 (0.6), 2 (0.4)
    assert derive_cell(w, ops, 3, 2) == [[["a", 0]], [["a", 1], ["b", 0]], [["b", 1], ["a", 2]]]
    # a large 'none' weight never selects an edge: 0->3 is the weakest though its none weight is the largest
    assert all(j != 0 for _, j in derive_cell(w, ops, 3, 2)[2])


@pytest.mark.golden
def test_derivation_ties_keep_the_lower_input_and_the_earlier_op():
    w = torch.full((3, 3), 1.0 / 3.0)
    assert derive_cell(w, ["none", "a", "b"], 2, 1) == [[["a", 0]], [["a", 0]]]


def test_derive_genotype_from_alphas_and_random_draws_are_valid():
    a_n = torch.log(torch.tensor([[1.0, 5.0, 2.0], [1.0, 2.0, 1.0], [1.0, 1.0, 4.0]]))
    a_r = torch.log(torch.tensor([[1.0, 1.0, 1.0, 9.0], [1.0, 3.0, 1.0, 1.0], [1.0, 1.0, 2.0, 1.0]]))
    g = derive_genotype(a_n, a_r, ["none", "bconv_3x3", "bconv_3x3_res"],
                        ["none", "bconv_3x3", "bconv_3x3_res", "bconv_3x3_res_pool"], 2, 1)
    assert g == {"normal": [[["bconv_3x3", 0]], [["bconv_3x3_res", 1]]],
                 "reduce": [[["bconv_3x3_res_pool", 0]], [["bconv_3x3", 0]]]}
    assert load_genotype(g) == g and conv_edges(g) == {"normal": 2, "reduce": 2}
    r1 = random_genotype(["none", "bconv_3x3"], ["none", "bconv_3x3"], 3, 1, torch.Generator().manual_seed(1))
    r2 = random_genotype(["none", "bconv_3x3"], ["none", "bconv_3x3"], 3, 1, torch.Generator().manual_seed(1))
    assert r1 == r2 and load_genotype(r1) == r1 and edge_agreement(r1, r2) == 1.0


def test_bad_genotypes_fail_naming_the_problem():
    with pytest.raises(ValueError, match="input 2"):
        load_genotype({"normal": [[["bconv_3x3", 2]]], "reduce": [[["bconv_3x3", 0]]]})
    with pytest.raises(ValueError, match="'none'"):
        load_genotype({"normal": [[["none", 0]]], "reduce": [[["bconv_3x3", 0]]]})
    with pytest.raises(ValueError, match="reduction cells only"):
        load_genotype({"normal": [[["bconv_3x3_res_fp", 0]]], "reduce": [[["bconv_3x3", 0]]]})


# ---- first-order architecture step ---------------------------------------------------------------------------
@pytest.mark.golden
def test_arch_step_moves_only_alpha_by_the_val_gradient():
    """One Adam step: alpha_1 = alpha_0 - lr * sign(g) on the first step (bias-corrected m/sqrt(v) = g/|g|, no
    weight decay); the weights do not move."""
    torch.manual_seed(0)
    net = build_model("nasb_supernet", num_classes=3, spec=SPEC, width=4, cells=[1, 1, 1])
    w0 = {k: v.clone() for k, v in net.state_dict().items() if "alphas" not in k}
    alphas = [a.detach().clone() for a in net.arch_parameters()]
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, net.arch_parameters())
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.01, betas=(0.5, 0.999), eps=1e-30)
    arch_step(net, opt, x, y)
    for a, a0, g in zip(net.arch_parameters(), alphas, grads):
        assert torch.allclose(a.detach(), a0 - 0.01 * torch.sign(g), atol=1e-7)
        assert a.grad is None
    assert all(torch.equal(v, w0[k]) for k, v in net.state_dict().items() if k in w0 and "running" not in k
               and "num_batches" not in k)


# ---- the derived network: Bi-Real equivalence and OPs -----------------------------------------------------------
@pytest.mark.golden
def test_bireal_genotype_is_bireal_resnet20_exactly():
    torch.manual_seed(0)
    a = build_model("bireal_resnet20", num_classes=10, spec=SPEC)
    b = build_model("nasb_cell", num_classes=10, spec=SPEC, genotype=BIREAL_GENOTYPE)
    sa, sb = a.state_dict(), b.state_dict()
    assert [v.shape for v in sa.values()] == [v.shape for v in sb.values()]
    b.load_state_dict(dict(zip(sb.keys(), sa.values())))
    a.eval(), b.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    assert measure(a, (3, 32, 32)).summary()["ops"] == measure(b, (3, 32, 32)).summary()["ops"]


def _conv_bops(c_out, c_in, side):
    return c_out * c_in * 9 * side * side


@pytest.mark.golden
def test_ops_of_derived_nets_hand_count():
    """OPs = FP MACs + BOPs/64. FP: stem 3->16 3x3 at 32x32 (442,368) + FC 64->10 (640) = 443,008."""
    fp = 3 * 16 * 9 * 1024 + 640
    bireal = (6 * _conv_bops(16, 16, 32)
              + _conv_bops(32, 16, 16) + 5 * _conv_bops(32, 32, 16)
              + _conv_bops(64, 32, 8) + 5 * _conv_bops(64, 64, 8))
    assert bireal == 40_108_032
    c = measure(build_model("nasb_cell", num_classes=10, genotype=BIREAL_GENOTYPE), (3, 32, 32))
    assert (c.bops, c.fp_macs, c.ops) == (bireal, fp, fp + bireal / 64) == (40_108_032, 443_008, 1_069_696)
    # parallel cells (both nodes read the cell input; output = their sum): reduction cells have two stride-2 convs
    # from the narrower input, so fewer BOPs than the Bi-Real chain
    par = {"normal": [[["bconv_3x3", 0]], [["bconv_3x3_res", 0]]],
           "reduce": [[["bconv_3x3_res_pool", 0]], [["bconv_3x3", 0]]]}
    assert leaf_nodes(par["normal"]) == [1, 2] and leaf_nodes(BIREAL_GENOTYPE["normal"]) == [2]
    bops = (6 * _conv_bops(16, 16, 32) + 2 * _conv_bops(32, 16, 16) + 4 * _conv_bops(32, 32, 16)
            + 2 * _conv_bops(64, 32, 8) + 4 * _conv_bops(64, 64, 8))
    c = measure(build_model("nasb_cell", num_classes=10, genotype=par), (3, 32, 32))
    assert (c.bops, c.ops) == (bops, fp + bops / 64) == (37_748_736, 1_032_832)


@pytest.mark.golden
def test_derived_cell_output_is_the_sum_of_its_leaves():
    """Parallel nodes (both read h_0): output h_1 + h_2; a chain: output h_2 = op_12(op_01(h_0))."""
    from models.nasb import DerivedCell
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    par = DerivedCell(SPEC, [[["bconv_3x3", 0]], [["bconv_3x3_res", 0]]], 4, 4, False, "hardtanh").eval()
    e = par.edges
    assert torch.allclose(par(x), e["0_1_bconv_3x3"](x) + e["0_2_bconv_3x3_res"](x))
    chain = DerivedCell(SPEC, BIREAL_GENOTYPE["normal"], 4, 4, False, "hardtanh").eval()
    e = chain.edges
    assert torch.allclose(chain(x), e["1_2_bconv_3x3_res"](e["0_1_bconv_3x3_res"](x)))


# ---- the genotype as a model= config --------------------------------------------------------------------------
def test_genotype_configs_build_through_model(compose, tmp_path):
    cfg = compose(["model=nasb_bireal"])
    net = build_backbone(cfg, 10, 3, 32)
    assert net.genotype == BIREAL_GENOTYPE and net.arch_name == "nasb_cell"
    path = tmp_path / "nasb_derived.yaml"
    geno = {"normal": [[["bconv_3x3", 0]], [["bconv_3x3_res", 0]]], "reduce": [[["bconv_3x3", 0]], [["bconv_3x3", 1]]]}
    path.write_text("# written by a search\n" + yaml.safe_dump({"name": "nasb_cell", "genotype": geno, "width": 8,
                                                                 "cells": [1, 1, 1], "act": "auto"}))
    net = build_backbone(compose(["model=nasb_cell", f"model.genotype={path}"]), 10, 3, 32)
    assert net.genotype == geno
    # the written file is a model config as it stands (conf/model/<name>.yaml)
    net = build_model(**{k: v for k, v in yaml.safe_load(path.read_text()).items()}, num_classes=10)
    assert net.genotype == geno and len(net.cells) == 3


def test_method_rejects_search_stages_for_fixed_genotypes_and_wrong_models(compose):
    with pytest.raises(ValueError, match="retrain only"):
        build_method(compose(["method=nasb", "method.genotype=model"]).method)
    cfg = compose(["method=nasb", "model=resnet20"])
    ctx = RunContext(num_classes=10, in_channels=3, image_size=32, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="nasb_supernet"):
        build_method(cfg.method).transform(build_backbone(cfg, 10, 3, 32), ctx)
    with pytest.raises(ValueError, match="unknown keys"):
        build_method(compose(["method=nasb", "+method.search.arch_lrr=1"]).method)


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_files_compose_and_build(compose, exp):
    cfg = compose([f"experiment={exp}"])
    assert cfg.paper == "nasb" and cfg.fidelity == "reduced" and cfg.model.name in ("nasb_supernet", "nasb_cell")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    ctx = RunContext(num_classes=10, in_channels=3, image_size=32, device=torch.device("cpu"), seed=0)
    method = build_method(cfg.method)
    net = method.transform(build_backbone(cfg, 10, 3, 32), ctx)
    if method.source != "search":   # a fixed genotype: at most the hand-designed net's OPs
        assert measure(net, (3, 32, 32)).ops <= 1_069_696


# ---- end to end: search -> derive -> write -> retrain, and the written file retrained via model= ---------------
@pytest.mark.smoke
def test_search_then_retrain_through_train_and_genotype_file_reloads(compose, tmp_path):
    cfg = compose(TINY + ["model=nasb_supernet", "method=nasb", "method.search.arch_lr=0.05",
                          "method.derive.cells=[1,1,1]"])
    m = run(cfg)
    extra = m["extra"]
    assert extra["arch_steps"] == 2 and extra["alpha_shift_max"] > 0.01          # alpha moved (2 Adam steps)
    assert extra["genotype"].startswith("normal: ") and len(extra["genotype_per_epoch"]) == 1
    path = extra["genotype_file"]
    assert os.path.exists(path) and os.path.dirname(path).endswith("-seed0")
    written = yaml.safe_load(open(path))
    assert written["name"] == "nasb_cell" and written["cells"] == [1, 1, 1]
    assert glob.glob(str(tmp_path / "outputs" / "*" / "*" / "stage1-retrain" / "trained.pt"))
    # the final model is the derived net: its OPs are those of the written genotype built afresh
    derived = build_model("nasb_cell", num_classes=10, genotype=path, width=4, cells=[1, 1, 1])
    assert m["ops"] == measure(derived, (3, 32, 32)).ops
    # retrain the written genotype through model= (a fixed genotype: the retrain stage only)
    m2 = run(compose(TINY + ["model=nasb_cell", f"model.genotype={path}", "method=nasb", "method.genotype=model",
                             "method.stages=[{name: retrain, phase: retrain}]", "seed=1"]))
    assert m2["ops"] == m["ops"] and m2["extra"]["genotype"] == extra["genotype"]
    # the searched run's binary export stores the derived genotype, so the export alone rebuilds the derived net
    from engine.binary_export import export_checkpoint, load_export, rebuild_model
    final = glob.glob(str(tmp_path / "outputs" / "*" / "*-seed0" / "final.pt"))
    assert len(final) == 1
    out = str(tmp_path / "searched.crbin")
    assert export_checkpoint(final[0], out)["binary_weights"] > 0
    blob = torch.load(final[0], weights_only=False)
    trained, _ = rebuild_model(blob["config"], blob["method"])
    trained.load_state_dict(blob["model"])
    loaded = load_export(out, packed=False).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained.eval()(x))


# ---- the grid's claims compare a search only where alpha moved ------------------------------------------------
def _grid_row(experiment, seed, top1, shift=None):
    extra = {} if shift is None else {"alpha_shift_max": shift}
    return {"run_id": f"{experiment}-{seed}", "paper": "nasb", "dataset": "cifar10_jpeg", "method": "nasb",
            "fidelity": "reduced", "variant": "grid_3840img_8ep_sgd", "experiment": experiment, "seed": seed,
            "top1": top1, "extra": extra, "_judged": True}


@pytest.mark.parametrize("shift, verdict", [(0.09, "inconclusive"), (0.9, "held")])
def test_search_claims_are_judged_only_where_alpha_moved(shift, verdict):
    """The same clear top-1 lead (+5 points on every seed) is held when the search's alpha moved by more than 0.5
    and inconclusive, naming the signal, when it stayed near its initial value (the committed short search's case)."""
    from engine import references as R
    claim = next(c for c in R.load_references()["nasb"].claims if c.id == "grid_search_beats_random_cell")
    rows = [_grid_row("cifar10_jpeg_nasb_long_search", s, 35.0 + s * 0.1, shift) for s in range(3)]
    rows += [_grid_row("cifar10_jpeg_random_cell_reduced", s, 30.0 + s * 0.1 + (0.01 if s == 1 else 0.0))
             for s in range(3)]
    (comp,) = R.evaluate_claim(claim, rows).comparisons
    assert comp.verdict == verdict
    if verdict == "inconclusive":
        assert "did not act" in comp.why and "alpha_shift_max = 0.09" in comp.why


def test_long_search_takes_ten_times_the_alpha_steps_of_the_short_one(compose):
    """alpha steps = (search epochs - warm-up epochs) x steps per epoch on the search half of the subset."""
    def alpha_steps(exp):
        cfg = compose([f"experiment=nasb/{exp}"])
        search = next(s for s in cfg.method.stages if s.phase == "search")
        per_epoch = int(cfg.data.train_subset * (1 - cfg.method.search.arch_split)) // cfg.trainer.batch_size
        return (search.trainer.epochs - cfg.method.search.warmup_epochs) * per_epoch
    assert alpha_steps("cifar10_jpeg_nasb_reduced") == 60
    assert alpha_steps("cifar10_jpeg_nasb_long_search") == 600
