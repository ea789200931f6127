"""AutoReCon (method=autorecon): the cell generator space (mixed op = weighted sum, by hand), the search's gradients
and steps, argmax derivation, parity of the discovered CIFAR-10 generator with the co-author code
(tests/golden/autorecon/), and tiny train.py runs (searched and discovered generators; no training image read)."""
import math
import os
import re

import pytest
import torch
import torch.nn as nn

from engine.runner import run
from methods.autorecon import (GENOTYPE_FILE, AutoReCon, alpha_entropy_ratio, arch_step, derive_genotype,
                               reconstruction_loss, weight_step)
from methods.common.generator_cells import (CHOICES, DISCOVERED, OPS, ROWS, CellGenerator, Edge, Identity, Zero,
                                            mixed_op, relaxed_weights)
from methods.gdfq import BNStatHooks, build_generator
from tests.golden import load
from tests.test_gdfq import SMALL, _forbid_training_loader, _one_thread  # noqa: F401 (autouse: one thread)

HEADER, G = load("autorecon", "ait_generator_cifar10")
TOL = dict(rtol=HEADER["tolerance"]["rtol"], atol=HEADER["tolerance"]["atol"])


class _Triple(nn.Module):
    def forward(self, x, labels):
        return 3 * x


# ---- the relaxation, by hand ---------------------------------------------------------------------------------------
def test_mixed_op_is_the_softmax_weighted_sum_of_its_ops():
    alpha = torch.tensor([0.0, math.log(2.0), math.log(3.0)])   # softmax: 1/6, 2/6, 3/6
    w = relaxed_weights(alpha)
    torch.testing.assert_close(w, torch.tensor([1 / 6, 2 / 6, 3 / 6]))
    x = torch.tensor([[[[1.0, -2.0]]]])
    out = mixed_op(x, None, nn.ModuleList([Identity(), Zero(), _Triple()]), w)
    torch.testing.assert_close(out, x * (1 / 6 + 0 + 3 * 3 / 6))   # = x * 10/6
    # a search-space edge: its output is the same weighted sum of its seven candidates' outputs
    torch.manual_seed(0)
    edge = Edge("op", OPS, 4, 3).train()
    x, y = torch.randn(5, 4, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    wts = relaxed_weights(torch.randn(len(OPS)))
    each = [op(x, y) for op in edge.ops]
    torch.testing.assert_close(edge(x, y, wts), sum(wi * o for wi, o in zip(wts, each)))
    assert torch.equal(each[0], torch.zeros_like(x)) and torch.equal(each[1], x)


class _Teacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.b1(self.c1(x))).mean((2, 3)))


def _method_with_teacher():
    m = AutoReCon({"seed": 0, "latent_dim": 12})
    m.teacher = _Teacher().eval()
    m.hooks = BNStatHooks(m.teacher)
    m.num_classes, m.device = 3, torch.device("cpu")
    return m


