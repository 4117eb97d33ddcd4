"""Gold tasks from a folder: `hgen-hub add-gold --folder GOLD/`, GOLD/<class name>/*.png|jpg.

A team that knows the answer to a few hundred pictures should not upload them one by one on the operator page. The
layout is the class-folder one people already keep (and `hgen-hub export` writes): the folder's name is the class,
as people see it on their buttons (`people_class_names`; NFC, so a folder named on macOS matches). A folder naming
no class refuses the whole import before anything is added: a typo would otherwise teach the gold a wrong truth,
and a wrong gold pauses careful people. Each picture is checked like the operator page's upload (PNG or JPEG by
content, the hub's pixel cap); one that fails is named and the rest are added. A picture already gold (the same
bytes) is not added twice, so running the import again after adding pictures adds only the new ones.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from hgen.hub.config import LimitsConfig
from hgen.hub.errors import BadInputError, GoldFolderError, KnowledgeBaseError
from hgen.hub.gold import GoldBook
from hgen.hub.images import encoded_image
from hgen.hub.kb.models import GoldItem, Sample

MAX_FILE_BYTES = 64 * 1024 * 1024  # read no bigger file (the hub's pixel cap refuses far smaller pictures anyway)


@dataclass(frozen=True)
class GoldFolderReport:
    added: dict[str, int]  # class name -> pictures added
    already_gold: int
    refused: tuple[tuple[str, str], ...]  # (file, why)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


def class_folders(folder: Path, classes: tuple[str, ...]) -> dict[int, Path]:
    """Class index -> its folder; GoldFolderError naming each folder that is no class (and the classes there are)."""
    if not folder.is_dir():
        raise GoldFolderError(f"{folder} is not a folder (expected {folder}/<class name>/*.png|jpg)")
    index = {unicodedata.normalize("NFC", name): i for i, name in enumerate(classes)}
    found, unknown = {}, []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p)):
        name = unicodedata.normalize("NFC", path.name)
        if name in index:
            found[index[name]] = path
        else:
            unknown.append(path.name)
    if unknown:
        raise GoldFolderError(f"folder(s) {', '.join(repr(n) for n in unknown[:5])} in {folder} name no class "
                              f"people answer in ({', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}); "
                              "nothing added")
    if not found:
        raise GoldFolderError(f"{folder} has no class folder (expected {folder}/<class name>/*.png|jpg)")
    return found


def known_gold(gold: GoldBook) -> set[str]:
    """SHA-256 of every gold picture already stored (a gold set is small: hundreds, read once per import)."""
    with gold.kb.session() as s:
        rows = s.execute(select(Sample.image_bytes, Sample.image_path)
                         .join(GoldItem, GoldItem.sample_id == Sample.id)).all()
    digests = set()
    for inline, relative in rows:
        try:
            digests.add(hashlib.sha256(gold.kb.images.get(inline, relative)).hexdigest())
        except KnowledgeBaseError:
            continue  # its file is gone: it cannot match a picture, and adding that picture again is right
    return digests


def add_gold_folder(gold: GoldBook, folder: Path, classes: tuple[str, ...], limits: LimitsConfig) -> GoldFolderReport:
    """Add every picture under `folder`'s class folders as a gold task of that class."""
    folders = class_folders(Path(folder), classes)
    seen = known_gold(gold)
    added: dict[str, int] = {}
    already, refused = 0, []
    for class_id, class_dir in sorted(folders.items()):
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and _visible(p)):
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise BadInputError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    already += 1
                    continue
                gold.add(encoded_image(data), class_id, len(classes), limits)
            except (BadInputError, OSError) as exc:
                refused.append((str(path), str(exc)))
                continue
            seen.add(digest)
            added[classes[class_id]] = added.get(classes[class_id], 0) + 1
    return GoldFolderReport(added, already, tuple(refused))
