"""Box labels in the Ultralytics YOLO layout: ROOT/images/{train,val}/<sample>.png|jpg, ROOT/labels/{train,val}/
<sample>.txt (one `class cx cy w h` line per box, normalised to the image) and ROOT/data.yaml naming every class.

What Ultralytics, Roboflow and hgen-compile's `yolo` format (`--dataset yolo:ROOT`) read. The boxes are the ones
most of the people who drew drew (`hgen.hub.retrain.labels.agreed_boxes`, what a retrain learns); an agreed empty
drawing ("nothing there") is an empty label file: an image without objects, which teaches as much as one with them.
A box without area once clipped to the image is left out and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hgen.hub.export import EXPORTERS, ExportSample, SkipSample
from hgen.hub.retrain.labels import agreed_boxes, box_selection


def yolo_lines(boxes: np.ndarray, width: int, height: int) -> tuple[list[str], int]:
    """Pixel boxes [k, 5+] (x_min, y_min, x_max, y_max, class, ...) -> `class cx cy w h` lines normalised to the
    image and clipped to it; and how many boxes had no area left."""
    lines, dropped = [], 0
    for x0, y0, x1, y1, label in boxes[:, :5]:
        left, right = np.clip(sorted((x0 / width, x1 / width)), 0.0, 1.0)
        top, bottom = np.clip(sorted((y0 / height, y1 / height)), 0.0, 1.0)
        if right <= left or bottom <= top:
            dropped += 1
            continue
        lines.append(f"{int(label)} {(left + right) / 2:.6f} {(top + bottom) / 2:.6f} {right - left:.6f} "
                     f"{bottom - top:.6f}")
    return lines, dropped


class YoloWriter:
    """images/ and labels/ per split; data.yaml at the end."""

    data_format = "yolo"

    def __init__(self, root: Path, classes: tuple[str, ...]) -> None:
        self.root = root
        self.classes = classes
        self.splits: set[str] = set()
        self.dropped = 0

    @staticmethod
    def selection() -> tuple[Any, ...]:
        return box_selection()

    def add(self, sample: ExportSample) -> tuple[str, str]:
        boxes = agreed_boxes(sample.payload)
        if boxes.size and (boxes[:, 4].min() < 0 or boxes[:, 4].max() >= len(self.classes)):
            raise SkipSample("box class outside the model's classes")
        lines, dropped = yolo_lines(boxes, *sample.drawn_size)
        self.dropped += dropped
        image = Path("images") / sample.split / f"{sample.stem}{sample.image.extension}"
        label = Path("labels") / sample.split / f"{sample.stem}.txt"
        for relative, data in ((image, sample.image.data), (label, "".join(f"{line}\n" for line in lines).encode())):
            (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
            (self.root / relative).write_bytes(data)
        self.splits.add(sample.split)
        return image.as_posix(), f"{len(lines)} box{'' if len(lines) == 1 else 'es'}"

    def finish(self) -> list[str]:
        # no `path:`: Ultralytics takes an existing one relative to where it runs; without it, the YAML's folder
        data = {**{split: f"images/{split}" for split in sorted(self.splits)}, "names": dict(enumerate(self.classes))}
        (self.root / "data.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False),
                                             encoding="utf-8")
        notes = [f"{self.dropped} box(es) without area inside the image left out"] if self.dropped else []
        if "train" not in self.splits:
            notes.append("every label is held out (val): data.yaml names no train split, and nothing trains on it "
                         "until more labels come")
        if "val" not in self.splits:
            notes.append("no held-out labels yet: data.yaml names no val split (Ultralytics needs one to train; "
                         "hgen-compile carves one from train)")
        return notes


EXPORTERS.add("boxes", YoloWriter)
