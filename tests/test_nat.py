"""NAT / NAT++ (methods/nat.py, models/nat_cells.py): transition rule, masked softmax, GCN policy, REINFORCE, search
and derivation. Goldens from the official NATv2 code: tests/golden/nat/ (README there)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from methods.nat import (NAT_TRANSITIONS, TRANSITIONS, NATPolicy, advantage, baseline_update, batch_accuracy,
                         bm_softmax, cell_adjacency, masked_log_prob_entropy, policy_loss, reward, sample_input_arch,
                         shared_weight_accuracy, transform_cell, transition_mask)
from models.nat_cells import DARTS, PRIMITIVES, RESBLOCK, NATNet, NATSupernet, load_genotype, make_op, nat_cell

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "nat")


def golden(stem):
    with open(os.path.join(GOLDEN, f"{stem}.json")) as f:
        return json.load(f)


def macs(module: torch.nn.Module, shape) -> int:
    """Conv/linear MACs by forward hooks (the engine's convention, core/complexity.py)."""
    from core.complexity import measure
    return int(measure(module, shape).summary()["macs"])


# ---- transition rule and masked softmax -------------------------------------------------------------------------
@pytest.mark.golden
def test_transition_mask_equals_the_official_dictionary():
    g = golden("transition_masks")
    assert g["primitives"] == list(PRIMITIVES)
    assert transition_mask(TRANSITIONS).int().tolist() == g["mask"]


def test_nat_v1_transitions_are_same_skip_null():
    m = transition_mask(NAT_TRANSITIONS)
    assert m.sum(1).tolist() == [2 if o in ("skip_connect", "null") else 3 for o in PRIMITIVES]
    for i, o in enumerate(PRIMITIVES):
        assert {PRIMITIVES[j] for j in m[i].nonzero().flatten().tolist()} == {o, "skip_connect", "null"}


def test_masked_softmax_support_is_the_transition_set_for_every_op():
    mask = transition_mask()
    logits = torch.randn(len(PRIMITIVES), len(PRIMITIVES), generator=torch.Generator().manual_seed(0)) * 5
    p = bm_softmax(logits, mask)
    for i, o in enumerate(PRIMITIVES):
        assert {PRIMITIVES[j] for j in (p[i] > 0).nonzero().flatten().tolist()} == set(TRANSITIONS[o])
        n_valid = len(TRANSITIONS[o])
        assert p[i].sum().item() == pytest.approx(1 + n_valid * 1e-5, abs=1e-6)   # official: + 1e-5 per valid op
    # a huge logit on an invalid op changes nothing
    bumped = logits.clone()
    bumped[PRIMITIVES.index("skip_connect"), PRIMITIVES.index("conv_5x5")] = 1e4
    assert torch.equal(bm_softmax(bumped, mask), p)


def _cost_increases():
    """Every (op, op', stride) with op' in T(op) whose MACs exceed op's on a 8-channel 8x8 input."""
    out = []
    for stride in (1, 2):
        cost = {o: macs(make_op(o, 8, stride, affine=True), (8, 8, 8)) for o in PRIMITIVES}
        for o in PRIMITIVES:
            for t in TRANSITIONS[o]:
                if cost[t] > cost[o]:
                    out.append((o, t, stride))
    return out


def test_no_transition_adds_madds_except_to_skip_on_a_reduction_edge():
    # The released rules never raise an op's MAdds on a stride-1 edge. On a stride-2 (reduction) edge skip_connect is
    # FactorizedReduce (two 1x1 convs), so null -> skip (the paper's stated exception) and pool -> skip (pooling has
    # no MAdds) add MAdds: exactly these five.
    assert sorted(_cost_increases()) == sorted([("null", "skip_connect", 2), ("max_pool_3x3", "skip_connect", 2),
                                                ("max_pool_5x5", "skip_connect", 2), ("avg_pool_3x3", "skip_connect", 2),
                                                ("avg_pool_5x5", "skip_connect", 2)])


def test_transformed_network_never_has_more_madds_without_the_reduction_skip_exception():
    policy = NATPolicy(edge_hid=4, nfeat=8, gcn_hid=4)
    mask, gen = transition_mask(), torch.Generator().manual_seed(3)
    exception = {"null", "max_pool_3x3", "max_pool_5x5", "avg_pool_3x3", "avg_pool_5x5"}
    checked = 0
    for _ in range(20):
        beta = {"normal": sample_input_arch(4, PRIMITIVES, gen), "reduce": sample_input_arch(4, PRIMITIVES, gen)}
        alpha = {k: transform_cell(policy, beta[k], mask, gen)[0] for k in ("normal", "reduce")}
        hit = any(a[0] == "skip_connect" and b[0] in exception and b[1] < 2
                  for a, b in zip(alpha["reduce"], beta["reduce"]))
        m_in = macs(NATNet(beta, width=4, layers=3), (3, 16, 16))
        m_out = macs(NATNet(alpha, width=4, layers=3), (3, 16, 16))
        if not hit:
            assert m_out <= m_in
            checked += 1
    assert checked >= 5


def test_null_to_skip_on_a_reduction_edge_adds_exactly_a_factorized_reduce():
    beta = load_genotype(RESBLOCK)
    alpha = json.loads(json.dumps(beta))
    alpha["reduce"][0][0] = "skip_connect"            # null(0, 2) -> skip(0, 2) in the reduction cell
    w, layers = 4, 3                                   # cells: normal, reduce (layer 1, c=8), reduce (layer 2, c=16)
    extra = macs(NATNet(alpha, width=w, layers=layers), (3, 16, 16)) - macs(NATNet(beta, width=w, layers=layers),
                                                                             (3, 16, 16))
    # FactorizedReduce(c, c) at stride 2: c * c MACs per output pixel; layer 1: c=8 at 8x8, layer 2: c=16 at 4x4
    assert extra == 8 * 8 * 8 * 8 + 16 * 16 * 4 * 4


@pytest.mark.golden
def test_shipped_official_transformations_obey_the_released_rules():
    pairs = golden("shipped_transformations")["pairs"]
    checked = 0
    for base, versions in pairs.items():
        for kind in ("normal", "reduce"):
            for method, table in (("natpp", TRANSITIONS), ("nat", NAT_TRANSITIONS)):
                if method not in versions:
                    continue
                for (o, f, t), (o2, f2, t2) in zip(versions["input"][kind], versions[method][kind]):
                    assert (f, t) == (f2, t2)
                    assert o2 in table[o], (base, method, kind, o, o2)
                    checked += 1
    assert checked == 8 * 2 * 2 * 3 + 10 * 2 * 2     # DARTS, ResBlock, VGG (8 edges), ENAS (10): both cells, NAT and NAT++


# ---- the policy ---------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_policy_forward_matches_the_official_transformer():
    g = golden("policy_forward")
    s = g["sizes"]
    policy = NATPolicy(len(PRIMITIVES), s["steps"], s["edge_hid"], s["nfeat"], s["gcn_hid"], 0.0)
    policy.load_state_dict({k: torch.tensor(v) for k, v in g["state_dict"].items()})
    policy.eval()
    mask = transition_mask()
    for name, case in g["cases"].items():
        edges = case["edges"]
        adj = cell_adjacency(edges, s["steps"] + 2)
        assert adj.tolist() == case["adjacency"], name
        idx = torch.tensor([PRIMITIVES.index(op) for op, _, _ in edges])
        with torch.no_grad():
            logits = policy(idx, adj)
        torch.testing.assert_close(logits, torch.tensor(case["logits"]), rtol=1e-5, atol=1e-6)
        row_mask = mask[idx]
        probs = bm_softmax(logits, row_mask)
        torch.testing.assert_close(probs, torch.tensor(case["probs"]), rtol=1e-5, atol=1e-6)
        logp, ent = masked_log_prob_entropy(probs, row_mask)
        act = torch.tensor([PRIMITIVES.index(op) for op, _, _ in case["sampled"]])
        assert float(logp.gather(1, act[:, None]).sum()) == pytest.approx(case["log_p"], rel=1e-5)
        assert float(ent.sum()) == pytest.approx(case["entropy"], rel=1e-5)


@pytest.mark.golden
def test_policy_defaults_have_the_official_parameter_shapes():
    g = golden("policy_forward")
    ours = {k: list(v.shape) for k, v in NATPolicy().state_dict().items()}
    assert ours == g["default_shapes"]


def test_adjacency_counts_duplicate_edges_and_has_no_self_loops():
    adj = cell_adjacency([["skip_connect", 1, 2], ["sep_conv_3x3", 1, 2], ["null", 0, 3], ["conv_1x1", 2, 3],
                          ["conv_3x3", 0, 4], ["conv_3x3", 3, 4], ["skip_connect", 4, 5], ["null", 2, 5]], 6)
    assert adj[2, 1] == 2 and adj[3, 0] == 1 and adj[5, 2] == 1 and adj.sum() == 8 and adj.diagonal().sum() == 0
    assert adj[:2].sum() == 0      # the cell inputs aggregate nothing


def test_sampled_transformations_are_always_valid():
    policy = NATPolicy(edge_hid=4, nfeat=8, gcn_hid=4)
    mask, gen = transition_mask(), torch.Generator().manual_seed(0)
    for _ in range(20):
        beta = sample_input_arch(4, PRIMITIVES, gen)
        assert all(op != "null" and 0 <= f < t for op, f, t in beta)
        assert [t for _, _, t in beta] == [2, 2, 3, 3, 4, 4, 5, 5]
        alpha, logp, ent, _ = transform_cell(policy, beta, mask, gen)
        assert all(a[0] in TRANSITIONS[b[0]] and a[1:] == b[1:] for a, b in zip(alpha, beta))
        assert float(logp.detach()) < 0 and float(ent.detach()) > 0


# ---- REINFORCE ----------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_reinforce_loss_and_baseline_match_the_official_code():
    g = golden("reinforce")
    y = torch.tensor(g["targets"])
    b = 0.0
    for st in g["steps"]:
        assert b == pytest.approx(st["baseline_before"], abs=1e-7)
        r = reward(batch_accuracy(torch.tensor(st["optimized_logits"]), y), batch_accuracy(torch.tensor(st["logits"]), y))
        adv = advantage(r, b)
        assert adv == pytest.approx(st["returned_reward"], abs=1e-6)
        loss = policy_loss(torch.tensor(st["logp_normal"]), torch.tensor(st["logp_reduce"]), adv,
                           torch.tensor(st["ent_normal"]), torch.tensor(st["ent_reduce"]))
        assert float(loss) == pytest.approx(st["loss"], rel=1e-5, abs=1e-6)
        b = baseline_update(b, r, adv, 0.99, "official")
        assert b == pytest.approx(st["baseline_after"], abs=1e-6)


def test_baseline_rules_differ_as_documented():
    # official: b averages the advantage (stationary b = mean R / 2); reward: b averages R (stationary b = mean R)
    b_off = b_rew = 0.0
    for _ in range(3000):
        b_off = baseline_update(b_off, 0.1, advantage(0.1, b_off), 0.99, "official")
        b_rew = baseline_update(b_rew, 0.1, advantage(0.1, b_rew), 0.99, "reward")
    assert b_off == pytest.approx(0.05, abs=1e-6) and b_rew == pytest.approx(0.1, abs=1e-6)


def test_reward_sign_and_policy_gradient_direction():
    assert reward(0.75, 0.5) == 0.25 and reward(0.5, 0.75) == -0.25
    policy = NATPolicy(edge_hid=4, nfeat=8, gcn_hid=4)
    mask, gen = transition_mask(), torch.Generator().manual_seed(1)
    edges = DARTS["normal"]
    alpha, logp, ent, _ = transform_cell(policy, edges, mask, gen)
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    policy_loss(logp, torch.zeros(()), 1.0, torch.zeros(()), torch.zeros(()), (0.0, 0.0)).backward()
    opt.step()
    idx = torch.tensor([PRIMITIVES.index(op) for op, _, _ in edges])
    act = torch.tensor([PRIMITIVES.index(op) for op, _, _ in alpha])
    with torch.no_grad():
        p = bm_softmax(policy(idx, cell_adjacency(edges, 6)), mask[idx])
        after = masked_log_prob_entropy(p, mask[idx])[0].gather(1, act[:, None]).sum()
    assert float(after) > float(logp.detach())        # a positive advantage makes the sampled cell more likely


# ---- super-net and derivation -------------------------------------------------------------------------------------
def test_supernet_runs_any_cell_and_scoring_keeps_bn_statistics():
    torch.manual_seed(0)
    net = NATSupernet(10, 3, width=4, layers=3)
    g = load_genotype(DARTS)
    loader = [(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))) for _ in range(2)]
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    acc = shared_weight_accuracy(net, loader, g, torch.device("cpu"))
    assert 0.0 <= acc <= 1.0
    after = {k: v for k, v in net.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.arch["normal"][0] == [tuple(e) for e in g["normal"]]
    # the arch travels in the state dict (resume)
    other = NATSupernet(10, 3, width=4, layers=3)
    other.load_state_dict(net.state_dict())
    assert other.arch == net.arch


def test_search_splits_are_disjoint_and_hold_the_derivation_images_out():
    """derive.split=heldout: the derivation images are in neither the weights' nor the policy's split, and those two
    divide the rest w_share : 1 - w_share (labels carry the image ids here)."""
    from data.tensor_loader import TensorLoader
    from methods.base import RunContext
    from methods.nat import NAT
    n, norm = 300, ([0.5] * 3, [0.25] * 3)
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    train = TensorLoader(images, torch.arange(n), 16, *norm, train=True)
    test = TensorLoader(images[:50], torch.arange(1000, 1050), 16, *norm, train=False)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=4, device=torch.device("cpu"), train_loader=train,
                     test_loader=test, seed=0)
    stages = [{"name": "search", "phase": "search"}]
    w, pol, der = NAT({"derive": {"heldout_size": 60}, "stages": stages})._splits(ctx)
    ids = [set(x.labels.tolist()) for x in (w, pol, der)]
    assert [len(s) for s in ids] == [96, 144, 60]                 # 40 : 60 of the 240 left after the held-out 60
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and set().union(*ids) == set(range(n))
    assert pol.train and not der.train and der.batch_size == 64     # the policy split augments; scoring does not
    w, pol, der = NAT({"derive": {"split": "test"}, "stages": stages})._splits(ctx)
    assert der is test and len(w.labels) + len(pol.labels) == n


