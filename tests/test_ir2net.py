"""IR²Net (methods/ir2net.py): restriction mask and loss, recovery fusion modules and their cost."""
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from core.complexity import measure
from methods import RunContext, build_method
from methods.base import Stage
from methods.ir2net import CIRec, Fusion1x1, VARIANTS, attention_map, build_fusion, restrict, restriction_mask
from models import build_model

FEAT = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]]]])     # (1, 1, 2, 2)


@pytest.mark.golden
def test_attention_map_height_quirk_and_flat():
    # mean_c F^2 = [[1, 4], [0, 0]]; the code's F.normalize(dim=1) normalizes each column over the height:
    # column 0 [1, 0] -> [1, 0]; column 1 [4, 0] -> [1, 0]
    torch.testing.assert_close(attention_map(FEAT, "height"), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]))
    # flat: [[1, 4], [0, 0]] / sqrt(17)
    s = 17 ** 0.5
    torch.testing.assert_close(attention_map(FEAT, "flat"), torch.tensor([[[1 / s, 4 / s], [0.0, 0.0]]]))


@pytest.mark.golden
def test_restriction_mask_threshold():
    a = attention_map(FEAT, "height")                       # [[1, 1], [0, 0]]
    mask = restriction_mask(a, (3, 3), lam=0.15)
    # bilinear (align_corners) to 3x3: rows 1, 0.5, 0; mean 0.5; threshold 0.15 * 0.5 = 0.075 -> rows 0, 1 kept
    assert torch.equal(mask, torch.tensor([[[[1.0, 1, 1], [1, 1, 1], [0, 0, 0]]]]))
    # lambda 0.9 * 0.5 = 0.45 < 0.5: row 1 still kept; lambda 1.1 -> 0.55: only row 0
    assert mask.shape == (1, 1, 3, 3)
    assert torch.equal(restriction_mask(a, (3, 3), lam=1.1)[0, 0, :, 0], torch.tensor([1.0, 0, 0]))
    x = torch.arange(18.0).view(1, 2, 3, 3) + 1
    erased, m = restrict(x, FEAT, 0.15, "height")
    assert torch.equal(erased, x * m) and erased[0, :, 2].abs().sum() == 0 and erased[0, :, :2].min() > 0


@pytest.mark.golden
def test_cirec_structure_and_output():
    torch.manual_seed(0)
    cirec = CIRec(128, 64, ratio=4).eval()       # m = ceil(64/4) = 16 primary, 16*3 = 48 cheap (depthwise)
    assert cirec.primary[0].out_channels == 16 and cirec.cheap[0].out_channels == 48 and cirec.cheap[0].groups == 16
    x = torch.randn(2, 128, 8, 8)
    out = cirec(x)
    assert out.shape == (2, 64, 8, 8)
    x1 = cirec.primary(x)
    torch.testing.assert_close(out[:, :16], x1)
    torch.testing.assert_close(out[:, 16:], cirec.cheap(x1))
    odd = CIRec(640, 512, ratio=32)             # VGG-small: m = 16, cheap 16 -> 496, keep 512 of 512
    assert odd(torch.randn(1, 640, 4, 4)).shape == (1, 512, 4, 4)


@pytest.mark.golden
def test_fusion_variant_macs_match_reference_arithmetic():
    """ImageNet variants A-D at 7x7 (1024 -> 512), counted by core/complexity.py, vs ir2net.yaml fusion_macs."""
    import yaml
    with open("results/reference/ir2net.yaml") as f:
        entries = {e["key"]: e for e in yaml.safe_load(f)["entries"]}
    for v, spec in VARIANTS.items():
        fusion = build_fusion(1024, 512, act="prelu", **spec)
        macs = measure(fusion, (1024, 7, 7)).macs
        assert macs == entries[f"resnet18_imagenet_ir2net_{v.lower()}"]["metrics"]["fusion_macs"]["value"], v
    assert isinstance(build_fusion(1024, 512, fusion="conv1x1"), Fusion1x1)
    with pytest.raises(ValueError, match="conv1x1, cirec"):
        build_fusion(8, 4, fusion="ghost")


def _ir2net(model_name="resnet20", image_size=32, **over):
    cfg = OmegaConf.load("conf/method/ir2net.yaml")
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    method = build_method(cfg)
    ctx = RunContext(num_classes=10, in_channels=3, image_size=image_size, device=torch.device("cpu"))
    model = method.transform(build_model(model_name, num_classes=10, image_size=image_size), ctx)
    method.on_stage_start(Stage("train"), model, ctx)
    return method, model


