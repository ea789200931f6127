"""Detection evaluation: PASCAL VOC mean average precision at IoU 0.5, all-point and VOC2007 11-point.

``voc_map`` follows the VOC devkit's rules (VOCevaldet.m): per class, detections of all images sorted by score
(descending; ties keep image order); each is matched to the ground-truth box of its class and image with the
largest IoU; IoU >= 0.5 with a non-difficult, unmatched box is a true positive; with an already matched box, a
false positive (a duplicate); with a difficult box, ignored (neither); below 0.5, a false positive. Difficult boxes
are not counted as positives. AP (``voc_ap``):

- all-point (VOC2010+): the area under the precision envelope p_interp(r) = max_{r' >= r} p(r');
- 11-point (VOC2007): the mean of p_interp(r) at r = 0, 0.1, ..., 1 (0 where the recall is never reached).

mAP is the mean over classes with at least one non-difficult ground-truth box (a class with none is left out, as
COCO's evaluation does; the devkit would give NaN). Boxes are pixel-edge x1 y1 x2 y2 and IoU is continuous (no
devkit "+1": data/voc.py maps the XML's inclusive pixel indices to pixel edges, so ground-truth areas equal the
devkit's).

``coco_map50`` is torchmetrics' MeanAveragePrecision (pycocotools backend) at IoU 0.5, 101 recall points, difficult
boxes passed as COCO ``iscrowd``: a library cross-check recorded beside ours (it matches a duplicate to the next
best box and uses COCO's crowd IoU, so it differs slightly from VOC's rules on crowded images).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def voc_ap(recall, precision, eleven_point: bool = False) -> float:
    """AP of one class from its cumulative recall and precision (detections in score order)."""
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    if eleven_point:
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]       # precision envelope
    step = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def class_tp_fp(preds: list[dict], targets: list[dict], label: int, iou_threshold: float = 0.5):
    """Scores, true-positive and false-positive flags (ignored detections left out) of class ``label``, in score
    order, and the number of its non-difficult ground-truth boxes."""
    dets, npos = [], 0
    for i, (p, t) in enumerate(zip(preds, targets)):
        keep = p["labels"] == label
        dets += [(float(s), i, b) for s, b in zip(p["scores"][keep], p["boxes"][keep])]
        difficult = t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool))
        npos += int(((t["labels"] == label) & ~difficult).sum())
    dets.sort(key=lambda d: -d[0])          # stable: equal scores keep image order
    matched = {}
    scores, tp, fp = [], [], []
    for score, i, box in dets:
        t = targets[i]
        mine = t["labels"] == label
        gt = t["boxes"][mine].float()
        hard = t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool))[mine]
        hit = miss = False
        if len(gt):
            ious = box_iou(box.float()[None], gt)[0]
            j = int(ious.argmax())
            if float(ious[j]) >= iou_threshold:
                if bool(hard[j]):
                    continue                  # matched a difficult box: ignored
                seen = matched.setdefault(i, set())
                hit, miss = j not in seen, j in seen
                seen.add(j)
            else:
                miss = True
        else:
            miss = True
        scores.append(score)
        tp.append(hit)
        fp.append(miss)
    return np.array(scores), np.array(tp, dtype=bool), np.array(fp, dtype=bool), npos


def voc_map(preds: list[dict], targets: list[dict], num_classes: int, iou_threshold: float = 0.5) -> dict:
    """Per-class AP (all-point and 11-point) over labels 1..num_classes-1 and their means.

    ``preds``: per image ``{"boxes" (N, 4), "scores" (N,), "labels" (N,)}``; ``targets``: per image ``{"boxes",
    "labels", "difficult" (optional)}``."""
    allpoint, eleven = {}, {}
    for label in range(1, num_classes):
        _, tp, fp, npos = class_tp_fp(preds, targets, label, iou_threshold)
        if npos == 0:
            continue
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        recall = ctp / npos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        allpoint[label] = voc_ap(recall, precision, eleven_point=False)
        eleven[label] = voc_ap(recall, precision, eleven_point=True)
    mean = (lambda d: float(np.mean(list(d.values()))) if d else 0.0)
    return {"map_allpoint": mean(allpoint), "map_voc07": mean(eleven), "ap_allpoint": allpoint, "ap_voc07": eleven}


def coco_map50(preds: list[dict], targets: list[dict], rec_thresholds=None) -> float:
    """torchmetrics' COCO-style mAP at IoU 0.5 (``rec_thresholds``: None for COCO's 101 points); difficult boxes are
    passed as ``iscrowd``. At most 100 detections per image and class are scored (COCO's maxDets)."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_thresholds=[0.5], rec_thresholds=rec_thresholds, backend="pycocotools")
    metric.update([{k: p[k] for k in ("boxes", "scores", "labels")} for p in preds],
                  [{"boxes": t["boxes"], "labels": t["labels"],
                    "iscrowd": t.get("difficult", torch.zeros(len(t["labels"]), dtype=torch.bool)).long()}
                   for t in targets])
    return float(metric.compute()["map"])


@torch.no_grad()
def evaluate_detection(model: torch.nn.Module, loader, device, limit_batches: int | None = None,
                       autocast_dtype=None) -> dict:
    """mAP@0.5 of a detector over a loader of (images, targets): ``map50`` (in %) is the loader's ``ap_metric``
    (voc07_11point or allpoint); ``extra`` holds both, torchmetrics' COCO-style value and the per-class APs."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    preds, targets = [], []
    for i, (images, batch_targets) in enumerate(loader):
        if limit_batches is not None and i >= limit_batches:
            break
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(images.to(device, non_blocking=True))
        preds += [{k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in o.items()} for o in out]
        targets += batch_targets
    model.train(was_training)
    if not targets:
        raise ValueError("evaluation saw no batches (empty test split or limit_eval_batches=0)")
    names = list(loader.class_names)
    voc = voc_map(preds, targets, num_classes=len(names) + 1)
    key = "voc07" if loader.ap_metric == "voc07_11point" else "allpoint"
    extra = {"map50_voc07": 100 * voc["map_voc07"], "map50_allpoint": 100 * voc["map_allpoint"],
             "map50_coco101": 100 * coco_map50(preds, targets), "ap_metric": loader.ap_metric,
             "ap50_per_class": {names[c - 1]: round(100 * ap, 3) for c, ap in voc[f"ap_{key}"].items()}}
    return {"map50": 100 * voc[f"map_{key}"], "samples": len(targets), "extra": extra}