def test_derivation_batches_mix_classes_on_a_class_sorted_training_set():
    """Scoring uses BN batch statistics, so a batch of one class is normalised to look like every other class (the
    super-net then scores any cell near chance). The held-out split is in index order; on a class-sorted set
    (labels 0..9 in blocks of 30) derive.order=shuffled serves it in one fixed random order, index keeps blocks."""
    from data.tensor_loader import TensorLoader
    from methods.base import RunContext
    from methods.nat import NAT
    n, norm = 300, ([0.5] * 3, [0.25] * 3)
    train = TensorLoader(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n) // 30, 16, *norm, train=True)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=4, device=torch.device("cpu"), train_loader=train,
                     test_loader=None, seed=0)
    stages = [{"name": "search", "phase": "search"}]

    def first_batch_classes(order, seed=0):
        der = NAT({"derive": {"heldout_size": 120, "order": order, "batch_size": 16}, "stages": stages})._splits(
            RunContext(**{**ctx.__dict__, "seed": seed}))[2]
        return der, len(set(next(iter(der))[1].tolist()))

    index, n_index = first_batch_classes("index")
    mixed, n_mixed = first_batch_classes("shuffled")
    assert n_index <= 2 and n_mixed >= 6                    # 16 index-ordered images (~12 per class) span 2
    assert sorted(mixed.labels.tolist()) == sorted(index.labels.tolist())      # the same images, reordered
    again, _ = first_batch_classes("shuffled")
    assert torch.equal(again.labels, mixed.labels)                              # fixed per run seed
    with pytest.raises(ValueError, match="method.derive.order"):
        NAT({"derive": {"order": "random"}, "stages": stages})


