"""`hgen-hub add-gold --folder`: gold tasks from class folders (real hub service, SQLite). The class is the folder's
name as people see it; a folder naming no class adds nothing; a bad picture is named and the rest added; a picture
already gold is not added twice."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from sqlalchemy import select

from hgen.hub.cli import main
from hgen.hub.config import HubConfig, parse_hub_config
from hgen.hub.errors import GoldFolderError
from hgen.hub.gold_folder import add_gold_folder
from hgen.hub.kb.models import GoldItem
from hgen.hub.service import HubService

CLASSES = ("Café", "dog", "fox")


def settings(tmp_path: Path) -> dict:
    return {"devices": ["cam"], "num_classes": 3, "web": {"class_names": list(CLASSES)},
            "limits": {"max_pixels": 100_000}, "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[HubService]:
    service = HubService.from_config(parse_hub_config(settings(tmp_path)))
    try:
        yield service
    finally:
        service.close()


def picture(path: Path, seed: int, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def gold_folder(root: Path) -> Path:
    picture(root / unicodedata.normalize("NFD", "Café") / "a.png", 1)  # named on a Mac: decomposed
    picture(root / "dog" / "b.jpg", 2)
    picture(root / "dog" / "more" / "c.png", 3)  # sub-folders of a class folder are read
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0")
    (root / "dog" / "notes.txt").write_text("not a picture")
    picture(root / "fox" / "huge.png", 4, size=400)  # over the hub's pixel cap
    return root


def truths(service: HubService) -> list[int]:
    with service.kb.session() as s:
        return sorted(s.scalars(select(GoldItem.class_id)).all())


def test_a_folder_of_class_folders_becomes_gold_once(service: HubService, tmp_path: Path) -> None:
    config: HubConfig = parse_hub_config(settings(tmp_path))
    root = gold_folder(tmp_path / "gold")
    report = add_gold_folder(service.gold, root, CLASSES, config.limits)
    assert report.added == {"Café": 1, "dog": 2} and report.already_gold == 0
    assert sorted(Path(path).name for path, _ in report.refused) == ["huge.png", "notes.txt"]
    assert any("not an image" in why for _, why in report.refused)
    assert any("over the cap" in why for _, why in report.refused)
    assert truths(service) == [0, 1, 1]

    picture(root / "fox" / "d.png", 5)
    again = add_gold_folder(service.gold, root, CLASSES, config.limits)
    assert again.added == {"fox": 1} and again.already_gold == 3  # only the new picture
    assert truths(service) == [0, 1, 1, 2]


def test_one_picture_has_one_truth_and_caches_and_loose_files_are_not_gold(service: HubService,
                                                                           tmp_path: Path) -> None:
    config = parse_hub_config(settings(tmp_path))
    root = tmp_path / "gold"
    picture(root / "dog" / "a.png", 1)
    picture(root / "fox" / "a-again.png", 1)  # the same bytes under another class
    picture(root / "dog" / ".thumbnails" / "a.png", 2)  # a file manager's cache
    picture(root / "dog" / "@eaDir" / "a.png", 3)  # a Synology NAS's
    (root / "dog" / "Thumbs.db").write_bytes(b"\0" * 10)
    picture(root / "loose.png", 4)  # beside the class folders: no class
    os.mkfifo(root / "dog" / "pipe.png")  # opened, it would wait for a writer forever
    (root / "dog" / "zero.png").symlink_to("/dev/zero")
    report = add_gold_folder(service.gold, root, CLASSES, config.limits)
    assert report.added == {"dog": 1} and truths(service) == [1]
    why = {Path(path).name: reason for path, reason in report.refused}
    assert set(why) == {"a-again.png", "loose.png"}
    assert "under class 'dog'" in why["a-again.png"] and "not in a class folder" in why["loose.png"]

    (root / "dog" / "a.png").unlink()
    moved = add_gold_folder(service.gold, root, CLASSES, config.limits)  # corrected to fox: still one truth
    assert moved.added == {} and "already gold as class 'dog'" in dict(moved.refused)[str(root / "fox" / "a-again.png")]
    assert truths(service) == [1]


def test_two_folders_of_one_class_add_nothing(service: HubService, tmp_path: Path) -> None:
    config = parse_hub_config(settings(tmp_path))
    root = tmp_path / "gold"
    picture(root / "Café" / "a.png", 1)
    picture(root / unicodedata.normalize("NFD", "Café") / "b.png", 2)  # a copy made on a Mac, merged
    with pytest.raises(GoldFolderError, match="both name class 'Café'"):
        add_gold_folder(service.gold, root, CLASSES, config.limits)
    assert truths(service) == []


def test_a_folder_naming_no_class_adds_nothing(service: HubService, tmp_path: Path) -> None:
    config = parse_hub_config(settings(tmp_path))
    root = gold_folder(tmp_path / "gold")
    picture(root / "dgo" / "typo.png", 9)
    with pytest.raises(GoldFolderError, match="'dgo'.*name no class people answer in \\(Café, dog, fox\\)"):
        add_gold_folder(service.gold, root, CLASSES, config.limits)
    assert truths(service) == []
    with pytest.raises(GoldFolderError, match="not a folder"):
        add_gold_folder(service.gold, root / "missing", CLASSES, config.limits)


def test_the_cli_adds_gold_and_says_what_it_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(settings(tmp_path), allow_unicode=True))
    root = gold_folder(tmp_path / "gold")
    assert main(["add-gold", "--config", str(path), "--folder", str(root)]) == 2  # from where no hub's database is
    assert "no knowledge base at" in capsys.readouterr().err and not (tmp_path / "hub.db").exists()
    assert main(["migrate", "--config", str(path)]) == 0
    assert main(["add-gold", "--config", str(path), "--folder", str(root)]) == 1  # two files refused
    captured = capsys.readouterr()
    assert "added 3 gold task(s) (Café 1, dog 2)" in captured.out and "refused" in captured.err
    (root / "fox" / "huge.png").unlink()
    (root / "dog" / "notes.txt").unlink()
    assert main(["add-gold", "--config", str(path), "--folder", str(root)]) == 0
    assert "added 0 gold task(s) (none); 3 already gold" in capsys.readouterr().out
    picture(root / "cat" / "x.png", 7)
    assert main(["add-gold", "--config", str(path), "--folder", str(root)]) == 2
    assert "name no class" in capsys.readouterr().err
