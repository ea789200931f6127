"""AIP (no official code: hand goldens). The attention-map loss, both sides of the discriminator game and the
student objective on fixed tensors against values computed by hand; the importance ranking and the pruning schedule
(which step keeps how many channels, FLOPs reached) against an independent count of the CIFAR ResNet-20; a train.py
smoke run of the method and its ablations; the reduced experiment files."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from methods import RunContext, build_method
from methods.aip import (Discriminator, adversarial_loss, attention_loss, attention_map, channel_importance,
                         discriminator_loss, flops_schedule)
from models import build_model

CTX = RunContext(num_classes=10, in_channels=3, image_size=32, device=torch.device("cpu"))


def _method(**over):
    cfg = OmegaConf.load("conf/method/aip.yaml")
    cfg.latency = {"enabled": False}
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return build_method(cfg)


# ---------------------------------------------------------------------------------------------------
# attention transfer
# ---------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_attention_map_and_loss_by_hand():
    # one sample, 2 channels, 1x2 positions: mean_c A^2 = [(1 + 9)/2, (4 + 0)/2] = [5, 2] -> [5, 2] / sqrt(29)
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    b = torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]])              # mean_c B^2 = [0, 1] -> [0, 1]
    torch.testing.assert_close(attention_map(a), torch.tensor([[5 / math.sqrt(29), 2 / math.sqrt(29)]]))
    torch.testing.assert_close(attention_map(b), torch.tensor([[0.0, 1.0]]))
    one = ((5 / math.sqrt(29)) ** 2 + (2 / math.sqrt(29) - 1) ** 2) / 2          # mean over the 2 positions
    assert float(attention_loss([a], [b])) == pytest.approx(one, rel=1e-6)
    # a second layer adds its own mean; channel counts may differ between student and teacher (mean over c)
    c = torch.tensor([[[[2.0, 0.0]]]])                              # 1 channel: [4, 0] -> [1, 0]
    d = torch.tensor([[[[1.0, 1.0]], [[1.0, 1.0]], [[1.0, 1.0]]]])  # 3 channels: [1, 1] -> [1, 1] / sqrt(2)
    two = ((1 - 1 / math.sqrt(2)) ** 2 + (0 - 1 / math.sqrt(2)) ** 2) / 2
    assert float(attention_loss([a, c], [b, d])) == pytest.approx(one + two, rel=1e-6)
    assert float(attention_loss([a * 3.0], [a])) == pytest.approx(0.0, abs=1e-12)   # scale-free (L2-normalised)


# ---------------------------------------------------------------------------------------------------
# discriminator game
# ---------------------------------------------------------------------------------------------------
def _fixed_disc():
    """D(f) = 2 * LeakyReLU_0.2(f0 - f1) + 0.5."""
    d = Discriminator(2, hidden=1, layers=1)
    with torch.no_grad():
        d.net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        d.net[0].bias.zero_()
        d.net[2].weight.copy_(torch.tensor([[2.0]]))
        d.net[2].bias.fill_(0.5)
    return d


@pytest.mark.golden
def test_discriminator_loss_both_sides_by_hand():
    d = _fixed_disc()
    f_t = torch.tensor([[3.0, 1.0]])                      # D = 2 * 2 + 0.5 = 4.5
    f_s = torch.tensor([[0.0, 1.0]], requires_grad=True)  # D = 2 * (0.2 * -1) + 0.5 = 0.1
    softplus = lambda z: math.log1p(math.exp(z))          # noqa: E731  BCE(z, 1) = softplus(-z), BCE(z, 0) = softplus(z)
    ld = discriminator_loss(d, f_t, f_s)
    assert float(ld.detach()) == pytest.approx(softplus(-4.5) + softplus(0.1), rel=1e-6)
    ld.backward()
    assert f_s.grad is None or float(f_s.grad.abs().sum()) == 0.0       # D's loss never moves the student
    assert float(d.net[2].bias.grad) == pytest.approx(-1 / (1 + math.exp(4.5)) + 1 / (1 + math.exp(-0.1)), rel=1e-6)
    d.zero_grad()
    adv = adversarial_loss(d, f_s)
    assert float(adv.detach()) == pytest.approx(softplus(-0.1), rel=1e-6)
    adv.backward()
    # d adv / d f_s = -sigmoid(-0.1) * dD/df, dD/df = 2 * 0.2 * [1, -1] on the negative side of the LeakyReLU
    g = -1 / (1 + math.exp(0.1)) * 0.4
    torch.testing.assert_close(f_s.grad, torch.tensor([[g, -g]]))
    # a batch averages: two fakes at 0.1 and a real at 4.5 twice give the same loss
    ld2 = discriminator_loss(d, f_t.repeat(2, 1), f_s.detach().repeat(2, 1))
    assert float(ld2.detach()) == pytest.approx(float(ld.detach()), rel=1e-6)


@pytest.mark.golden
def test_student_objective_and_one_discriminator_step():
    """L = (1 - a) task + a T^2 KL + w_at L_AT + w_adv BCE(D'(f_s), 1), D' = D after one Adam step on L_D."""
    torch.manual_seed(0)
    m = _method(**{"kd.temperature": 4.0, "at_weight": 10.0, "adv_weight": 0.5})
    student = m.transform(build_model("resnet20", num_classes=10), CTX)
    student = m.on_stage_start(m.stages()[-1], student, CTX)       # finetune: no pruning, hooks on
    d0 = copy.deepcopy(m.disc)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = student(x)
    feats_s = [m._feats[n] for n in m.layers]
    task = F.cross_entropy(out, y)
    total = m.loss(student, x, out, y, task)
    with torch.no_grad():
        t_feats = {}
        mods = dict(m._teacher.named_modules())
        hs = [mods[n].register_forward_hook(lambda mod, i, o, n=n: t_feats.__setitem__(n, o)) for n in m.layers]
        t_out = m._teacher(x)
        for h in hs:
            h.remove()
    T = 4.0
    p_t = F.softmax(t_out / T, 1)
    kl = (p_t * (torch.log(p_t) - F.log_softmax(out / T, 1))).sum(1).mean() * T * T
    at = sum(((attention_map(s) - attention_map(t_feats[n])) ** 2).mean() for s, n in zip(feats_s, m.layers))
    ref = copy.deepcopy(d0)
    opt = torch.optim.Adam(ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    discriminator_loss(ref, t_out, out.detach()).backward()
    opt.step()
    for p, q in zip(m.disc.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(m.disc.parameters(), d0.parameters()))
    adv = F.binary_cross_entropy_with_logits(ref(out), torch.ones(4))
    expect = 0.7 * task + 0.3 * kl + 10.0 * at + 0.5 * adv
    torch.testing.assert_close(total, expect, rtol=1e-5, atol=1e-6)
    total.backward()          # the student's backward leaves D untouched (its parameters are frozen for it)
    assert all(p.grad is None for p in m.disc.parameters())
    assert student.fc.weight.grad is not None


# ---------------------------------------------------------------------------------------------------
# importance, schedule, FLOPs reached
# ---------------------------------------------------------------------------------------------------
def resnet20_flops(k: list[int]) -> int:
    """FLOPs (2 x MACs of convs and fc) of a CIFAR ResNet-20 with inner widths k (9 blocks), written out."""
    macs = 3 * 16 * 9 * 32 * 32 + 64 * 10
    for stage, (c_in, c, hw) in enumerate([(16, 16, 32), (16, 32, 16), (32, 64, 8)]):
        for j in range(3):
            kj = k[3 * stage + j]
            macs += (c_in if j == 0 else c) * kj * 9 * hw * hw + kj * c * 9 * hw * hw
    return 2 * macs


def brute_force_widths(target: float) -> list[int]:
    """The largest uniform widths int(C (1 - r)) on a fine rate grid whose FLOPs do not exceed ``target``."""
    for i in range(0, 9901):
        r = i / 10000
        k = [max(1, int(c * (1 - r))) for c in [16] * 3 + [32] * 3 + [64] * 3]
        if resnet20_flops(k) <= target:
            return k
    raise AssertionError("unreachable")


@pytest.mark.golden
def test_flops_schedule_by_hand():
    assert flops_schedule(100.0, 0.45, 3, "linear") == pytest.approx([85.0, 70.0, 55.0])
    assert flops_schedule(100.0, 0.45, 3, "geometric") == pytest.approx([100 * 0.55 ** (1 / 3), 100 * 0.55 ** (2 / 3), 55.0])
    assert flops_schedule(80.0, 0.5, 1) == pytest.approx([40.0])
    m = _method(prune_steps=2, finetune=None, **{"recover.max_steps": 7})
    st = m.stages()
    assert [s.name for s in st] == ["prune1", "prune2"] and [s.params["prune_step"] for s in st] == [1, 2]
    assert st[0].trainer == {"epochs": 1, "max_steps": 7}
    assert [s.name for s in _method().stages()] == ["prune1", "prune2", "prune3", "finetune"]


@pytest.mark.golden
def test_each_step_prunes_to_its_flops_target_by_an_independent_count():
    m = _method()
    model = m.transform(build_model("resnet20", num_classes=10), CTX)
    dense = resnet20_flops([16] * 3 + [32] * 3 + [64] * 3)
    assert dense == 81102080
    names = [f"layer{s}.{j}.conv1" for s in (1, 2, 3) for j in range(3)]
    for k, target in enumerate([0.85 * dense, 0.70 * dense, 0.55 * dense], start=1):
        model = m.prune(model, k)
        widths = [model.channel_config["groups"][n] for n in names]
        assert widths == brute_force_widths(target), k
        reached = resnet20_flops(widths)
        log = m.prune_log[-1]
        assert log["step"] == k and log["flops"] == reached and log["target_flops"] == pytest.approx(target)
        assert 0.95 * target <= reached <= target                       # from below, within 5 % (integer widths)
    assert widths == [8] * 3 + [17] * 3 + [35] * 3                      # 45 % removed: 1 - 0.4380 kept per group
    assert 1 - reached / dense == pytest.approx(0.4695, abs=1e-4)


@pytest.mark.golden
@pytest.mark.parametrize("kind", ["l1", "bn"])
def test_importance_ranking_keeps_the_largest(kind):
    m = _method(importance=kind)
    model = m.transform(build_model("resnet20", num_classes=10), CTX)
    scores = torch.tensor([5., 1., 9., 3., 14., 0.5, 7., 2., 11., 6., 4., 13., 8., 12., 10., 15.])
    with torch.no_grad():
        conv, bn = model.layer1[0].conv1, model.layer1[0].bn1
        conv.weight.copy_(torch.arange(16.).view(16, 1, 1, 1).expand_as(conv.weight) if kind == "bn"
                          else scores.view(16, 1, 1, 1).expand_as(conv.weight) / (16 * 9))
        bn.weight.copy_(-scores if kind == "bn" else torch.ones(16))   # |gamma| ranks
    from methods.common.channel_pruning import channel_groups
    imp = channel_importance(model, channel_groups(model)["layer1.0.conv1"], kind)
    torch.testing.assert_close(imp, scores)
    compact = m.prune(model, 1)                       # 16 -> int(16 * (1 - rate_1)) channels
    k = compact.channel_config["groups"]["layer1.0.conv1"]
    assert k == brute_force_widths(0.85 * 81102080)[0] == 13          # int(16 * (1 - 0.1257))
    kept = sorted(range(16), key=lambda i: -float(scores[i]))[:k]        # drops 0.5, 1 and 2 (indices 5, 1, 7)
    assert sorted(kept) == [i for i in range(16) if i not in (1, 5, 7)]
    if kind == "bn":
        torch.testing.assert_close(compact.layer1[0].bn1.weight, -scores[sorted(kept)])
    else:
        torch.testing.assert_close(compact.layer1[0].conv1.weight[:, 0, 0, 0], scores[sorted(kept)] / (16 * 9))


def test_bad_options_name_the_key():
    with pytest.raises(ValueError, match="method.importance"):
        _method(importance="taylor")
    with pytest.raises(ValueError, match="method.disc.input"):
        _method(**{"disc.input": "features"})
    with pytest.raises(ValueError, match="method.flops_reduction"):
        _method(flops_reduction=1.2)
    with pytest.raises(ValueError, match="method.attention_layers"):
        _method(attention_layers=["layer9"]).transform(build_model("resnet20", num_classes=10), CTX)


# ---------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------
TINY = ["data=synthetic", "model=resnet20", "method=aip", "trainer.batch_size=16", "trainer.eval_batch_size=64",
        "trainer.limit_eval_batches=1", "method.latency.enabled=false", "method.prune_steps=2",
        "method.recover.max_steps=1", "method.finetune.max_steps=1"]


@pytest.mark.smoke
def test_aip_runs_end_to_end_and_rebuilds(compose, tmp_path):
    from engine.runner import run
    from tests.test_prune_smoke import _rebuild
    m = run(compose(TINY))
    extra = m["extra"]
    assert m["steps"] == 3 and [e["step"] for e in extra["prune_log"]] == [1, 2]
    assert 45.0 <= extra["flops_reduction_pct"] <= 50.0 and m["flops"] == extra["compact_flops"]
    assert set(extra["signals"]) == {"kd", "at", "adv", "d_loss", "disc_acc"}
    assert all(len(v) == 3 for v in extra["signals"].values())           # one mean per epoch (3 stages x 1)
    assert 0.0 <= extra["disc_acc"] <= 1.0
    model = _rebuild(compose, m, TINY, tmp_path)
    assert not model.layer1[0]._forward_hooks                           # no attention hook left on the result


def test_a_misspelt_stage_trainer_key_fails_at_start(compose, tmp_path):
    """The engine checks the trainer overrides of every stage (method.recover, method.finetune) before the first."""
    import glob

    from engine.config import ConfigError
    from engine.runner import run
    for key in ("recover", "finetune"):
        with pytest.raises(ConfigError, match=f"method.{key}.epoch") as err:
            run(compose(TINY + [f"+method.{key}.epoch=2"]))
        assert "\n" not in str(err.value)
    assert not glob.glob(f"{tmp_path}/outputs/**/stage*", recursive=True)


@pytest.mark.smoke
def test_ablation_arms_drop_their_terms(compose):
    from engine.runner import run
    no_disc = run(compose(TINY + ["method.discriminator=false", "name=nd"]))["extra"]
    assert set(no_disc["signals"]) == {"kd", "at"} and "disc_acc" not in no_disc
    no_kt = run(compose(TINY + ["method.transfer=false", "name=nk"]))["extra"]
    assert set(no_kt["signals"]) == {"adv", "d_loss", "disc_acc"}
    assert no_kt["compact_flops"] == no_disc["compact_flops"]          # same schedule, same FLOPs


ARMS = ["aip", "no_disc", "no_kt"]


@pytest.mark.parametrize("arm", ARMS)
def test_reduced_experiment_files_differ_only_in_their_arm(compose, arm):
    from engine.config import validate
    cfg = compose([f"experiment=aip/cifar10_jpeg_resnet56_{arm}"])
    validate(cfg)
    base = compose(["experiment=aip/cifar10_jpeg_resnet56_aip"])
    assert cfg.paper == "aip" and cfg.fidelity == "reduced" and cfg.variant == base.variant
    assert cfg.model.pretrained and cfg.data.name == "cifar10_jpeg" and cfg.trainer == base.trainer
    diff = {k for k in base.method if base.method[k] != cfg.method[k]}
    assert diff == {"aip": set(), "no_disc": {"discriminator"}, "no_kt": {"transfer"}}[arm]
    assert cfg.method.flops_reduction == 0.45 and cfg.method.recover.max_steps == cfg.method.finetune.max_steps == 150
    assert build_method(cfg.method).family == "prune"


@pytest.mark.slow
@pytest.mark.smoke
def test_resumed_after_a_pruning_stage_equals_uninterrupted(compose, tmp_path):
    """Killed after stage prune1: the resumed run replays it (same pruning from the saved weights, the
    discriminator's state restored) and ends with the uninterrupted run's weights, bit for bit."""
    import glob
    import os
    import shutil

    from engine import checkpoint
    from engine.runner import run
    ov = TINY + ["method.recover.epochs=2", "method.recover.max_steps=null", "trainer.limit_batches=1"]
    run(compose(ov + [f"paths.output_dir={tmp_path}/a"]))
    cfg = compose(ov + [f"paths.output_dir={tmp_path}/b"])
    run(cfg)
    (folder,) = glob.glob(f"{tmp_path}/b/*/*-seed0")
    for stage in ("stage1-prune2", "stage2-finetune"):
        shutil.rmtree(os.path.join(folder, stage))
    for f in ("final.pt", "row_written", "row.json"):
        os.remove(os.path.join(folder, f))
    m = run(cfg)
    a = checkpoint.load(glob.glob(f"{tmp_path}/a/*/*-seed0/final.pt")[0])
    b = checkpoint.load(os.path.join(folder, "final.pt"))
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["method"]["disc"][k], b["method"]["disc"][k]) for k in a["method"]["disc"])
    assert m["extra"]["prune_log"] == a["metrics"]["extra"]["prune_log"]