@pytest.mark.parametrize("genotype_concat, scored_concat", [(False, [2, 3, 4, 5]), (True, [5])])
def test_derivation_scores_cells_with_the_supernets_concat(monkeypatch, genotype_concat, scored_concat):
    """The official derive.py builds the super-net without a concat, so every intermediate node reaches the next cell
    while candidates are scored (the super-net was trained that way on uniform cells); the kept ResBlock cell still
    carries concat [5] into the retrain. derive.genotype_concat=true scores with [5] (ours before 2026-12-02)."""
    import methods.nat as nat
    from methods.base import RunContext
    scored = []

    def record(supernet, loader, genotype, device, limit=None):
        scored.append((genotype["normal_concat"], genotype["reduce_concat"]))
        return 0.5
    monkeypatch.setattr(nat, "shared_weight_accuracy", record)
    method = nat.NAT({"derive": {"n_archs": 3, "genotype_concat": genotype_concat},
                      "stages": [{"name": "search", "phase": "search"}, {"name": "retrain", "phase": "retrain"}]})
    ctx = RunContext(num_classes=10, in_channels=3, image_size=8, device=torch.device("cpu"), train_loader=None,
                     test_loader=None, seed=0)
    supernet = method.transform(nat_cell(genotype="resblock", width=4, layers=3), ctx)
    method._derive_loader = []
    kept = method._derive(supernet, ctx)
    assert scored == [(scored_concat, scored_concat)] * 4          # the input cell, then the 3 candidates
    assert kept["normal_concat"] == kept["reduce_concat"] == [5]