def test_alpha_receives_the_reconstruction_gradient_and_the_steps_move_only_their_own_parameters():
    torch.manual_seed(0)
    m = _method_with_teacher()
    gen = CellGenerator(3, latent_dim=12, image_size=8, channels=3, genotype=None, width=4)
    z, y = torch.randn(6, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    loss, bns, _ = reconstruction_loss(m, gen, z, y)
    assert bns > 0
    loss.backward()
    for a in gen.arch_parameters():
        assert a.grad is not None and a.grad.abs().sum() > 0
    assert len(gen.arch_parameters()) == 3 and [a.shape for a in gen.arch_parameters()] == [(6, 2), (15, 7), (12, 3)]
    arch_opt = torch.optim.Adam(gen.arch_parameters(), lr=0.1)
    w_opt = torch.optim.Adam(gen.weight_parameters(), lr=0.1)
    a0 = [a.detach().clone() for a in gen.arch_parameters()]
    w0 = [p.detach().clone() for p in gen.weight_parameters()]
    arch_step(m, gen, arch_opt, z, y)
    assert all(not torch.equal(a, b) for a, b in zip(gen.arch_parameters(), a0))
    assert all(torch.equal(p, q) for p, q in zip(gen.weight_parameters(), w0))
    a1 = [a.detach().clone() for a in gen.arch_parameters()]
    weight_step(m, gen, w_opt, z, y)
    assert all(torch.equal(a, b) for a, b in zip(gen.arch_parameters(), a1))
    assert any(not torch.equal(p, q) for p, q in zip(gen.weight_parameters(), w0))


def test_the_search_leaves_the_runs_random_streams_as_it_found_them():
    """docs/autorecon.md: the search draws from its own streams, so the GDFQ part that follows draws as the GDFQ arm."""
    from tests.conftest import tiny_ctx
    m = _method_with_teacher()
    m.search_steps, m.search_batch, m.search_width = 2, 2, 4
    ctx = tiny_ctx()
    ctx.num_classes, ctx.in_channels, ctx.image_size = 3, 3, 8
    torch.manual_seed(5)
    global_before, method_before = torch.get_rng_state(), m.generator.get_state()
    found = m.search(ctx)
    assert found["search_steps"] == 2 and found["alpha_shift"] > 0
    assert torch.equal(torch.get_rng_state(), global_before) and torch.equal(m.generator.get_state(), method_before)


def test_a_search_killed_part_way_resumes_from_its_saved_state_and_ends_as_the_uninterrupted_one(tmp_path,
                                                                                                   monkeypatch):
    from methods import autorecon as autorecon_module
    from tests.conftest import tiny_ctx
    ctx = tiny_ctx()
    ctx.num_classes, ctx.in_channels, ctx.image_size, ctx.out_dir = 3, 3, 8, None

    def method():
        torch.manual_seed(0)                         # the same teacher every time
        m = _method_with_teacher()
        m.search_steps, m.search_batch, m.search_width = 5, 2, 4
        m.arch_optim = {"lr": 0.05}
        return m

    monkeypatch.setattr(autorecon_module, "search_generator",
                        lambda *a, real=autorecon_module.search_generator, **kw: real(*a, **{**kw, "save_every": 2}))
    whole = method().search(ctx)                     # no run folder: nothing saved
    assert not os.listdir(tmp_path)
    ctx.out_dir = str(tmp_path)
    real_weight_step, calls = autorecon_module.weight_step, []

    def dying_weight_step(*a):
        calls.append(1)
        if len(calls) == 4:                          # during iteration 4: the state of iteration 2 is on disk
            raise KeyboardInterrupt("simulated kill")
        return real_weight_step(*a)

    monkeypatch.setattr(autorecon_module, "weight_step", dying_weight_step)
    with pytest.raises(KeyboardInterrupt):
        method().search(ctx)
    state = tmp_path / autorecon_module.SEARCH_STATE_FILE
    assert torch.load(state, weights_only=True)["step"] == 2
    monkeypatch.setattr(autorecon_module, "weight_step", real_weight_step)
    m = method()
    m.width = 4
    m.make_generator(ctx)                            # resumes the search, writes the genotype, drops the state
    resumed = m.found
    assert (tmp_path / GENOTYPE_FILE).exists() and not state.exists()
    assert resumed["softmax_alpha"] == whole["softmax_alpha"] and resumed["genotype"] == whole["genotype"]
    assert resumed["curve"] == whole["curve"] and resumed["alpha_shift"] == whole["alpha_shift"]
    assert whole["alpha_shift"] > 0


def test_derivation_takes_the_argmax_of_every_edge_zero_ops_included():
    gen = CellGenerator(3, latent_dim=12, image_size=8, genotype=None, width=4)
    assert alpha_entropy_ratio(gen) > 0.9999
    with torch.no_grad():
        for a in gen.arch_parameters():
            a.zero_()
        gen.alpha_op[0, 0] = 2.0              # none
        gen.alpha_op[3, 6] = 0.5              # dil_conv_5x5
        gen.alpha_op[5, 2], gen.alpha_op[5, 4] = 0.1, 0.2    # conv_5x5 beats conv_1x1
        gen.alpha_up[1, 1] = 1.0              # bilinear
        gen.alpha_cross[4, 2], gen.alpha_cross[4, 0] = 0.3, 0.4   # none_up
        # untouched rows are ties: argmax takes the first candidate
    g = derive_genotype(gen)
    assert g["op"][0] == "none" and g["op"][3] == "dil_conv_5x5" and g["op"][5] == "conv_5x5"
    assert g["up"][1] == "bilinear" and g["up"][0] == "nearest" and g["cross"][4] == "none_up"
    assert {k: len(v) for k, v in g.items()} == ROWS
    assert alpha_entropy_ratio(gen) < 0.999
    fixed = CellGenerator(3, latent_dim=12, image_size=8, genotype=g, width=4)   # derivable into a generator
    assert fixed.arch_parameters() == [] and fixed(torch.randn(2, 12), torch.tensor([0, 1])).shape == (2, 3, 8, 8)


# ---- parity with the co-author generator ---------------------------------------------------------------------------
def _ours(name: str) -> str | None:
    """Co-author parameter name -> ours (None: a parameter of a zero edge, which ours does not have)."""
    if name.startswith("l"):
        return name
    name = re.sub(r"^to_rgb_conditional_bn\.", "out_bn.", name)
    name = re.sub(r"^to_rgb\.1\.", "out_conv.", name)
    m = re.match(r"cell(\d)\.(up(\d)_c01\.ups_cross|up(\d)\.ups|c(\d)\.ops)\.0\.(.*)$", name)
    if not m:
        return name
    cell, _, cross, up, op, rest = m.groups()
    kind, idx = ("cross", cross) if cross is not None else ("up", up) if up is not None else ("op", op)
    if kind == "cross" and DISCOVERED["cifar10"]["cross"][6 * (int(cell) - 1) + int(idx)] == "none_up":
        return None
    rest = rest.replace("conditional_bn.", "bn.").replace("dilconv.", "conv.").replace("c.1.", "conv.")
    return f"cells.{cell}.{kind}.{idx}.ops.0.{rest}"


@pytest.mark.golden
def test_discovered_cifar10_generator_matches_the_coauthor_generator():
    gen = build_generator("ait_discovered_cifar10", num_classes=10, latent_dim=100, image_size=32, channels=3)
    ours = dict(gen.named_parameters())
    used = set()
    with torch.no_grad():
        for k, (name, shape) in enumerate(zip(HEADER["param_names"], HEADER["param_shapes"])):
            n = int(torch.tensor(shape).prod())
            value = torch.sin(torch.arange(n, dtype=torch.float32) * 0.37 + k).view(shape) * 0.05 + (
                1.0 if name.endswith("weights.weight") else 0.0)
            target = _ours(name)
            if target is None:
                continue
            p = ours[target]
            p.copy_(value[:p.shape[0]] if p.shape != value.shape else value)   # cell BN embeddings: 1000 -> 10 rows
            used.add(target)
    assert used == set(ours)        # every one of our parameters came from theirs
    gen.train()
    torch.testing.assert_close(gen(G["z"], G["y"]), G["out_train"], **TOL)
    gen.eval()
    torch.testing.assert_close(gen(G["z"], G["y"]), G["out_eval"], **TOL)


def test_discovered_generators_build_with_only_their_chosen_ops():
    for name, genotype in DISCOVERED.items():
        gen = build_generator(f"ait_discovered_{name}", num_classes=10, latent_dim=100, image_size=16, channels=3)
        assert gen.arch_parameters() == [] and all(len(v) == ROWS[k] for k, v in genotype.items())
        edges = [e for e in gen.modules() if isinstance(e, Edge)]
        assert len(edges) == 33 and all(len(e.ops) == 1 for e in edges)
        assert all(v in CHOICES[k] for k, vs in genotype.items() for v in vs)
    with pytest.raises(ValueError, match="genotype"):
        CellGenerator(10, genotype={"up": ["nearest"] * 6, "op": ["conv_7x7"] * 15, "cross": ["none_up"] * 12})


# ---- runs ----------------------------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_autorecon_search_run_reads_no_training_image_and_saves_its_genotype(compose, monkeypatch, tmp_path):
    _forbid_training_loader(monkeypatch)
    cfg = compose(["method=autorecon", "model=resnet20", *SMALL, "trainer.epochs=1", "trainer.batch_size=4",
                   "method.iters_per_epoch=1", "method.warmup_epochs=1", "method.act_range_epochs=1",
                   "method.search.steps=3", "method.search.batch_size=4", "method.search.width=4",
                   "method.search.arch_optim.lr=0.05", "method.generator_width=8", "logger=none"])
    out = run(cfg)
    assert out["steps"] == 1 + 1
    extra = out["extra"]
    assert extra["generator"] == "search" and extra["search_steps"] == 3 and extra["bns"] > 0
    assert {k: len(v) for k, v in extra["genotype"].items()} == ROWS
    assert extra["alpha_shift"] > 0 and extra["alpha_entropy_ratio"] < 1.0
    import glob
    import yaml
    (path,) = glob.glob(str(tmp_path / "outputs" / "**" / GENOTYPE_FILE), recursive=True)
    saved = yaml.safe_load(open(path))
    assert saved["genotype"] == extra["genotype"] and len(saved["curve"]) == 1



def test_a_resumed_run_reads_the_derived_genotype_back_instead_of_searching(tmp_path, monkeypatch):
    import yaml
    from tests.conftest import tiny_ctx
    found = {"genotype": DISCOVERED["cifar100"], "search_steps": 7, "alpha_entropy_ratio": 0.5, "alpha_shift": 1.0}
    (tmp_path / GENOTYPE_FILE).write_text(yaml.safe_dump(found))
    monkeypatch.setattr(AutoReCon, "search", lambda self, ctx: (_ for _ in ()).throw(AssertionError("searched")))
    ctx = tiny_ctx()
    ctx.num_classes, ctx.in_channels, ctx.image_size, ctx.out_dir = 10, 3, 8, str(tmp_path)
    m = AutoReCon({"seed": 0, "generator_width": 4})
    gen = m.make_generator(ctx)
    assert [e.names[0] for e in gen.cells[0].op] == DISCOVERED["cifar100"]["op"][:5]
    assert m.state_dict()["autorecon"]["search_steps"] == 7
    fresh = AutoReCon({"seed": 0, "generator_width": 4})    # evaluate.py: the method state comes before transform
    fresh.load_state_dict(m.state_dict())
    ctx.out_dir = None
    assert [e.names[0] for e in fresh.make_generator(ctx).cells[2].cross] == DISCOVERED["cifar100"]["cross"][6:]


def test_a_run_killed_while_writing_the_genotype_leaves_no_truncated_file(tmp_path, monkeypatch):
    """The genotype file is what a resumed run reads instead of searching (the runner rebuilds the generator before
    it loads a checkpoint): a kill during its write must leave no partial file behind, only a fresh search."""
    import yaml
    from methods import autorecon as autorecon_module
    from tests.conftest import tiny_ctx
    found = {"genotype": DISCOVERED["cifar100"], "search_steps": 7, "alpha_entropy_ratio": 0.5, "alpha_shift": 1.0,
             "curve": [{"step": 1}]}
    from core import atomic_files
    monkeypatch.setattr(AutoReCon, "search", lambda self, ctx: found)
    real_open = open

    def dying_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        if "w" in mode:                                # part of the text reaches the file, then the kill
            f.write = lambda text: (f.buffer.write(text[:40].encode()), f.flush(),
                                    (_ for _ in ()).throw(KeyboardInterrupt("simulated kill")))
        return f

    monkeypatch.setattr(atomic_files, "open", dying_open, raising=False)
    ctx = tiny_ctx()
    ctx.num_classes, ctx.in_channels, ctx.image_size, ctx.out_dir = 10, 3, 8, str(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        AutoReCon({"seed": 0, "generator_width": 4}).make_generator(ctx)
    assert not (tmp_path / GENOTYPE_FILE).exists()
    monkeypatch.undo()
    monkeypatch.setattr(AutoReCon, "search", lambda self, ctx: found)
    AutoReCon({"seed": 0, "generator_width": 4}).make_generator(ctx)
    assert yaml.safe_load((tmp_path / GENOTYPE_FILE).read_text()) == found


@pytest.mark.smoke
def test_autorecon_with_the_discovered_generator_runs_without_search(compose, monkeypatch):
    monkeypatch.setattr(AutoReCon, "search", lambda self, ctx: (_ for _ in ()).throw(AssertionError("searched")))
    cfg = compose(["method=autorecon", "method.generator=ait_discovered_cifar10", "model=resnet20", *SMALL,
                   "trainer.epochs=1", "trainer.batch_size=4", "method.iters_per_epoch=1", "method.warmup_epochs=1",
                   "logger=none"])
    out = run(cfg)
    assert out["extra"]["generator"] == "ait_discovered_cifar10" and "genotype" not in out["extra"]


@pytest.mark.slow
def test_experiment_files_compose_and_run_one_step(compose):
    here = os.path.join(os.path.dirname(os.path.dirname(__file__)), "conf", "experiment", "autorecon")
    for f in sorted(x for x in os.listdir(here) if x.startswith("cifar10_jpeg")):
        cfg = compose([f"experiment=autorecon/{f[:-5]}", *SMALL, "model.pretrained=false", "trainer.epochs=1",
                       "trainer.batch_size=4", "trainer.max_steps=1", "method.iters_per_epoch=1",
                       "method.warmup_epochs=0", "method.search.steps=1", "method.search.batch_size=2",
                       "method.search.width=4", "logger=none", "trainer.init_checkpoint=null"])
        run(cfg)


# ---- the umbrella claim pairs every AutoReCon arm with the GDFQ arm of its bit widths -------------------------------
def _grid_row(method, experiment, bits, seed, top1):
    return {"run_id": f"{experiment}-{seed}", "paper": "autorecon", "dataset": "cifar10_jpeg", "model": "resnet20",
            "method": method, "fidelity": "reduced", "experiment": experiment, "seed": seed, "top1": top1,
            "extra": {"w_bits": bits, "a_bits": bits, "level_flip_rate": 0.8}, "_judged": True}


def test_generator_improves_pairs_each_autorecon_arm_with_gdfq_at_its_bits_and_holds_only_if_all_hold():
    from engine import references as R
    claim = next(c for c in R.load_references()["autorecon"].claims if c.id == "autorecon_generator_improves")
    rows = []
    for s in range(3):
        rows += [_grid_row("gdfq", "cifar10_jpeg_resnet20_w4a4", 4, s, 68.0 + s * 0.3),
                 _grid_row("gdfq", "cifar10_jpeg_resnet20_w4a4_noft", 4, s, 99.0),       # not the GDFQ arm
                 _grid_row("gdfq", "cifar10_jpeg_resnet20_w5a5", 5, s, 80.0 + s * 0.3),
                 _grid_row("autorecon", "cifar10_jpeg_resnet20_w4a4_discovered", 4, s, 74.0 + s * 0.2),
                 _grid_row("autorecon", "cifar10_jpeg_resnet20_w5a5_discovered", 5, s, 84.0 + s * 0.4)]
    result = R.evaluate_claim(claim, rows)
    pairs = {(c.better.experiment, c.worse.experiment) for c in result.comparisons}
    assert pairs == {("cifar10_jpeg_resnet20_w4a4_discovered", "cifar10_jpeg_resnet20_w4a4"),
                     ("cifar10_jpeg_resnet20_w5a5_discovered", "cifar10_jpeg_resnet20_w5a5")}
    assert result.status == "held"
    rows += [_grid_row("autorecon", "cifar10_jpeg_resnet20_w5a5_searched", 5, s, 79.0 + s * 0.1) for s in range(3)]
    assert R.evaluate_claim(claim, rows).status == "inconclusive"      # one of three comparisons not held
