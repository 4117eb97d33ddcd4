"""A hand-edited or truncated COCO file with a missing or mistyped field is a LabelError naming the file and the
entry (`annotations[1].bbox`), not a KeyError/TypeError/ValueError traceback out of the loader."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.data.detection import load_detection_dataset
from hgen.compiler.errors import LabelError

Coco = dict[str, Any]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))


def _coco(root: Path) -> Coco:
    """Three 64x48 images with one box each, the images on disk beside the JSON."""
    images, annotations = [], []
    for i in range(3):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(root / "images" / f"im{i}.png")
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 64, "height": 48})
        annotations.append({"id": 10 + i, "image_id": i + 1, "category_id": 7, "bbox": [4, 4, 20, 20]})
    return {"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "owl"}]}


def _write(root: Path, data: Coco) -> str:
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_the_unbroken_file_loads(tmp_path: Path) -> None:
    data = load_detection_dataset(_write(tmp_path, _coco(tmp_path)), image={"size": 32},
                                  format_options={"shares": (0.34, 0.33, 0.33)})
    assert data.labels == ("owl",) and sum(map(len, (data.train, data.val, data.test))) == 3


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Coco], None]:
    def apply(data: Coco) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


def _drop(path: tuple[Any, ...]) -> Callable[[Coco], None]:
    def apply(data: Coco) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return apply


BROKEN = [
    (_drop(("categories", 0, "id")), r"categories\[0\]\.id: missing"),
    (_drop(("categories", 0, "name")), r"categories\[0\]\.name: missing"),
    (_set(("categories", 0, "id"), "seven"), r"categories\[0\]\.id: 'seven' is invalid"),
    (_set(("categories",), {"id": 7}), r"'categories' must be a list"),
    (_set(("images", 1, "id"), [2]), r"images\[1\]\.id: \[2\] is invalid"),
    (_drop(("images", 2, "width")), r"images\[2\]\.width: missing"),
    (_set(("images", 0, "height"), "tall"), r"images\[0\]\.height: 'tall' is invalid"),
    (_set(("images", 0, "width"), 0), r"images\[0\]\.width: 0 is invalid"),
    (_set(("images", 0, "file_name"), None), r"images\[0\]\.file_name: None is invalid"),
    (_set(("images", 1), "im1.png"), r"images\[1\] must be an object"),
    (_set(("annotations", 1, "bbox"), [4, "x", 20, 20]), r"annotations\[1\] \(id 11\)\.bbox: .* is invalid"),
    (_set(("annotations", 1, "bbox"), [4, 4, 20]), r"annotations\[1\] \(id 11\)\.bbox: .*\[x, y, width, height\]"),
    (_set(("annotations", 1, "bbox"), [4, 4, None, 20]), r"annotations\[1\] \(id 11\)\.bbox"),
    (_set(("annotations", 2, "bbox"), [4, 4, float("nan"), 20]), r"annotations\[2\] \(id 12\)\.bbox: .*finite"),
    (_drop(("annotations", 0, "image_id")), r"annotations\[0\] \(id 10\)\.image_id: missing"),
    (_set(("annotations", 0, "category_id"), {"id": 7}), r"annotations\[0\] \(id 10\)\.category_id"),
    (_set(("annotations", 0, "category_id"), 8), r"annotations\[0\] \(id 10\): category_id 8 is not in"),
]


@pytest.mark.parametrize(("breakage", "message"), BROKEN)
def test_a_broken_entry_is_a_label_error_naming_it(tmp_path: Path, breakage: Callable[[Coco], None],
                                                    message: str) -> None:
    data = _coco(tmp_path)
    breakage(data)
    path = _write(tmp_path, data)
    with pytest.raises(LabelError, match=message) as caught:
        load_detection_dataset(path)
    assert str(caught.value).startswith(path)


def test_a_duplicate_image_id_is_named(tmp_path: Path) -> None:
    data = _coco(tmp_path)
    data["images"][2]["id"] = 1
    with pytest.raises(LabelError, match=r"images\[2\]\.id: image id 1 is listed twice"):
        load_detection_dataset(_write(tmp_path, data))


def test_two_categories_of_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    """They loaded as two classes of the same name: two identical buttons for the people, half the boxes each."""
    data = _coco(tmp_path)
    data["categories"].append({"id": 9, "name": "owl"})
    data["annotations"][0]["category_id"] = 9
    with pytest.raises(LabelError, match="categories 7 and 9 are both named 'owl'"):
        load_detection_dataset(_write(tmp_path, data), image={"size": 32},
                               format_options={"shares": (0.34, 0.33, 0.33)})
