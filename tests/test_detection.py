"""Detection track: VOC parsing and layout errors, the synthetic VOC writer, SSD augmentation, VOC mAP on hand-made
predictions (goldens by hand; cross-checked against torchmetrics/pycocotools), the SSD builders, result rows with
``map50`` (old CSVs still readable), and train.py end to end on a tiny synthetic set."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from data import DataNotFoundError
from data.voc import VOCDetection, collate_detection, eval_transforms, parse_annotation, train_transforms
from data.voc_synthetic import SHAPES, write_synthetic_voc
from engine.detection import coco_map50, voc_ap, voc_map

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = list(SHAPES)
SMALL = {"splits": {"trainval": 6, "test": 4}, "seed": 3}

HAND_XML = """<annotation><filename>x.jpg</filename><size><width>100</width><height>80</height><depth>3</depth></size>
<object><name>ellipse</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>11</ymin><xmax>50</xmax><ymax>40</ymax>
</bndbox></object>
<object><name>triangle</name><difficult>1</difficult><bndbox><xmin>61</xmin><ymin>21</ymin><xmax>70</xmax>
<ymax>30</ymax></bndbox></object>
<object><name>rectangle</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
</annotation>"""


def data_cfg(root: str, **over):
    cfg = OmegaConf.load(os.path.join(ROOT, "conf", "data", "voc_synthetic.yaml"))
    return OmegaConf.merge(cfg, {"root": os.path.dirname(root), "folder": os.path.basename(root), "synthetic": None,
                                 "num_workers": 0, **over})


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc") / "VOCdevkit")
    write_synthetic_voc(root, SMALL, CLASSES)
    return root


def test_parse_annotation_hand_xml(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(HAND_XML)
    ann = parse_annotation(str(path), {c: i + 1 for i, c in enumerate(CLASSES)})
    # 1-based inclusive pixel indices -> pixel edges: [xmin - 1, ymin - 1, xmax, ymax]
    assert ann["boxes"].tolist() == [[0, 10, 50, 40], [60, 20, 70, 30], [4, 4, 9, 9]]
    assert ann["labels"].tolist() == [2, 3, 1]
    assert ann["difficult"].tolist() == [False, True, False]   # a missing <difficult> is 0
    assert ann["size"] == (80, 100)


def test_unknown_class_is_named(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(HAND_XML)
    with pytest.raises(ValueError, match="'triangle' is not in data.classes"):
        parse_annotation(str(path), {"ellipse": 1, "rectangle": 2})


def test_missing_folder_names_it_and_the_fix(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as err:
        VOCDetection(str(tmp_path / "VOCdevkit"), [[2007, "test"]])
    message = str(err.value)
    assert "\n" not in message and os.path.join("VOC2007", "Annotations") in message and "DATA_ROOT" in message


def test_synthetic_writer_is_deterministic_and_in_voc_format(voc_root, tmp_path):
    again = str(tmp_path / "again")
    write_synthetic_voc(again, SMALL, CLASSES)
    for sub in ("Annotations/000001.xml", "JPEGImages/000003.jpg", "ImageSets/Main/test.txt",
                "ImageSets/Main/ellipse_trainval.txt"):
        a, b = (open(os.path.join(r, "VOC2007", sub), "rb").read() for r in (voc_root, again))
        assert a == b, sub
    ds = VOCDetection(voc_root, [[2007, "trainval"], [2007, "test"]], CLASSES)
    assert len(ds) == 10 and ds.ids[0][1] == "000001" and ds.ids[-1][1] == "000010"
    for i in range(len(ds)):
        image, target = ds[i]
        h, w = image.shape[-2:]
        boxes = target["boxes"]
        assert 1 <= len(boxes) <= 4 and ((boxes[:, 2:] - boxes[:, :2]) >= 16).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert set(target["labels"].tolist()) <= {1, 2, 3}
        side = (boxes[:, 2:] - boxes[:, :2]).min(1).values
        assert target["difficult"].tolist() == (side < 20).tolist()


def test_a_drawn_rectangle_fills_its_box(tmp_path):
    """The XML box is the shape's pixel extent: inside a rectangle's box the pixels are one colour (JPEG aside)."""
    root = str(tmp_path / "r")
    write_synthetic_voc(root, {"splits": {"test": 12}, "seed": 1, "side_range": [40, 80], "quality": 100},
                        ["rectangle"])
    ds = VOCDetection(root, [[2007, "test"]], ["rectangle"])
    image, target = ds[0]
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
    inner = image[:, y1 + 3:y2 - 3, x1 + 3:x2 - 3].float()
    assert inner.std(dim=(1, 2)).max() < 6


def test_train_augmentation_keeps_boxes_valid(voc_root):
    cfg = data_cfg(voc_root)
    ds = VOCDetection(voc_root, [[2007, "trainval"]], CLASSES, train_transforms(cfg), keep_difficult=True)
    torch.manual_seed(0)
    seen = 0
    for _ in range(6):
        for i in range(len(ds)):
            image, target = ds[i]
            assert image.shape == (3, 300, 300) and image.dtype == torch.float32
            assert 0 <= float(image.min()) and float(image.max()) <= 1
            boxes = target["boxes"]
            assert len(boxes) == len(target["labels"]) == len(target["difficult"])
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert (boxes >= 0).all() and (boxes <= 300).all()
            seen += len(boxes)
    assert seen > 0


def test_eval_transform_scales_boxes_and_collate(voc_root):
    cfg = data_cfg(voc_root)
    raw = VOCDetection(voc_root, [[2007, "test"]], CLASSES)
    ds = VOCDetection(voc_root, [[2007, "test"]], CLASSES, eval_transforms(cfg))
    (image0, t0), (_, t1) = raw[0], ds[0]
    h, w = image0.shape[-2:]
    scale = torch.tensor([300 / w, 300 / h, 300 / w, 300 / h])
    assert torch.allclose(t1["boxes"], t0["boxes"] * scale, atol=1e-4)
    images, targets = collate_detection([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 300, 300) and type(images) is torch.Tensor
    assert [len(t["boxes"]) for t in targets] == [len(ds[i][1]["boxes"]) for i in range(3)]
    assert all(type(t["boxes"]) is torch.Tensor for t in targets)


# ---- mAP --------------------------------------------------------------------------------------------------------

def _golden_case():
    """Class 1: 3 positives (A, B in image 0; C in image 1) and a difficult box D (image 1); detections in score
    order TP(A) FP(far) TP(C) [D: ignored] FP(duplicate of A) TP(B). Class 2: one positive, never detected.
    Class 3: no ground truth, one detection (left out of the mean)."""
    A, B, C, D = [0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70], [0, 0, 30, 30]
    targets = [{"boxes": torch.tensor([A, B, [70, 70, 90, 90]], dtype=torch.float), "labels": torch.tensor([1, 1, 2]),
                "difficult": torch.tensor([False, False, False])},
               {"boxes": torch.tensor([C, D], dtype=torch.float), "labels": torch.tensor([1, 1]),
                "difficult": torch.tensor([False, True])}]
    preds = [{"boxes": torch.tensor([A, [100, 100, 120, 120], A, B, [0, 0, 5, 5]], dtype=torch.float),
              "scores": torch.tensor([0.9, 0.8, 0.6, 0.5, 0.3]), "labels": torch.tensor([1, 1, 1, 1, 3])},
             {"boxes": torch.tensor([C, D], dtype=torch.float), "scores": torch.tensor([0.7, 0.55]),
              "labels": torch.tensor([1, 1])}]
    return preds, targets


def test_voc_ap_hand_golden():
    # TP FP TP FP TP over 3 positives: recall 1/3 1/3 2/3 2/3 1, precision 1 1/2 2/3 1/2 3/5
    recall = np.array([1, 1, 2, 2, 3]) / 3
    precision = np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    # all-point: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45
    assert voc_ap(recall, precision) == pytest.approx(34 / 45, abs=1e-12)
    # 11-point: r = 0..0.3 -> 1 (4 points), 0.4..0.6 -> 2/3 (3), 0.7..1.0 -> 3/5 (4): (4 + 2 + 2.4) / 11
    assert voc_ap(recall, precision, eleven_point=True) == pytest.approx(8.4 / 11, abs=1e-12)
    assert voc_ap([], [], eleven_point=True) == 0.0 and voc_ap([], []) == 0.0


def test_voc_map_hand_golden():
    preds, targets = _golden_case()
    out = voc_map(preds, targets, num_classes=4)
    assert sorted(out["ap_allpoint"]) == [1, 2]             # class 3 has no ground truth
    assert out["ap_allpoint"][1] == pytest.approx(34 / 45) and out["ap_allpoint"][2] == 0.0
    assert out["map_allpoint"] == pytest.approx(34 / 90)
    assert out["map_voc07"] == pytest.approx(8.4 / 22)


def test_iou_of_exactly_half_is_a_match():
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
    half = [{"boxes": torch.tensor([[0.0, 0, 10, 5]]), "scores": torch.tensor([1.0]), "labels": torch.tensor([1])}]
    below = [{"boxes": torch.tensor([[0.0, 0, 10, 4.9]]), "scores": torch.tensor([1.0]), "labels": torch.tensor([1])}]
    assert voc_map(half, gt, 2)["map_allpoint"] == 1.0
    assert voc_map(below, gt, 2)["map_allpoint"] == 0.0


def _random_scenes(seed: int, images: int = 30, classes: int = 3):
    """Well-separated ground truth on a grid (no detection overlaps two boxes), jittered true detections, misses,
    duplicates and random false positives; no difficult boxes, at most 12 detections per image."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(images):
        cells = torch.randperm(9, generator=g)[:int(torch.randint(1, 5, (1,), generator=g))]
        boxes = torch.stack([torch.tensor([(c % 3) * 100 + 10, (c // 3) * 100 + 10, (c % 3) * 100 + 70,
                                           (c // 3) * 100 + 70], dtype=torch.float) for c in cells])
        labels = torch.randint(1, classes + 1, (len(cells),), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
        pb, pl = [], []
        for b, lab in zip(boxes, labels):
            for _ in range(int(torch.randint(0, 3, (1,), generator=g))):     # 0 (a miss), 1 or 2 (a duplicate)
                pb.append(b + torch.randn(4, generator=g) * 8)
                pl.append(int(lab) if torch.rand(1, generator=g) < 0.85 else int(torch.randint(1, classes + 1, (1,),
                                                                                                generator=g)))
        for _ in range(int(torch.randint(0, 4, (1,), generator=g))):         # background false positives
            x, y = (torch.rand(2, generator=g) * 240).tolist()
            pb.append(torch.tensor([x, y, x + 50, y + 50]))
            pl.append(int(torch.randint(1, classes + 1, (1,), generator=g)))
        preds.append({"boxes": torch.stack(pb) if pb else torch.zeros(0, 4),
                      "scores": torch.rand(len(pb), generator=g), "labels": torch.tensor(pl, dtype=torch.long)})
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_map_agrees_with_torchmetrics(seed):
    """pycocotools' interpolated precision at recall thresholds 0, 0.1, ..., 1 is VOC07's 11-point AP (same
    matching where no detection overlaps two boxes); with 10001 thresholds it converges to the all-point area."""
    preds, targets = _random_scenes(seed)
    ours = voc_map(preds, targets, num_classes=4)
    assert 0.2 < ours["map_allpoint"] < 0.95        # a case with real precision/recall trade-offs
    eleven = coco_map50(preds, targets, rec_thresholds=np.linspace(0, 1, 11).tolist())
    assert ours["map_voc07"] == pytest.approx(eleven, abs=1e-6)
    dense = coco_map50(preds, targets, rec_thresholds=np.linspace(0, 1, 10001).tolist())
    assert ours["map_allpoint"] == pytest.approx(dense, abs=1e-3)


def test_detection_loader_order_follows_the_run_seed_and_the_epoch():
    """The shuffle (and, through the workers' base seed, the augmentation draws) depends on the run seed as well as
    the epoch, as data/tensor_loader.py's: before, set_epoch reseeded with the epoch alone, so seeds 0, 1, 2 of a
    run saw the same batches."""
    from torch.utils.data import DataLoader
    from data.voc import DetectionLoader

    def order(seed, epoch):
        loader = DetectionLoader(DataLoader(list(range(32)), 8, shuffle=True,
                                            generator=torch.Generator().manual_seed(seed)), "allpoint", ["a"], seed)
        loader.set_epoch(epoch)
        return torch.cat(list(loader)).tolist()

    assert order(0, 0) == order(0, 0) and order(1, 3) == order(1, 3)          # reproducible (a resumed epoch)
    assert order(0, 0) != order(1, 0) and order(0, 0) != order(0, 1)
    assert sorted(order(2, 5)) == list(range(32))


# ---- models -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ssd300_vgg16_matches_torchvision_and_is_counted():
    """(slow: torchvision builds VGG-16's classifier before dropping it, ~8 s per SSD300 on a busy CPU)"""
    from torchvision.models.detection import SSD300_VGG16_Weights

    from core.complexity import measure
    from models import build_model
    torch.manual_seed(0)
    coco = build_model("ssd300_vgg16", num_classes=91, image_size=300)
    # torchvision's published parameter count of its COCO SSD300 (weights metadata; nothing downloaded)
    assert sum(p.numel() for p in coco.parameters()) == SSD300_VGG16_Weights.COCO_V1.meta["num_params"] == 35641826
    voc = build_model("ssd300_vgg16", num_classes=21, image_size=300)
    assert voc.head.classification_head.module_list[0].out_channels == 4 * 21
    cost = measure(voc, (3, 300, 300))
    assert cost.params == sum(p.numel() for p in voc.parameters())
    assert len(cost.layers) == 13 + 2 + 8 + 12      # VGG convs, fc6/fc7, extra convs, 6 x (cls + reg) heads
    assert cost.macs == 31_373_537_792          # our counter (conv MACs at 300 x 300, 21 classes), recounted


@pytest.mark.slow
def test_backbone_weights_load_vgg16_convs_and_freeze_conv1(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    from models import build_model
    torch.manual_seed(1)
    features = make_layers(cfgs["D"])
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    model = build_model("ssd300_vgg16", num_classes=4, image_size=300, backbone_weights=str(path))
    ours = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)][:13]
    theirs = [m for m in features if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) for a, b in zip(ours, theirs))
    trainable = [m.weight.requires_grad for m in ours]
    assert trainable == [False, False] + [True] * 11           # trainable_backbone_layers=4: conv1_x frozen
    with pytest.raises(ValueError, match="holds 2 conv weights"):
        torch.save({k: v for k, v in features.state_dict().items() if k.startswith(("0.", "2."))}, path)
        build_model("ssd300_vgg16", num_classes=4, image_size=300, backbone_weights=str(path))


# ---- results and the engine --------------------------------------------------------------------------------------

def test_old_results_file_without_map50_stays_readable_and_appendable(tmp_path):
    from engine.results import COLUMNS, ResultsError, append_row, read_rows
    old = [c for c in COLUMNS if c != "map50"]
    path = str(tmp_path / "old.csv")
    with open(path, "w") as f:
        f.write(",".join(old) + "\n" + ",".join("r1" if c == "run_id" else ("91.5" if c == "top1" else "")
                                                   for c in old) + "\n")
    assert append_row(path, {"run_id": "r2", "top1": 92.0})
    rows = read_rows(path)
    assert [(r["run_id"], r["top1"], r["map50"]) for r in rows] == [("r1", "91.5", ""), ("r2", "92.0", "")]
    assert open(path).readline().strip() == ",".join(old)          # the old header is kept
    with pytest.raises(ResultsError, match="map50"):
        append_row(path, {"run_id": "r3", "map50": 40.0})

SMOKE = ["data=voc_synthetic", "model=ssd_tiny", "data.image_size=64", "data.synthetic.splits.trainval=8",
         "data.synthetic.splits.test=4", "data.num_workers=0", "trainer.batch_size=4", "trainer.eval_batch_size=4",
         "trainer.epochs=1", "trainer.max_steps=2", "trainer.optimizer.lr=0.01"]


@pytest.mark.smoke
def test_train_py_detection_smoke(compose, tmp_path):
    """data=voc_synthetic model=ssd_tiny through engine.runner.run: 2 SGD steps, mAP on the test split, one row."""
    from engine.results import read_rows
    from engine.runner import results_path, run
    cfg = compose(SMOKE + [f"paths.cache_dir={tmp_path}/cache"])
    metrics = run(cfg)
    assert 0 <= metrics["map50"] <= 100 and metrics["steps"] == 2
    assert os.path.isfile(os.path.join(tmp_path, "cache", "voc_synthetic_s0", "VOC2007", "ImageSets", "Main",
                                       "test.txt"))
    row = read_rows(results_path(cfg))[-1]
    assert row["dataset"] == "voc_synthetic" and row["model"] == "ssd_tiny" and row["top1"] == ""
    assert float(row["map50"]) == pytest.approx(row["extra"]["map50_voc07"])
    assert {"map50_allpoint", "map50_coco101", "ap50_per_class", "best_map50"} <= set(row["extra"])
    assert int(row["params"]) == sum(p.numel() for p in __import__("models").build_model(
        "ssd_tiny", num_classes=4, image_size=64).parameters())


@pytest.mark.parametrize("override", ["trainer.label_smoothing=0.1", "trainer.distill.teacher=resnet20"])
def test_classifier_only_trainer_keys_are_refused_for_a_detector(compose, tmp_path, override):
    """The detector's loss dict replaces the CE the classifier keys act on: set, they would be silently ignored."""
    from engine.runner import run
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=key) as err:
        run(compose(SMOKE + [f"paths.cache_dir={tmp_path}/cache", override]))
    assert "\n" not in str(err.value)


def test_a_method_on_classifier_logits_is_refused_for_a_detector(compose, tmp_path):
    """gdfq (a generator trained through the classifier's logits) cannot train SSD: one line naming the method and
    the methods that can, before any data is generated by the method or any step is taken."""
    from engine.runner import run
    with pytest.raises(ValueError, match=r"method=gdfq works on classifier logits .* methods that can: .*aip") as err:
        run(compose(SMOKE + [f"paths.cache_dir={tmp_path}/cache", "method=gdfq"]))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_evaluate_py_re_evaluates_a_detector_checkpoint(compose, tmp_path):
    """evaluate.py on a detection final.pt (its generated data found again under paths.cache_dir): same mAP."""
    from engine.evaluator import evaluate_checkpoint
    from engine.results import read_rows
    from engine.runner import results_path, run, run_dir
    cfg = compose(SMOKE + [f"paths.cache_dir={tmp_path}/cache"])
    metrics = run(cfg)
    ecfg = compose([f"checkpoint={os.path.join(run_dir(cfg), 'final.pt')}", f"paths.cache_dir={tmp_path}/cache"],
                   config_name="evaluate")
    again = evaluate_checkpoint(ecfg)
    assert again["map50"] == metrics["map50"] and again["macs"] == metrics["macs"]
    assert float(read_rows(results_path(cfg))[-1]["map50"]) == pytest.approx(metrics["map50"])


@pytest.mark.slow
def test_train_py_ssd300_smoke(compose, tmp_path):
    """SSD300-VGG16 for one step of 2 images (about 20-60 s on CPU)."""
    from engine.runner import run
    cfg = compose(["data=voc_synthetic", "model=ssd300_vgg16", f"paths.cache_dir={tmp_path}/cache",
                   "data.synthetic.splits.trainval=4", "data.synthetic.splits.test=2", "data.num_workers=0",
                   "trainer.batch_size=2", "trainer.eval_batch_size=2", "trainer.epochs=1", "trainer.max_steps=1",
                   "trainer.optimizer.lr=0.001"])
    metrics = run(cfg)
    assert metrics["steps"] == 1 and 0 <= metrics["map50"] <= 100
    assert 30e9 < metrics["macs"] < 31_373_537_792       # 4 classes: smaller heads than VOC's 21
