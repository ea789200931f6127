"""Channel pruning of SSD backbones (models/channels.py ``_ssd_groups``): the groups of ssd_tiny and SSD300-VGG16,
MACs after surgery counted by hand, exact surgery of channels that output zero (heads unchanged), and
``method=l1_prune`` / ``method=aip`` through train.py on synthetic VOC (2 steps each)."""
from __future__ import annotations

import glob
import os

import pytest
import torch

from core.complexity import measure
from methods.common.channel_pruning import channel_groups, dead_channel_model, prune_channels, scope_groups
from models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLS, REG = "head.classification_head.module_list", "head.regression_head.module_list"


def tiny(image_size=64):
    torch.manual_seed(0)
    return build_model("ssd_tiny", num_classes=4, image_size=image_size).eval()


def head_outputs(model, x):
    """The raw SSD head outputs (before box decoding and NMS): bbox_regression (N, A, 4), cls_logits (N, A, K)."""
    images, _ = model.transform(x)
    return model.head(list(model.backbone(images.tensors).values()))


L0, L1, L2 = "backbone.levels.0", "backbone.levels.1", "backbone.levels.2"


def test_ssd_tiny_groups_kinds_and_scopes():
    spec = channel_groups(tiny())
    assert spec.names() == [f"{L0}.{i}.0" for i in range(5)] + [f"{L1}.0.0", f"{L1}.1.0", f"{L2}.0.0", f"{L2}.1.0"]
    assert [spec[n].width for n in spec.names()] == [16, 32, 32, 64, 64, 64, 64, 64, 64]
    assert [spec[n].kind for n in spec.names()] == ["plain"] * 4 + ["head", "plain", "head", "plain", "head"]
    assert spec[f"{L0}.4.0"].consumers == [f"{L1}.0.0", f"{CLS}.0", f"{REG}.0"]
    assert spec[f"{L1}.1.0"].consumers == [f"{L2}.0.0", f"{CLS}.1", f"{REG}.1"]
    assert spec[f"{L2}.1.0"].consumers == [f"{CLS}.2", f"{REG}.2"]
    assert spec[f"{L0}.0.0"].norms == [f"{L0}.0.1"]
    plain = [n for n in spec.names() if spec[n].kind == "plain"]
    assert scope_groups(spec, "inner") == [] and scope_groups(spec, "plain") == plain
    assert scope_groups(spec, "all") == spec.names()


def test_ssd_tiny_macs_after_surgery_by_hand():
    """64 px input: level 0's convs output 32, 16, 16, 8, 8 px, level 1's 4 px, level 2's 2 px; every head conv
    has 6 anchors x 4 classes (24) or x 4 coordinates (24) outputs. Keep 8 of the first conv's 16 channels and 48 of
    level 0's output (a head group: level 1's first conv and both head convs of level 0 lose inputs)."""
    model = tiny()
    compact = prune_channels(model, {f"{L0}.0.0": range(8), f"{L0}.4.0": range(48)})
    removed = (3 * 8 * 9 * 32 * 32            # levels.0.0 outputs 16 -> 8
               + 8 * 32 * 9 * 16 * 16         # levels.0.1 inputs 16 -> 8
               + 64 * 16 * 9 * 8 * 8          # levels.0.4 outputs 64 -> 48
               + 16 * 64 * 9 * 4 * 4          # levels.1.0 inputs 64 -> 48
               + 2 * 16 * 24 * 9 * 8 * 8)     # cls and reg head 0 inputs 64 -> 48 (24 outputs each)
    dense, small = measure(model, (3, 64, 64)), measure(compact, (3, 64, 64))
    assert dense.macs - small.macs == removed == 1_990_656
    removed_params = (8 * 3 * 9 + 2 * 8 + 32 * 8 * 9 + 16 * 64 * 9 + 2 * 16 + 64 * 16 * 9 + 2 * 24 * 16 * 9)
    assert dense.params - small.params == removed_params      # conv weights + BN weight/bias (no conv biases)
    groups = compact.channel_config["groups"]
    assert groups[f"{L0}.0.0"] == 8 and groups[f"{L0}.4.0"] == 48 and groups[f"{L0}.1.0"] == 32
    assert sorted(groups.values()) == sorted([8, 32, 32, 64, 48, 64, 64, 64, 64])