def test_dead_output_finds_cells_whose_concat_nodes_only_see_null():
    from methods.nat import dead_output
    res = load_genotype(RESBLOCK)
    assert dead_output(res) == []
    dead5 = [("null", f, t) if t == 5 else (op, f, t) for op, f, t in res["normal"]]      # both inputs of node 5
    assert dead_output({**res, "normal": dead5}) == ["normal"]
    # node 4 cut off from the inputs (null(0,4), and conv(3,4) -> null) still leaves skip(2,5): alive
    cut4 = [("null", f, t) if (f, t) == (3, 4) else (op, f, t) for op, f, t in res["reduce"]]
    assert dead_output({**res, "reduce": cut4}) == []
    # ... unless node 2 is dead too: null(0,2) and skip(1,2) -> null
    cut24 = [("null", f, t) if (f, t) in {(1, 2), (3, 4)} else (op, f, t) for op, f, t in res["reduce"]]
    assert dead_output({**res, "reduce": cut24}) == ["reduce"]
    assert dead_output(load_genotype(DARTS)) == []


def test_derived_network_concat_widths():
    net = NATNet(RESBLOCK, width=4, layers=3)        # concat [5]: each cell outputs C channels
    assert net.classifier.in_features == 16
    assert NATNet(DARTS, width=4, layers=3).classifier.in_features == 64
    with pytest.raises(ValueError, match="model.genotype.normal edge 0"):
        load_genotype({"normal": [["conv_7x7", 0, 2]] + DARTS["normal"][1:], "reduce": DARTS["reduce"]})


