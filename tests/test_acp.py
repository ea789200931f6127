"""ACP against the official code (tests/golden/acp/: JingfeiChang/ACP's DBSCAN_clustering, initialize and one
PSOPruning cycle on fixed inputs; the JSON headers say how), its named variants, the exact complexity of the
structures the official code gives, the held-out split and a train.py smoke run."""
import copy
import os

import pytest
import torch

from methods.acp import (cluster_count, collect_features, init_state, inertia, pso_cycle, pso_move, pso_velocity,
                         sample_dims)
from tests.golden import ROOT, load

SHARED = os.environ.get("DATA_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture(scope="module")
def clustering():
    header, data = load("acp", "clustering")
    feats = torch.load(ROOT / "acp" / header["features"])["X"]
    return data, feats


@pytest.fixture(scope="module")
def pso():
    return load("acp", "pso_step")[1]


def _params(g, **over):
    p = {"cycles": 8, "k": g["k"], "step": g["step"], "c1": g["c1"], "c2": g["c2"], "chi": g["chi"],
         "v_max": g["max_vel"], "velocity": "official", "dim_range": "official", "clip": "official"}
    p.update(over)
    return p


def _fitness(g):
    t = g["fitness_target"]
    return lambda x: 90.0 - 0.1 * sum(abs(a - b) for a, b in zip(x, t))


def _init(g):
    d = len(g["max_channels"])
    s = torch.tensor(g["draws"]["init_s"]).view(g["swarm"], d)
    v = torch.tensor(g["draws"]["init_v"], dtype=torch.float64).view(g["swarm"], d)
    return init_state(g["netchannels"], g["max_channels"], _fitness(g), s, v)


def _step(g, **over):
    st = copy.deepcopy(_init(g))
    draws = {"dims": g["draws"]["param2change"], "R": g["draws"]["R"]}
    return pso_cycle(st, 0, _fitness(g), None, g["max_channels"], _params(g, **over), draws)


# ---------------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_cluster_count_matches_official_on_stored_features(clustering):
    data, feats = clustering
    c = data["clustering"]
    for layer, per_eps in c["layer_grid"].items():
        for eps, count in per_eps.items():
            assert cluster_count(feats[layer], float(eps)) == count, (layer, eps)
    # the features are the official function's: its counts at the run's radii come out of them
    for eps, counts in c["counts"].items():
        for layer in c["layer_grid"]:
            assert cluster_count(feats[layer], float(eps)) == counts[int(layer)]


@pytest.mark.golden
def test_cluster_count_is_clusters_plus_noise_and_shrinks_with_eps(clustering):
    data, feats = clustering
    grid = data["clustering"]["grid"]
    for layer, x in feats.items():
        counts = [cluster_count(x, e) for e in grid]
        assert all(a >= b for a, b in zip(counts, counts[1:])), (layer, counts)
        assert counts[0] <= x.shape[0]
    # 6 identical maps + 3 distinct ones: one cluster + 3 noise points; with 4 copies (< min_samples) all noise
    base = torch.eye(9, 16)
    x = torch.cat([base[:1].repeat(6, 1), base[1:4]])
    assert cluster_count(x, 0.01) == 1 + 3
    assert cluster_count(torch.cat([base[:1].repeat(4, 1), base[1:4]]), 0.01) == 7


@pytest.mark.golden
def test_feature_collection_matches_official_on_pretrained_resnet56(clustering):
    """Our hooks + batched averaging on the same 200 images give the official features and all 27 counts."""
    data, feats = clustering
    from omegaconf import OmegaConf

    from data import build_data
    from methods.common.channel_pruning import channel_groups
    from models import build_model
    from models.pretrained import load_pretrained, pretrained_info
    try:
        model = build_model("resnet56", num_classes=10)
        load_pretrained(model, "resnet56", 10)
        info = pretrained_info("resnet56")
        dcfg = OmegaConf.load(os.path.join(os.path.dirname(__file__), "..", "conf", "data", "cifar10_jpeg.yaml"))
        dcfg.root, dcfg.cache_dir = os.path.abspath(SHARED), os.path.join(os.path.dirname(__file__), "..", ".cache")
        dcfg.mean, dcfg.std = list(info.mean), list(info.std)
        bundle = build_data(dcfg, batch_size=100, eval_batch_size=500)
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"pretrained ResNet-56 or cifar10_jpeg not available: {e}")
    idx = torch.tensor(data["clustering"]["indices"])
    images = torch.cat([x for x, _ in bundle.test])[idx]
    names = channel_groups(model).names("inner")
    ours = collect_features(model, names, images)
    for layer, x in feats.items():
        torch.testing.assert_close(ours[names[int(layer)]], x, atol=1e-4, rtol=1e-4)
    for eps, counts in data["clustering"]["counts"].items():
        assert [cluster_count(ours[n], float(eps)) for n in names] == counts, eps


