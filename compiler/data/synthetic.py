"""Colour camera-like image folders made from grey 28x28 images, for tests and benchmarks (no colour photo set here).

How an image is made (seeded, one generator per call):
1. Background: a smooth random colour field (bilinear upsampling of a 4x4 grid of random RGB colours) plus one of
   three textures at a random phase and period: stripes, a checkerboard or speckle noise, at 15-35 % contrast.
2. Object: the grey source image (e.g. a FashionMNIST item) scaled to 45-75 % of the side, tinted with a random
   saturated colour, alpha-blended onto the background with its own intensity as the mask, at a random position.
3. Written as JPEG (quality 80-95) into ROOT/<class name>/<index>.jpg, or with `mixed=True` every fifth as PNG and
   sizes varying from 0.5x to 1.5x the given size (so readers meet mixed formats and sizes).
The result is read back only through the `folder` format, as a user's folder would be.

`class_hues=True` makes the classes learnable by a small network trained from scratch on a few thousand images:
the tint's hue is the class's (class k of K at k * 360 / K degrees, +-12 degrees seeded jitter, full saturation and
value) instead of random, so colour carries the class as well as the garment's shape. Used where a *trained* model is
the point (the int8 faithfulness measurement), not where the task's difficulty is.

Detection sets (`write_yolo_set`, `write_coco_file`, `write_voc_set`) colour the canvases of `detection.compose`
(digits pasted on a flat grey canvas, with their tight boxes): the same background field and textures at 60 %
brightness, each canvas's objects in one random saturated tint (their intensity as mask), resized to the image side
(boxes are normalised, so they stay exact), JPEG (quality 85-95) or PNG; labels as YOLO text files, one COCO
instances JSON, or a Pascal VOC XML per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    import cv2

    field = cv2.resize(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_LINEAR)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period, phase = rng.uniform(4, 16), rng.uniform(0, 2 * np.pi)
    texture = [np.sin(x * 2 * np.pi / period + phase),
               np.sign(np.sin(x * 2 * np.pi / period + phase) * np.sin(y * 2 * np.pi / period)),
               rng.uniform(-1, 1, (height, width))][int(rng.integers(3))]
    contrast = rng.uniform(0.15, 0.35) * 127
    return np.clip(field + texture[..., None] * contrast, 0, 255)


HUE_JITTER_DEGREES = 12.0


def hue_tint(degrees: float) -> np.ndarray:
    """RGB 0..255 of a fully saturated, full-value colour of the given hue."""
    import colorsys

    return 255 * np.asarray(colorsys.hsv_to_rgb((degrees % 360.0) / 360.0, 1.0, 1.0))


def compose(item: np.ndarray, rng: np.random.Generator, height: int, width: int,
            hue: float | None = None) -> np.ndarray:
    """One RGB uint8 image: `item` (grey, [0, 1] or uint8) tinted and placed on a textured background; `hue`
    (degrees) fixes the tint's hue up to the seeded jitter, else the tint is random."""
    import cv2

    grey = item.astype(np.float32) / (255.0 if item.dtype == np.uint8 else 1.0)
    side = int(min(height, width) * rng.uniform(0.45, 0.75))
    mask = cv2.resize(grey.reshape(grey.shape[:2]), (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
    if hue is None:
        tint = rng.uniform(0, 1, 3)
        tint = 255 * (tint - tint.min()) / max(float(np.ptp(tint)), 1e-6)  # saturated: one channel high, one low
    else:
        tint = hue_tint(hue + rng.uniform(-HUE_JITTER_DEGREES, HUE_JITTER_DEGREES))
    image = background(rng, height, width)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    patch = image[top:top + side, left:left + side]
    image[top:top + side, left:left + side] = patch * (1 - mask) + tint * mask
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def write_colour_folder(root: str | Path, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                        size: int = 96, seed: int = 0, mixed: bool = False, class_hues: bool = False) -> Path:
    """Write one file per image under ROOT/<class>/; returns ROOT. `class_hues`: tint by class (module doc)."""
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, (item, label) in enumerate(zip(images, labels)):
        side = int(size * rng.uniform(0.5, 1.5)) if mixed else size
        height, width = (side, int(side * rng.uniform(0.8, 1.25))) if mixed else (side, side)
        hue = int(label) * 360.0 / len(class_names) if class_hues else None
        rgb = compose(np.asarray(item), rng, height, width, hue)
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if mixed and index % 5 == 4:
            cv2.imwrite(str(folder / f"{index:06d}.png"), bgr)
        else:
            cv2.imwrite(str(folder / f"{index:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
    return root


# ---- detection sets: the same colouring on canvases with boxes, written as a YOLO set or a COCO file -------------

def colour_scene(grey: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """A grey canvas in [0, 1] (objects brighter than its flat background, as `detection.compose` makes them) as an
    RGB uint8 image of `side` x `side`: the objects tinted, the background a textured colour field."""
    import cv2

    from hgen.compiler.data.detection import BACKGROUND

    mask = np.clip((grey.reshape(grey.shape[:2]) - BACKGROUND) / (1.0 - BACKGROUND), 0.0, 1.0).astype(np.float32)
    mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
    tint = rng.uniform(0, 1, 3)
    tint = 255 * (tint - tint.min()) / max(float(np.ptp(tint)), 1e-6)
    image = background(rng, side, side) * 0.6  # darker than the objects, so they stand out as in a camera frame
    return np.clip(image * (1 - mask) + tint * mask + 0.5, 0, 255).astype(np.uint8)


def _write_image(path: Path, rgb: np.ndarray, rng: np.random.Generator, png: bool) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if png:
        cv2.imwrite(str(path), bgr)
    else:
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(85, 96))])


def _side(rng: np.random.Generator, size: int, mixed: bool) -> int:
    return int(size * rng.choice([0.75, 1.0, 1.5])) if mixed else size


def write_yolo_set(root: str | Path, splits: dict[str, Any], class_names: Sequence[str], *, size: int = 64,
                   seed: int = 0, mixed: bool = False) -> Path:
    """`splits` maps train/val/test to `DetectionSplit`s (boxes normalised corners + class); writes the Ultralytics
    layout (images/<split>/, labels/<split>/*.txt `class cx cy w h`, data.yaml) and returns ROOT. `mixed` varies the
    image side (0.75-1.5x) and writes every fifth image as PNG; boxes stay exact (they are normalised)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, scenes in splits.items():
        for index, (grey, boxes) in enumerate(zip(scenes.x, scenes.boxes)):
            png = mixed and index % 5 == 4
            _write_image(root / "images" / split / f"{index:05d}.{'png' if png else 'jpg'}",
                         colour_scene(grey, rng, _side(rng, size, mixed)), rng, png)
            label = root / "labels" / split / f"{index:05d}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(f"{int(c)} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n"
                                     for x0, y0, x1, y1, c in boxes))
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(class_names))
    (root / "data.yaml").write_text("path: .\n" + "".join(f"{s}: images/{s}\n" for s in splits) + "names:\n" + names)
    return root


def write_coco_file(root: str | Path, scenes: Any, class_names: Sequence[str], *, size: int = 64, seed: int = 0,
                    mixed: bool = False) -> Path:
    """All of `scenes` (a `DetectionSplit`) as ROOT/images/*.jpg and one COCO instances file ROOT/annotations.json
    (category ids from 1, `bbox` [x, y, w, h] in pixels, a dummy segmentation); the reader splits it by seed."""
    import json

    root = Path(root)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index, (grey, boxes) in enumerate(zip(scenes.x, scenes.boxes)):
        side, png = _side(rng, size, mixed), mixed and index % 5 == 4
        name = f"{index:05d}.{'png' if png else 'jpg'}"
        _write_image(root / "images" / name, colour_scene(grey, rng, side), rng, png)
        images.append({"id": index + 1, "file_name": name, "width": side, "height": side})
        for x0, y0, x1, y1, c in boxes:
            box = [float(x0 * side), float(y0 * side), float((x1 - x0) * side), float((y1 - y0) * side)]
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": int(c) + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0, "segmentation": []})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def voc_xml(filename: str, side: int, boxes: Any, class_names: Sequence[str]) -> str:
    """One image's Pascal VOC annotation, as LabelImg writes it: 1-based pixel corners (xmin = x0 * side + 1)."""
    from xml.sax.saxutils import escape

    objects = "".join(
        f"<object><name>{escape(class_names[int(c)])}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0 * side + 1:.2f}</xmin><ymin>{y0 * side + 1:.2f}</ymin>"
        f"<xmax>{x1 * side:.2f}</xmax><ymax>{y1 * side:.2f}</ymax></bndbox></object>"
        for x0, y0, x1, y1, c in boxes)
    return (f"<annotation><folder>images</folder><filename>{escape(filename)}</filename>"
            f"<path>C:\\labels\\{escape(filename)}</path><source><database>Unknown</database></source>"
            f"<size><width>{side}</width><height>{side}</height><depth>3</depth></size><segmented>0</segmented>"
            f"{objects}</annotation>\n")


def write_voc_set(root: str | Path, splits: dict[str, Any], class_names: Sequence[str], *, size: int = 64,
                  seed: int = 0, mixed: bool = False, flat: bool = False) -> Path:
    """`splits` (train/val/test -> `DetectionSplit`) in the VOC layout: ROOT/JPEGImages/*.jpg, ROOT/Annotations/*.xml
    and ROOT/ImageSets/Main/<split>.txt; with `flat`, LabelImg's: every image and its XML side by side in ROOT, no
    split lists. Returns ROOT."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {}
    for split, scenes in splits.items():
        for index, (grey, boxes) in enumerate(zip(scenes.x, scenes.boxes)):
            side, png = _side(rng, size, mixed), mixed and index % 5 == 4
            stem = f"{split}_{index:05d}"
            name = f"{stem}.{'png' if png else 'jpg'}"
            images, annotations = (root, root) if flat else (root / "JPEGImages", root / "Annotations")
            _write_image(images / name, colour_scene(grey, rng, side), rng, png)
            annotations.mkdir(parents=True, exist_ok=True)
            (annotations / f"{stem}.xml").write_text(voc_xml(name, side, boxes, class_names), encoding="utf-8")
            lists.setdefault(split, []).append(stem)
    if not flat:
        main = root / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        for split, stems in lists.items():
            (main / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in stems))
    return root