def test_recovery_fuses_stem_and_stages():
    method, model = _ir2net()
    assert isinstance(model.fusion, CIRec) and model.fusion.primary[0].in_channels == 16 + 16 + 32 + 64
    assert model.head_bn is not None
    seen = {}
    model.fusion.register_forward_pre_hook(lambda m, inp: seen.setdefault("x", inp[0]))
    model.eval()
    model(torch.randn(2, 3, 32, 32))
    assert seen["x"].shape == (2, 128, 8, 8)
    # estimators of the note: ApproxSign activations, clipped-STE weights, no scaling
    conv = model.layer1[0].conv1
    assert (conv.act_estimator, conv.weight_estimator, conv.scaling) == ("approx", "clipped", "none")
    _, big = _ir2net("resnet18", 224, **{"recovery.variant": "C"})
    assert isinstance(big.fusion, CIRec) and big.fusion.cheap[0].groups == 128 // 16
    _, vgg = _ir2net("vgg_small", 32, **{"recovery.ratio": 32})
    assert vgg.fusion.primary[0].in_channels == 640


def test_restriction_loss_is_average_of_two_passes():
    torch.manual_seed(0)
    method, model = _ir2net()
    model.train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = model(x)
    task = F.cross_entropy(out, y)
    feats = model.last_features
    loss = method.loss(model, x, out, y, task)
    erased, _ = restrict(x, feats, 0.15, "height")
    second = F.cross_entropy(model(erased), y)   # same weights, same batch -> same BN batch statistics
    torch.testing.assert_close(loss, 0.5 * (task + second), rtol=1e-5, atol=1e-6)
    assert 0 < method.metrics(model)["restriction_kept_fraction"] <= 1
    # evaluation: no second pass
    model.eval()
    assert method.loss(model, x, out, y, task) is task


def test_restriction_can_be_disabled_and_bad_norm_fails():
    method, model = _ir2net(**{"restriction.enabled": False})
    model.train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    out = model(x)
    task = F.cross_entropy(out, y)
    assert method.loss(model, x, out, y, task) is task
    with pytest.raises(ValueError, match="height, flat"):
        attention_map(FEAT, "channel")
    with pytest.raises(ValueError, match="recovery.variant='E'"):
        _ir2net(**{"recovery.variant": "E"})


def test_metrics_report_fusion_macs():
    method, model = _ir2net()
    measure(model, (3, 32, 32))                  # the engine measures before asking for metrics
    m = method.metrics(model)
    # CIRec(128 -> 64, s=4) at 8x8: primary 128*16*64 = 131,072; cheap depthwise 48 outputs * 9 * 64 = 27,648
    assert m["fusion_macs"] == 131_072 + 27_648 and m["fusion"] == "CIRec"


def test_fusion_gets_the_backbones_kaiming_init():
    """Official CIFAR code: the init loop runs after the fusion module exists (kaiming_normal_); variant default."""
    torch.manual_seed(0)
    _, model = _ir2net()
    w = model.fusion.primary[0].weight                           # 1x1 conv 128 -> 16: kaiming std sqrt(2/128)
    assert w.std().item() == pytest.approx((2 / 128) ** 0.5, rel=0.15)
    torch.manual_seed(0)
    _, default = _ir2net(**{"recovery.init": "default"})
    assert default.fusion.primary[0].weight.std().item() == pytest.approx(1 / 128 ** 0.5 / 3 ** 0.5, rel=0.15)


def test_erased_pass_uses_the_runs_task_loss_with_teacher():
    """Official ImageNet code: both passes use the KD loss to the teacher's logits of the original images. The
    trainer hands the task loss to the method (Method.task_loss_fn); variant second_loss=ce keeps plain CE."""
    torch.manual_seed(0)
    method, model = _ir2net()
    model.train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    t_logits = torch.randn(4, 10)
    kd = lambda logits, targets: F.kl_div(F.log_softmax(logits.float(), 1), F.log_softmax(t_logits, 1),
                                          reduction="batchmean", log_target=True)
    method.task_loss_fn = kd
    out = model(x)
    feats = model.last_features
    first = kd(out, y)
    loss = method.loss(model, x, out, y, first)
    erased, _ = restrict(x, feats, 0.15, "height")
    torch.testing.assert_close(loss, 0.5 * (first + kd(model(erased), y)), rtol=1e-5, atol=1e-6)
    method_ce, model_ce = _ir2net(**{"restriction.second_loss": "ce"})
    model_ce.load_state_dict(model.state_dict())
    method_ce.task_loss_fn = kd
    model_ce.train()
    out = model_ce(x)
    feats = model_ce.last_features
    loss_ce = method_ce.loss(model_ce, x, out, y, first)
    erased, _ = restrict(x, feats, 0.15, "height")
    torch.testing.assert_close(loss_ce, 0.5 * (first + F.cross_entropy(model_ce(erased), y)), rtol=1e-5, atol=1e-6)


def test_fusion_layers_counted_per_layer_as_fp():
    _, model = _ir2net()
    c = measure(model, (3, 32, 32))
    fusion = [l for l in c.layers if l.name.startswith("fusion.")]
    assert [l.macs for l in fusion] == [131_072, 27_648] and all(l.weight_bits == 32 for l in fusion)
    _, plain = _ir2net(**{"recovery.enabled": False})
    assert c.fp_macs - measure(plain, (3, 32, 32)).fp_macs == 131_072 + 27_648