def test_ssd_tiny_surgery_of_zero_channels_keeps_head_outputs_and_shapes():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():      # non-trivial BN statistics and affine terms
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    keep = {f"{L0}.0.0": [0, 3, 5, 7, 8, 15], f"{L0}.1.0": list(range(0, 32, 3)), f"{L0}.4.0": list(range(1, 64, 2)),
            f"{L1}.1.0": list(range(40)), f"{L2}.1.0": list(range(10, 60, 3))}
    dead = dead_channel_model(model, keep)
    compact = prune_channels(dead, keep)
    x = torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        a, b = head_outputs(dead, x), head_outputs(compact, x)
    for k in ("bbox_regression", "cls_logits"):
        assert a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=1e-5), k
    assert b["cls_logits"].shape == (2, (8 * 8 + 4 * 4 + 2 * 2) * 6, 4)
    with torch.no_grad():
        dets = compact(x)                                     # the detector runs end to end
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    compact.train()
    losses = compact(x, [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}] * 2)
    assert set(losses) == {"bbox_regression", "classification"} and all(torch.isfinite(v) for v in losses.values())


def test_surgery_keeps_frozen_parameters_frozen():
    """A frozen layer (SSD300's conv1 with a pretrained backbone: freeze_vgg_stages) stays frozen after its channels
    are cut: the optimizer skips parameters without requires_grad, so surgery must not re-enable it."""
    model = tiny()
    level0 = model.backbone.levels[0]
    level0[0].requires_grad_(False)       # producer conv + its BN frozen
    level0[1][0].requires_grad_(False)    # a frozen consumer of that group (input channels cut)
    compact = prune_channels(model, {f"{L0}.0.0": range(8), f"{L0}.4.0": range(48)})
    frozen = {n for n, p in compact.named_parameters() if not p.requires_grad}
    assert frozen == {f"{L0}.0.0.weight", f"{L0}.0.1.weight", f"{L0}.0.1.bias", f"{L0}.1.0.weight"}
    level0 = compact.backbone.levels[0]
    assert level0[0][0].weight.shape[0] == 8 and level0[1][0].weight.shape[1] == 8
    assert compact.head.classification_head.module_list[0].weight.requires_grad   # trainable ones stay trainable


@pytest.mark.slow
def test_ssd300_groups_scale_and_macs_by_hand():
    """(slow: two SSD300 forwards at 300 px and deep copies, 7 s idle.) conv4_3 (38 px) feeds conv5_1 (19 px after
    pool4), the L2Norm scale and head 0 (4 anchors); fc7 (19 px) feeds extra.1.0 and head 1 (6 anchors)."""
    torch.manual_seed(0)
    model = build_model("ssd300_vgg16", num_classes=4, image_size=300).eval()
    spec = channel_groups(model)
    assert len(spec.names()) == 13 + 2 + 8
    heads = spec.names("head")
    assert heads == ["backbone.features.21", "backbone.extra.0.7.3", "backbone.extra.1.2", "backbone.extra.2.2",
                     "backbone.extra.3.2", "backbone.extra.4.2"]
    c43, fc7 = spec["backbone.features.21"], spec["backbone.extra.0.7.3"]
    assert c43.scales == ["backbone.scale_weight"] and c43.consumers == ["backbone.extra.0.1", f"{CLS}.0", f"{REG}.0"]
    assert fc7.consumers == ["backbone.extra.1.0", f"{CLS}.1", f"{REG}.1"] and fc7.width == 1024
    assert spec["backbone.extra.0.7.1"].kind == "plain" and spec["backbone.extra.0.7.1"].consumers == [fc7.name]
    keep = {c43.name: range(256), fc7.name: range(512)}
    # exact surgery: silence the cut channels (zero filters and biases; no BN in SSD300) -> same head outputs
    dead = prune_channels(model, {}, spec)
    with torch.no_grad():
        for n, k in keep.items():
            conv = dead.get_submodule(n)
            conv.weight[len(k):] = 0
            conv.bias[len(k):] = 0
    compact = prune_channels(dead, keep, spec)
    assert compact.backbone.scale_weight.shape == (256,)
    removed = (512 * 256 * 9 * 38 * 38          # conv4_3 outputs 512 -> 256
               + 256 * 512 * 9 * 19 * 19        # conv5_1 inputs
               + 256 * 16 * 9 * 38 * 38 * 2     # head 0 (cls 4 x 4, reg 4 x 4) inputs
               + 1024 * 512 * 19 * 19           # fc7 (1x1) outputs 1024 -> 512
               + 512 * 256 * 19 * 19            # extra.1.0 (1x1) inputs
               + 512 * 24 * 9 * 19 * 19 * 2)    # head 1 (cls 6 x 4, reg 6 x 4) inputs
    assert measure(model, (3, 300, 300)).macs - measure(compact, (3, 300, 300)).macs == removed
    x = torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = head_outputs(dead, x), head_outputs(compact, x)
    for k in ("bbox_regression", "cls_logits"):
        assert a[k].shape == b[k].shape == (1, 8732, 4 if k == "bbox_regression" else 4)
        assert torch.allclose(a[k], b[k], atol=1e-4), k