def test_config_errors_name_the_key():
    from methods.nat import NAT
    with pytest.raises(ValueError, match="method.transitions"):
        NAT({"transitions": "bogus"})
    with pytest.raises(ValueError, match="method.policy.baseline_update"):
        NAT({"policy": {"baseline_update": "bogus"}})
    with pytest.raises(ValueError, match="method.stages"):
        NAT({"stages": [{"name": "retrain", "phase": "retrain"}]})


SMALL = ["data=synthetic", "model.width=4", "model.layers=3", "trainer.batch_size=16", "trainer.epochs=1",
         "method.derive.heldout_size=64", "method.derive.n_archs=3", "logger=none"]


@pytest.mark.smoke
def test_search_derive_retrain_through_the_engine(compose):
    from engine.runner import run
    cfg = compose(["method=nat", "model=nat_darts", *SMALL, "trainer.max_steps=3"])
    out = run(cfg)
    extra = out["extra"]
    assert out["steps"] == 6 and extra["policy_steps"] == 3 and extra["policy_shift"] > 0
    assert len(extra["derive_candidate_accs"]) == 3 and extra["derive_split"] == "heldout"
    assert extra["derive_best_acc"] == max(extra["derive_candidate_accs"])
    alpha = {"normal": [], "reduce": []}
    for part in extra["genotype"].split("; "):
        kind, rest = part.split(": ", 1)
        alpha[kind] = [e.split("(")[0] for e in rest.split(" concat")[0].split(" ")]
    for kind in ("normal", "reduce"):
        assert all(a in TRANSITIONS[b[0]] for a, b in zip(alpha[kind], DARTS[kind]))
    assert os.path.exists(extra["genotype_file"])
    # the row's MAdds (what the fewer-MAdds claims compare) are the derived network's, not the super-net's
    import yaml
    body = yaml.safe_load(open(extra["genotype_file"]))
    derived = NATNet(body["genotype"], 10, 3, body["width"], body["layers"], body["steps"], body["stem_multiplier"])
    assert out["macs"] == macs(derived, (3, 32, 32)) > 0


@pytest.mark.slow
def test_experiment_files_compose_and_run_two_steps(compose):
    from engine.runner import run
    here = os.path.join(os.path.dirname(os.path.dirname(__file__)), "conf", "experiment", "nat")
    for f in sorted(os.listdir(here)):
        cfg = compose([f"experiment=nat/{f[:-5]}", "data=synthetic", "data.train_subset=null", "data.test_subset=null",
                       "trainer.max_steps=2", "logger=none"]
                      + (["method.derive.heldout_size=64", "method.derive.n_archs=2"] if "_nat" in f else []))
        run(cfg)