# ---------------------------------------------------------------------------------------------------
# PSO
# ---------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_population_initialisation_matches_official(pso):
    st = _init(pso)
    ref = pso["after_init"]
    assert st["x"] == ref["x"] and st["pbest"] == ref["pbest"] and st["gbest"] == ref["gbest"]
    assert st["fit"] == pytest.approx(ref["fit"], abs=1e-9) and st["gbest_fit"] == pytest.approx(ref["gbest_fit"])
    torch.testing.assert_close(torch.tensor(st["v"], dtype=torch.float64), torch.tensor(ref["v"], dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.golden
def test_one_pso_step_matches_official_with_the_velocity_quirk(pso):
    st = _step(pso, velocity="official")
    ref = pso["after_step"]
    assert st["x"] == ref["x"]
    torch.testing.assert_close(torch.tensor(st["v"], dtype=torch.float64), torch.tensor(ref["v"], dtype=torch.float64), atol=1e-12, rtol=0)
    assert st["fit"] == pytest.approx(ref["particle_fit"], abs=1e-9)
    assert st["pbest"] == ref["pbest"] and st["pbest_fit"] == pytest.approx(ref["pbest_fit"], abs=1e-9)
    assert st["gbest"] == ref["gbest"] and st["gbest_fit"] == pytest.approx(ref["gbest_fit"], abs=1e-9)


@pytest.mark.golden
@pytest.mark.parametrize("broken", [dict(chi=0.73), dict(c2=1.5), dict(step=1.0), dict(cycles=9), dict(clip="paper"),
                                    dict(v_max=3.0)])
def test_golden_step_detects_a_changed_constant(pso, broken):
    """(c1 is invisible in a first cycle: pbest_i is still x_i, so c1 R (pbest - x) = 0.)"""
    st = _step(pso, **broken)
    ref = pso["after_step"]
    same_v = torch.allclose(torch.tensor(st["v"], dtype=torch.float64), torch.tensor(ref["v"], dtype=torch.float64),
                            atol=1e-12, rtol=0)
    assert st["x"] != ref["x"] or not same_v


@pytest.mark.golden
def test_paper_velocity_updates_the_moved_dimensions(pso):
    """velocity=paper: the same positions (moves use the old velocity); velocities change exactly at the moved
    dimensions, by the same formula; the official quirk changes dimensions 0..k-1 instead."""
    init, paper, official = _init(pso), _step(pso, velocity="paper"), _step(pso, velocity="official")
    assert paper["x"] == official["x"]
    assert paper["v"] != official["v"]
    w = inertia(0, 8)
    assert w == pytest.approx(pso["w"]) == pytest.approx(0.6)
    for i, dims in enumerate(pso["draws"]["param2change"]):
        v0 = init["v"][i]
        for j in range(len(v0)):
            if j not in dims:
                assert paper["v"][i][j] == v0[j]
    # particle 0 sees the initial pbest/gbest: hand-check its updated dims
    x0, v0, r, dims = init["x"][0], init["v"][0], pso["draws"]["R"][0], pso["draws"]["param2change"][0]
    for j in dims:
        u = 0.729 * (w * v0[j] + 2 * r * (init["pbest"][0][j] - x0[j]) + 2 * r * (init["gbest"][j] - x0[j]))
        assert paper["v"][0][j] == pytest.approx(max(-2.0, min(2.0, u)), abs=1e-12)


def test_move_clip_and_dim_range_variants():
    max_ch = [16, 16, 16]
    assert pso_move([15, 1, 8], [2.0, -2.0, 0.9], [0, 1, 2], max_ch) == [15, 1, 9]      # 19 -> C-1, -3 -> 1, int(9.8)
    assert pso_move([15, 1, 8], [2.0, -2.0, 0.9], [0, 1, 2], max_ch, clip="paper") == [16, 1, 9]
    assert pso_move([16, 5, 5], [0.0, 0.0, 0.0], [0], max_ch) == [16, 5, 5]             # = C stays C (code)
    g = torch.Generator().manual_seed(0)
    drawn = {d for _ in range(200) for d in sample_dims(g, 5, 8, "official")}
    assert drawn == {0, 1, 2, 3}                                                         # never the last layer
    drawn = {d for _ in range(200) for d in sample_dims(g, 5, 8, "all")}
    assert drawn == {0, 1, 2, 3, 4}
    v = pso_velocity([1.0] * 4, [4, 4, 4, 4], [4] * 4, [4] * 4, 0.5, 0.3, [3], variant="paper")
    assert v == [1.0, 1.0, 1.0, pytest.approx(0.729 * 0.5)]
    v = pso_velocity([1.0] * 4, [4, 4, 4, 4], [4] * 4, [4] * 4, 0.5, 0.3, [3], variant="official")
    assert v == [pytest.approx(0.729 * 0.5), 1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------------
# exact complexity of the structures the official code gives (thop 0.1.1 on the official model classes)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_complexity_of_official_structures_is_exact(clustering):
    from engine import references as R
    from methods.common.channel_pruning import apply_channel_config, channel_groups
    from models import build_model
    data, _ = clustering
    conv = R.load_references()["acp"].conventions
    for key, ref in data["complexity"].items():
        arch = key.split("_")[0]
        model = build_model(arch, num_classes=10)
        if "food" in ref:
            if arch == "vgg16":
                model = build_model("vgg16", num_classes=10, channels=ref["food"])
            else:
                spec = channel_groups(model)
                names = spec.names("inner")
                model = apply_channel_config(model, {n: k for n, k in zip(names, ref["food"]) if k < spec[n].width})
        c = R.convention_counts(model, (3, 32, 32), conv)
        # the official CIFAR VGG ends its features with an identity AvgPool2d(1), which thop counts once per output
        # element (C_last x 1 x 1); the suite's VGG has no such layer. The official ResNet pools with an
        # nn.AdaptiveAvgPool2d module (thop: (8*8 + 1) ops per output channel), ours with the functional form, which
        # the suite's thop-0.1.1 terms do not see: both are C_last-sized terms, added here
        extra = model.fc.in_features * (1 if arch == "vgg16" else 8 * 8 + 1)
        assert (c["flops"] + extra, c["params"]) == (ref["flops"], ref["params"]), key
    # the example structure in get_flops_params.py: the numbers the note quotes (251.72M, 10.29M)
    ex = data["complexity"]["vgg16_get_flops_params_example"]
    assert round(ex["flops"] / 1e6, 2) == 251.72 and round(ex["params"] / 1e6, 2) == 10.29


# ---------------------------------------------------------------------------------------------------
# held-out split, search split, end to end
# ---------------------------------------------------------------------------------------------------
def test_heldout_split_is_fixed_disjoint_and_unaugmented():
    from data.tensor_loader import TensorLoader
    from methods.common.heldout import heldout_split
    imgs = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 4, 4).contiguous()
    labels = torch.arange(20)
    loader = TensorLoader(imgs, labels, 4, [0, 0, 0], [1 / 255] * 3, train=True, crop_padding=1, flip=True, seed=3)
    fit, held = heldout_split(loader, 5)
    fit2, held2 = heldout_split(TensorLoader(imgs, labels, 4, [0, 0, 0], [1 / 255] * 3, train=True, seed=9), 5)
    h = torch.cat([y for _, y in held])
    assert torch.equal(h, torch.cat([y for _, y in held2])) and len(h) == 5           # same for every seed
    f = set(fit.labels.tolist())
    assert not f & set(h.tolist()) and len(f) == 15
    assert fit.crop_padding == 1 and fit.flip and held.crop_padding == 0 and not held.flip
    x, y = next(iter(held))
    assert torch.equal(x[:, 0, 0, 0], y.float())                                       # normalisation kept
    with pytest.raises(ValueError, match="held-out size"):
        heldout_split(loader, 20)


TINY = ["data=synthetic", "model=resnet20", "method=acp", "trainer.max_steps=2", "trainer.batch_size=16",
        "trainer.eval_batch_size=64", "trainer.limit_eval_batches=1", "method.latency.repeats=1",
        "method.latency.warmup=0", "method.latency.batch_sizes=[1,2]", "method.pso.swarm=2", "method.pso.cycles=1",
        "method.pso.k=2", "method.fitness.steps=1", "method.cluster_images=16", "method.heldout_size=64",
        "method.eps=0.3"]


@pytest.mark.smoke
def test_acp_runs_end_to_end_and_rebuilds(compose, tmp_path):
    from engine.runner import run
    from tests.test_prune_smoke import _rebuild
    cfg = compose(TINY + [f"method.search_cache={tmp_path}/acp"])
    m = run(cfg)
    extra = m["extra"]
    assert len(extra["cluster_counts"]) == 9 and extra["fitness_evals"] == 2 + 2
    assert extra["search_split"] == "heldout" and extra["velocity"] == "paper"
    assert m["params"] == extra["compact_params"] <= extra["dense_params"]
    _rebuild(compose, m, TINY + [f"method.search_cache={tmp_path}/acp"], tmp_path)
    # a control of the same seed reuses the cached search and matches its FLOPs from below
    m2 = run(compose(TINY + [f"method.search_cache={tmp_path}/acp", "method.allocation=uniform", "name=uni"]))
    assert m2["extra"]["target_flops"] >= m2["flops"] and m2["extra"]["fitness_evals"] == 1


@pytest.mark.smoke
def test_search_split_test_scores_on_the_test_set(compose, tmp_path, monkeypatch):
    from engine.runner import run
    from methods.acp import ACP
    seen = []
    orig = ACP.train_and_score

    def spy(self, model, fit_loader, score_loader, ctx):
        seen.append(score_loader is ctx.test_loader)
        return orig(self, model, fit_loader, score_loader, ctx)

    monkeypatch.setattr(ACP, "train_and_score", spy)
    run(compose(TINY + ["method.search_split=test", "method.pso.cycles=0", f"method.search_cache={tmp_path}/t"]))
    run(compose(TINY + ["method.pso.cycles=0", f"method.search_cache={tmp_path}/h", "name=h"]))
    assert seen == [True, True, False, False]


ARMS = ["acp", "cluster_only", "uniform", "l1"]


@pytest.mark.parametrize("arm", ARMS)
def test_reduced_experiment_files_compose_with_one_variant(compose, arm):
    from engine.config import validate
    from methods import build_method
    cfg = compose([f"experiment=acp/cifar10_jpeg_resnet56_{arm}"])
    validate(cfg)
    assert cfg.paper == "acp" and cfg.fidelity == "reduced" and cfg.variant == "eps075_pso10x8_fit10_3ep_40x128"
    assert cfg.method.search_split == "heldout" and cfg.method.velocity == "paper"
    assert build_method(cfg.method).family == "prune"


@pytest.mark.smoke
def test_l1_control_runs_the_search_it_matches(compose, tmp_path):
    """A control with no cached search runs it (tiny), then keeps its FLOPs from below with L1-chosen channels."""
    from engine.runner import run
    m = run(compose(["experiment=acp/cifar10_jpeg_resnet56_l1", *TINY[:1], "model=resnet20", "model.pretrained=false",
                     *TINY[3:], f"method.search_cache={tmp_path}/c"]))
    assert m["flops"] <= m["extra"]["target_flops"] and m["extra"]["allocation"] == "uniform"
    assert len({w for w in m["extra"]["widths"]}) <= 3          # one rate: at most one width per stage