# ---- train.py ----------------------------------------------------------------------------------------------------
SMOKE = ["data=voc_synthetic", "model=ssd_tiny", "data.image_size=64", "data.synthetic.splits.trainval=8",
         "data.synthetic.splits.test=4", "data.num_workers=0", "trainer.batch_size=4", "trainer.eval_batch_size=4",
         "trainer.epochs=1", "trainer.max_steps=2", "trainer.optimizer.lr=0.01", "method.latency.enabled=false"]


def _rows_and_model(compose, tmp_path, overrides, metrics):
    """evaluate.py's path for a compact detector: fresh ssd_tiny -> method state -> transform -> final weights."""
    from engine import checkpoint
    from engine.runner import build_backbone
    from methods import RunContext, build_method
    cfg = compose(overrides)
    final = glob.glob(f"{tmp_path}/outputs/**/final.pt", recursive=True)
    assert len(final) == 1
    blob = checkpoint.load(final[0])
    method = build_method(cfg.method)
    method.load_state_dict(blob["method"])
    model = method.transform(build_backbone(cfg, 4, 3, 64),
                             RunContext(num_classes=4, in_channels=3, image_size=64, device=torch.device("cpu")))
    model.load_state_dict(blob["model"])
    assert sum(p.numel() for p in model.parameters()) == metrics["params"]
    return model


@pytest.mark.smoke
def test_l1_prune_on_ssd_tiny_through_train_py(compose, tmp_path):
    from engine.runner import run
    over = SMOKE + [f"paths.cache_dir={tmp_path}/cache", "method=l1_prune", "method.flops_reduction=0.3",
                    "method.scope=plain"]
    m = run(compose(over))
    assert m["steps"] == 2 and 0 <= m["map50"] <= 100
    extra = m["extra"]
    assert 29.0 <= extra["flops_reduction_pct"] <= 31.0 and m["flops"] == extra["compact_flops"]
    assert set(extra["channel_config"]["groups"]) == set(channel_groups(tiny()).names())
    model = _rows_and_model(compose, tmp_path, over, m)
    assert model.backbone.levels[0][0][0].out_channels == extra["channel_config"]["groups"][f"{L0}.0.0"] < 16


@pytest.mark.smoke
def test_aip_on_ssd_tiny_through_train_py(compose, tmp_path):
    from engine.runner import run
    over = SMOKE + [f"paths.cache_dir={tmp_path}/cache", "method=aip", "method.transfer=false",
                    "method.discriminator=false", "method.prune_steps=1", "method.recover.max_steps=1",
                    "method.finetune.max_steps=1", "method.flops_reduction=0.3", "method.scope=all"]
    m = run(compose(over))
    extra = m["extra"]
    assert m["steps"] == 2 and 0 <= m["map50"] <= 100 and [e["step"] for e in extra["prune_log"]] == [1]
    assert 30.0 <= extra["flops_reduction_pct"] <= 33.0 and extra["signals"] == {}   # from below: integer widths
    assert extra["channel_config"]["groups"][f"{L2}.1.0"] < 64       # scope=all reaches the head groups
    _rows_and_model(compose, tmp_path, over, m)