@pytest.mark.slow
@pytest.mark.smoke
@pytest.mark.parametrize("kill_at", [2, 3], ids=["mid_search", "after_search"])
def test_killed_run_resumes_to_the_uninterrupted_run(compose, monkeypatch, kill_at):
    """Killed at the kill_at-th evaluation (2: in the search's second epoch, the first checkpointed: policy, its
    optimiser, the baseline, the current input cell and the policy split's position come back; 3: in the retrain, the
    finished search replayed with its genotype, no new derivation): the run ends where the uninterrupted one does."""
    from conftest import kill_at_evaluation
    from engine.runner import run
    ov = ["method=nat", "model=nat_resblock", *SMALL, "trainer.limit_batches=2", "trainer.epochs=2",
          "trainer.eval_every=1", "seed=3"]
    reference = run(compose(ov + ["paths.output_dir=${paths.results_dir}/../straight"]))
    restore = kill_at_evaluation(monkeypatch, kill_at)
    with pytest.raises(KeyboardInterrupt):
        run(compose(ov))
    restore()
    resumed = run(compose(ov))
    for key in ("genotype", "derive_candidate_accs", "baseline", "policy_shift", "search_per_epoch", "policy_steps"):
        assert resumed["extra"][key] == reference["extra"][key], key
    assert resumed["extra"]["policy_steps"] == 4
    assert (resumed["top1"], resumed["loss"]) == (reference["top1"], reference["loss"])


# ---- the abstract's claims pair each transformed cell with its input, whatever epochs the search added -----------
def _grid_row(method, experiment, variant, seed, top1, macs, epochs):
    return {"run_id": f"{experiment}-{seed}", "paper": "nat", "dataset": "cifar10_jpeg", "model": "nat_cell",
            "method": method, "fidelity": "reduced", "variant": variant, "experiment": experiment, "seed": seed,
            "top1": top1, "macs": macs, "epochs": epochs, "_judged": True,
            "extra": {"changed_edges": 9, "derive_input_acc": 0.25, "policy_shift": 0.5}}


def test_abstract_claims_pair_each_searched_cell_with_its_input_per_cell_type():
    from engine import references as R
    claims = {c.id: c for c in R.load_references()["nat"].claims}
    rows = []
    for s in range(3):
        for cell, variant in (("darts", "v_darts"), ("resblock", "v_res")):
            rows += [_grid_row("baseline", f"cifar10_jpeg_{cell}_original", variant, s, 50.0 + s * 0.2, 8e6, 8),
                     _grid_row("nat", f"cifar10_jpeg_{cell}_nat", variant, s, 51.0 + s * 0.3, 5e6 + s * 1e5, 68),
                     _grid_row("nat", f"cifar10_jpeg_{cell}_nat_random", variant, s, 40.0, 4e6 + s * 1e5, 68)]
    accurate = R.evaluate_claim(claims["nat_more_accurate"], rows)
    assert {(c.better.experiment, c.worse.experiment) for c in accurate.comparisons} == {
        ("cifar10_jpeg_darts_nat", "cifar10_jpeg_darts_original"),
        ("cifar10_jpeg_resblock_nat", "cifar10_jpeg_resblock_original")}   # the lr-0 controls are not NAT
    assert accurate.status == "held"
    cost = R.evaluate_claim(claims["nat_no_extra_cost"], rows)
    assert len(cost.comparisons) == 4 and cost.status == "held"     # every transformed arm, per cell type


@pytest.mark.parametrize("inputs, nulls", [("uniform", False), ("uniform_null", True)])
def test_search_input_cells_draw_null_only_in_the_uniform_null_variant(inputs, nulls):
    # official: ops uniform over all but null; uniform_null (ours) also trains the shared weights on single-input
    # nodes, which an input cell with null edges (the ResNet block) has
    from methods.base import RunContext
    from methods.nat import NAT
    method = NAT({"search_inputs": inputs,
                  "stages": [{"name": "search", "phase": "search"}, {"name": "retrain", "phase": "retrain"}]})
    ctx = RunContext(num_classes=10, in_channels=3, image_size=8, device=torch.device("cpu"), train_loader=None,
                     test_loader=None, seed=0)
    method.transform(nat_cell(genotype="resblock", width=4, layers=3), ctx)
    ops = [op for _ in range(30) for kind in ("normal", "reduce") for op, _, _ in method._next_beta()[kind]]
    assert ("null" in ops) is nulls
    assert len(set(ops)) == len(PRIMITIVES) - (not nulls)          # every other op drawn in 480 edges
    with pytest.raises(ValueError, match="method.search_inputs"):
        NAT({"search_inputs": "bogus"})
