"""PASCAL VOC detection in its standard layout: ``<root>/<folder>/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}``.

The usual protocol trains on VOC2007 trainval + VOC2012 trainval and evaluates on VOC2007 test (``data.train_sets``,
``data.test_sets``: lists of ``[year, split]``). Annotations are read from the XML files; each image gives
``boxes`` (N x 4, pixel-edge x1 y1 x2 y2), ``labels`` (1..C, 0 is the background) and ``difficult`` (kept for the
evaluation, which ignores difficult objects; left out of training unless ``data.train_difficult``).

Box convention: the XML's 1-based inclusive pixel indices (xmin..xmax) become the pixel-edge box
[xmin - 1, ymin - 1, xmax, ymax], so a continuous area equals the devkit's (xmax - xmin + 1)(ymax - ymin + 1).

Training augmentation is SSD's (Liu et al. 2016, Sec. 2.2 and 3.6) from torchvision.transforms.v2: photometric
distortion, zoom-out (expand onto a canvas of the fill colour, up to ``zoom_out_max`` x), IoU-constrained random
crop, horizontal flip, resize to ``image_size``, then boxes that became degenerate are dropped. Evaluation resizes
only. Images come out as float in [0, 1]: the detector normalises them itself (model.image_mean/std).
Boxes stay in the resized image's coordinates for evaluation: IoU is invariant to scaling each axis, so AP equals
AP computed at the original size.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from data import DataBundle, DataNotFoundError, register_dataset
from data.imagenet import EpochLoader

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
LAYOUT = "<data.root>/<data.folder>/VOC<year>/{Annotations,JPEGImages,ImageSets/Main/<split>.txt}"


def parse_annotation(path: str, class_index: dict[str, int]) -> dict:
    """One VOC XML file -> ``{"boxes": float (N, 4), "labels": int64 (N,), "difficult": bool (N,), "size": (h, w)}``;
    ``class_index`` maps a class name to its label (1..C). An object of another class fails naming it."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    hw = (int(size.find("height").text), int(size.find("width").text)) if size is not None else None
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = obj.find("name").text.strip()
        if name not in class_index:
            raise ValueError(f"{path}: object class {name!r} is not in data.classes ({', '.join(class_index)})")
        flag = obj.find("difficult")
        box = obj.find("bndbox")
        x1, y1, x2, y2 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        labels.append(class_index[name])
        difficult.append(flag is not None and int(flag.text) == 1)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), "difficult": torch.tensor(difficult, dtype=torch.bool),
            "size": hw}


def _year_dir(root: str, year) -> str:
    return os.path.join(root, f"VOC{year}")


def image_ids(root: str, sets) -> list[tuple[str, str]]:
    """``(VOC<year> folder, image id)`` for every ``[year, split]`` in ``sets``; a missing folder or list fails in one
    line naming it and the fix."""
    ids = []
    for year, split in sets:
        base = _year_dir(root, year)
        listing = os.path.join(base, "ImageSets", "Main", f"{split}.txt")
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            if not os.path.isdir(os.path.join(base, sub)):
                raise DataNotFoundError(
                    f"dataset 'voc' not found: missing folder {os.path.abspath(os.path.join(base, sub))}. Expected "
                    f"{LAYOUT}; set DATA_ROOT (or data.root=...) to the folder holding {os.path.basename(root)}/ "
                    f"(unpack VOCtrainval/VOCtest tars there), or use data=voc_synthetic")
        if not os.path.isfile(listing):
            raise DataNotFoundError(f"dataset 'voc': no image list {os.path.abspath(listing)}; check data.train_sets / "
                                    f"data.test_sets ([year, split] pairs such as [2007, test])")
        with open(listing) as f:
            ids += [(base, line.split()[0]) for line in f if line.strip()]
    return ids


class VOCDetection(Dataset):
    """Images and targets of the listed VOC sets; ``transforms(image, target)`` is a torchvision v2 transform."""

    def __init__(self, root: str, sets, classes=VOC_CLASSES, transforms=None, keep_difficult: bool = True):
        self.ids = image_ids(root, sets)
        self.class_index = {name: i + 1 for i, name in enumerate(classes)}
        self.transforms = transforms
        self.keep_difficult = keep_difficult

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, index: int) -> dict:
        base, image_id = self.ids[index]
        return parse_annotation(os.path.join(base, "Annotations", f"{image_id}.xml"), self.class_index)

    def __getitem__(self, index: int):
        base, image_id = self.ids[index]
        image = decode_image(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), mode=ImageReadMode.RGB)
        ann = self.target(index)
        keep = slice(None) if self.keep_difficult else ~ann["difficult"]
        target = {"boxes": tv_tensors.BoundingBoxes(ann["boxes"][keep], format="XYXY", canvas_size=image.shape[-2:]),
                  "labels": ann["labels"][keep], "difficult": ann["difficult"][keep]}
        image = tv_tensors.Image(image)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def _labels_and_flags(inputs):
    """What SanitizeBoundingBoxes drops together with a degenerate box: its label and its difficult flag."""
    target = inputs[-1]
    return target["labels"], target["difficult"]


