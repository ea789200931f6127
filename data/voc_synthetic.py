"""A synthetic detection set written in PASCAL VOC's own format (JPEG + XML + ImageSets), deterministic from a seed.

Each image is a textured background (a random base colour, two random sinusoidal gratings and pixel noise) with
1..``max_objects`` filled shapes; the class is the shape (``rectangle``, ``ellipse``, ``triangle``), the colour is
random, so the detector has to learn form, not colour. Shapes overlap at most ``max_overlap`` IoU. An object whose
shorter side is under ``difficult_below`` pixels is marked ``<difficult>1</difficult>`` (evaluation ignores it, as
VOC's). Boxes are the shapes' tight pixel extents, written 1-based inclusive like VOC's.

``write_synthetic_voc(root, ...)`` writes ``<root>/VOC<year>/...``; ``ensure_synthetic_voc`` writes it once (under a
lock, into a temporary folder renamed at the end) when ``data.synthetic`` is set. Used by data=voc_synthetic,
scripts/make_synthetic_voc.py and the tests.
"""
from __future__ import annotations

import json
import os
import shutil
from xml.sax.saxutils import escape

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw

SHAPES = ("rectangle", "ellipse", "triangle")
DEFAULTS = {"seed": 0, "year": 2007, "splits": {"trainval": 64, "test": 32}, "size_range": [240, 360],
            "max_objects": 4, "side_range": [16, 140], "difficult_below": 20, "max_overlap": 0.3, "quality": 90}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.uniform(40, 215, size=3).astype(np.float32)[None, None, :].repeat(h, 0).repeat(w, 1)
    for _ in range(2):
        angle, period = rng.uniform(0, np.pi), rng.uniform(8, 60)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 2 * np.pi))
        img += wave[..., None] * rng.uniform(-30, 30, size=3).astype(np.float32)
    img += rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _draw(draw: ImageDraw.ImageDraw, shape: str, box, colour, rng) -> tuple[int, int, int, int]:
    """Draw ``shape`` inside ``box`` (x0, y0, x1, y1 exclusive); return its tight pixel extent (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    if shape == "rectangle":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif shape == "ellipse":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    else:   # a triangle with its apex somewhere on the top edge: its extent is the box
        apex = int(rng.integers(x0, x1))
        draw.polygon([(apex, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=colour)
    return x0, y0, x1, y1


def _xml(image_id: str, w: int, h: int, objects, year) -> str:
    objs = "".join(
        f"\t<object>\n\t\t<name>{escape(name)}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>{int(diff)}</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{x0 + 1}</xmin>\n\t\t\t<ymin>{y0 + 1}</ymin>\n"
        f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, (x0, y0, x1, y1), diff in objects)
    return (f"<annotation>\n\t<folder>VOC{year}</folder>\n\t<filename>{image_id}.jpg</filename>\n"
            f"\t<source>\n\t\t<database>compress-repro synthetic VOC</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n{objs}</annotation>\n")


def _image(rng: np.random.Generator, spec: dict, classes):
    h, w = (int(v) for v in rng.integers(spec["size_range"][0], spec["size_range"][1] + 1, size=2))
    img = Image.fromarray(_background(rng, h, w))
    draw = ImageDraw.Draw(img)
    objects, lo, hi = [], int(spec["side_range"][0]), int(spec["side_range"][1])
    for _ in range(int(rng.integers(1, int(spec["max_objects"]) + 1))):
        for _try in range(20):    # a placement that does not hide another shape
            bw, bh = (int(v) for v in rng.integers(lo, min(hi, w, h) + 1, size=2))
            x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            box = (x0, y0, x0 + bw, y0 + bh)
            if all(_iou(box, b) <= spec["max_overlap"] for _, b, _ in objects):
                break
        else:
            continue
        label = int(rng.integers(len(classes)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        extent = _draw(draw, SHAPES[label % len(SHAPES)], box, colour, rng)
        objects.append((classes[label], extent, min(bw, bh) < int(spec["difficult_below"])))
    return img, objects


def write_synthetic_voc(root: str, spec: dict | None = None, classes=SHAPES) -> str:
    """Write the set described by ``spec`` (keys of ``DEFAULTS``) under ``<root>/VOC<year>``; returns that folder.
    Class i is drawn as ``SHAPES[i % 3]``. Image ids run over the splits in order (``000001``, ...)."""
    spec = {**DEFAULTS, **(spec or {})}
    year_dir = os.path.join(root, f"VOC{spec['year']}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(year_dir, sub), exist_ok=True)
    rng = np.random.default_rng(int(spec["seed"]))
    n = 0
    for split, count in spec["splits"].items():
        ids, present = [], {c: set() for c in classes}
        for _ in range(int(count)):
            n += 1
            image_id = f"{n:06d}"
            img, objects = _image(rng, spec, tuple(classes))
            img.save(os.path.join(year_dir, "JPEGImages", f"{image_id}.jpg"), quality=int(spec["quality"]))
            with open(os.path.join(year_dir, "Annotations", f"{image_id}.xml"), "w") as f:
                f.write(_xml(image_id, img.width, img.height, objects, spec["year"]))
            ids.append(image_id)
            for name, _, _ in objects:
                present[name].add(image_id)
        main = os.path.join(year_dir, "ImageSets", "Main")
        with open(os.path.join(main, f"{split}.txt"), "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
        for c in classes:    # VOC's per-class lists: 1 present, -1 absent
            with open(os.path.join(main, f"{c}_{split}.txt"), "w") as f:
                f.write("".join(f"{i} {1 if i in present[c] else -1:2d}\n" for i in ids))
    return year_dir


def ensure_synthetic_voc(root: str, spec, classes) -> str:
    """``root`` holding the set of ``spec``: written once (a ``spec.json`` beside it says which); a folder written
    from another spec fails naming it."""
    from omegaconf import OmegaConf

    spec = {**DEFAULTS, **(OmegaConf.to_container(spec, resolve=True) if not isinstance(spec, dict) else spec)}
    wanted = {"spec": spec, "classes": list(classes)}
    marker = os.path.join(root, "spec.json")
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    with FileLock(os.path.abspath(root) + ".lock"):
        if os.path.exists(marker):
            with open(marker) as f:
                if json.load(f) != wanted:
                    raise ValueError(f"{root} holds a synthetic VOC set made from another data.synthetic spec; "
                                     f"delete the folder or set data.folder to a new name")
            return root
        tmp = f"{root}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_synthetic_voc(tmp, spec, classes)
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(wanted, f, sort_keys=True)
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    return root