def test_aip_refuses_logit_transfer_on_a_detector(compose, tmp_path):
    from engine.runner import run
    with pytest.raises(ValueError, match=r"method.transfer=false method.discriminator=false") as err:
        run(compose(SMOKE + [f"paths.cache_dir={tmp_path}/cache", "method=aip"]))
    assert "\n" not in str(err.value)


def test_pruning_experiment_files_pair_l1_and_aip(compose):
    """Same data, start, FLOPs target, scope and step budget (6 x 64 steps of 16); AIP without its logit terms."""
    from engine.config import validate
    from methods import build_method
    l1, aip = (compose([f"experiment=detection/voc_synthetic_ssd_tiny_{a}"]) for a in ("l1", "aip"))
    dense = compose(["experiment=detection/voc_synthetic_ssd_tiny"])
    for cfg in (l1, aip):
        validate(cfg)
        assert cfg.paper == "detection" and cfg.fidelity == "reduced" and cfg.data == dense.data
        assert cfg.model.name == "ssd_tiny" and cfg.trainer.init_checkpoint == "outputs/ref/voc_synthetic_ssd_tiny.pt"
        assert cfg.method.flops_reduction == 0.5 and cfg.method.scope == "all"
        assert build_method(cfg.method).family == "prune"
    assert l1.trainer.epochs == 6 and aip.trainer.epochs == aip.method.finetune.epochs == aip.method.recover.epochs == 2
    assert aip.method.prune_steps * aip.method.recover.epochs + aip.method.finetune.epochs == l1.trainer.epochs
    assert not aip.method.transfer and not aip.method.discriminator
    assert l1.trainer.optimizer == aip.trainer.optimizer and l1.trainer.batch_size == aip.trainer.batch_size == 16
    script = open(os.path.join(ROOT, "scripts", "reproduce_detection.sh")).read()
    assert "ensure_ref detection/voc_synthetic_ssd_tiny voc_synthetic_ssd_tiny outputs/ref/voc_synthetic_ssd_tiny.pt" \
        in script and script.index("ensure_ref") < script.index("voc_synthetic_ssd_tiny_l1")


@pytest.mark.smoke
def test_acp_on_ssd_tiny_through_train_py(compose, tmp_path):
    """Clustering of the six chain convs' outputs, a 2-particle 1-cycle search whose fitness is a 1-step SSD-loss
    fine-tune scored by mAP@0.5 on the test split (search_split=test: no held-out split of a file dataset)."""
    from engine.runner import run
    over = SMOKE + [f"paths.cache_dir={tmp_path}/cache", "method=acp", "method.search_split=test",
                    "method.cluster_images=4", "method.min_samples=2", "method.eps=0.05", "method.pso.swarm=2",
                    "method.pso.cycles=1", "method.fitness.steps=1", "method.fitness.lr=0.01"]
    m = run(compose(over))
    extra = m["extra"]
    assert m["steps"] == 2 and 0 <= m["map50"] <= 100
    assert len(extra["cluster_counts"]) == len(extra["widths"]) == 6 and extra["fitness_evals"] == 2 * (1 + 1)
    assert 0 <= extra["gbest_fitness"] <= 100
    groups = extra["channel_config"]["groups"]
    chain = [f"{L0}.{i}.0" for i in range(4)] + [f"{L1}.0.0", f"{L2}.0.0"]
    assert [groups[n] for n in chain] == extra["widths"]
    assert groups[f"{L0}.4.0"] == groups[f"{L1}.1.0"] == groups[f"{L2}.1.0"] == 64   # head groups: not in ACP's scope
    _rows_and_model(compose, tmp_path, over, m)


def test_acp_on_a_detector_needs_the_test_split(compose, tmp_path):
    from engine.runner import run
    with pytest.raises(ValueError, match=r"method.search_split=test") as err:
        run(compose(SMOKE + [f"paths.cache_dir={tmp_path}/cache", "method=acp", "method.cluster_images=4"]))
    assert "\n" not in str(err.value)