def train_transforms(cfg) -> v2.Compose:
    """SSD's training augmentation (each step switchable under ``data.augment``), then resize and sanitize."""
    aug, size = cfg.augment, int(cfg.image_size)
    steps = []
    if aug.photometric:
        steps.append(v2.RandomPhotometricDistort(p=float(aug.photometric_p)))
    if aug.zoom_out:
        steps.append(v2.RandomZoomOut(fill={tv_tensors.Image: list(aug.fill), "others": 0},
                                      side_range=(1.0, float(aug.zoom_out_max)), p=float(aug.zoom_out_p)))
    if aug.iou_crop:
        steps.append(v2.RandomIoUCrop())
    if aug.flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [v2.Resize((size, size), antialias=True), v2.SanitizeBoundingBoxes(labels_getter=_labels_and_flags),
              v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def eval_transforms(cfg) -> v2.Compose:
    size = int(cfg.image_size)
    return v2.Compose([v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True)])


def collate_detection(batch):
    """Images of one size stacked to (B, 3, H, W); targets as a list of dicts of plain tensors (boxes vary in count)."""
    images = torch.stack([img.as_subclass(torch.Tensor) for img, _ in batch])
    targets = [{k: v.as_subclass(torch.Tensor) for k, v in t.items()} for _, t in batch]
    return images, targets


class DetectionLoader(EpochLoader):
    """An EpochLoader of (images, targets) batches; ``task`` tells the trainer and ``evaluate`` to treat it as
    detection, ``ap_metric`` which AP goes into the ``map50`` column. ``set_epoch`` reseeds a shuffling loader's
    generator with the run ``seed`` and the epoch (data/tensor_loader.py's rule), so seeds differ in order and in
    augmentation (the workers' base seed is drawn from it when they start: persistent workers draw it once, so a
    resumed run repeats the order of its batches, not their augmentation draws)."""

    task = "detection"

    def __init__(self, loader: DataLoader, ap_metric: str, class_names, seed: int = 0):
        super().__init__(loader, seed)
        self.ap_metric = ap_metric
        self.class_names = tuple(class_names)


AP_METRICS = ("voc07_11point", "allpoint")


def _subset(ds, n):
    return Subset(ds, range(min(int(n), len(ds)))) if n is not None else ds


@register_dataset("voc")
@register_dataset("voc_synthetic")
def voc(cfg, *, batch_size, eval_batch_size, device, rank, world_size, seed):
    from torch.utils.data import DistributedSampler

    if cfg.ap_metric not in AP_METRICS:
        raise ValueError(f"data.ap_metric={cfg.ap_metric!r}: choose one of {', '.join(AP_METRICS)}")
    if cfg.get("synthetic"):
        from data.voc_synthetic import ensure_synthetic_voc
        ensure_synthetic_voc(os.path.join(cfg.root, cfg.folder), cfg.synthetic, list(cfg.classes))
    classes = tuple(cfg.classes) if cfg.get("classes") else VOC_CLASSES
    if len(classes) + 1 != int(cfg.num_classes):
        raise ValueError(f"data.num_classes={cfg.num_classes} but data.classes has {len(classes)} classes "
                         f"(+1 background = {len(classes) + 1}); set data.num_classes={len(classes) + 1}")
    root = os.path.join(cfg.root, cfg.folder)
    train_ds = _subset(VOCDetection(root, cfg.train_sets, classes, train_transforms(cfg),
                                    keep_difficult=bool(cfg.train_difficult)), cfg.get("train_subset"))
    test_ds = _subset(VOCDetection(root, cfg.test_sets, classes, eval_transforms(cfg)), cfg.get("test_subset"))
    workers = int(cfg.num_workers)
    common = {"num_workers": workers, "collate_fn": collate_detection, "persistent_workers": workers > 0}
    if world_size > 1:
        train = DataLoader(train_ds, batch_size, drop_last=True, **common,
                           sampler=DistributedSampler(train_ds, world_size, rank, shuffle=True, seed=seed,
                                                      drop_last=True))
    else:
        train = DataLoader(train_ds, batch_size, shuffle=True, drop_last=True, **common,
                           generator=torch.Generator().manual_seed(seed))
    # every rank evaluates the whole test split: AP needs all detections together (no per-rank sums)
    test = DataLoader(test_ds, eval_batch_size, **common)
    return DataBundle(train=DetectionLoader(train, cfg.ap_metric, classes, seed),
                      test=DetectionLoader(test, cfg.ap_metric, classes), num_classes=len(classes) + 1,
                      in_channels=3, image_size=int(cfg.image_size), train_size=len(train_ds),
                      test_size=len(test_ds), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), task="detection")
