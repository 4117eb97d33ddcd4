"""Gold tasks from a folder: `hgen-hub add-gold --folder GOLD/`, GOLD/<class name>/*.png|jpg.

A team that knows the answer to a few hundred pictures should not upload them one by one on the operator page. The
layout is the class-folder one people already keep (and `hgen-hub export` writes): the folder's name is the class,
as people see it on their buttons (`people_class_names`; NFC, so a folder named on macOS matches). A folder naming
no class, or two folders naming one class, refuse the whole import before anything is added: a typo would
otherwise teach the gold a wrong truth, and a wrong gold pauses careful people. For the same reason a picture found
under two classes, or already gold under another class, is refused and named. Each picture is checked like the
operator page's upload (PNG or JPEG by content, the hub's pixel cap); one that fails is named and the rest are
added. A picture already gold under the same class is not added twice, so running the import again after adding
pictures adds only the new ones. Hidden files and folders (thumbnail caches: `.thumbnails/`, Synology's `@eaDir/`,
`Thumbs.db`) are passed over.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from hgen.hub.config import LimitsConfig
from hgen.hub.errors import BadInputError, GoldFolderError, KnowledgeBaseError
from hgen.hub.gold import GoldBook
from hgen.hub.images import encoded_image
from hgen.hub.kb.models import GoldItem, Sample

MAX_FILE_BYTES = 64 * 1024 * 1024  # read no more of a file (the hub's pixel cap refuses far smaller pictures anyway)
JUNK = frozenset({"__MACOSX", "@eaDir", "Thumbs.db", "desktop.ini"})  # what file managers and NAS boxes leave


@dataclass(frozen=True)
class GoldFolderReport:
    added: dict[str, int]  # class name -> pictures added
    already_gold: int
    refused: tuple[tuple[str, str], ...]  # (file or folder, why)


def _passed_over(name: str) -> bool:
    return name.startswith(".") or name in JUNK


def class_folders(folder: Path, classes: tuple[str, ...]) -> dict[int, Path]:
    """Class index -> its folder; GoldFolderError naming each folder that is no class or a second one of a class."""
    if not folder.is_dir():
        raise GoldFolderError(f"{folder} is not a folder (expected {folder}/<class name>/*.png|jpg)")
    index = {unicodedata.normalize("NFC", name): i for i, name in enumerate(classes)}
    found: dict[int, Path] = {}
    unknown = []
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_dir() and not _passed_over(p.name))
    except OSError as exc:
        raise GoldFolderError(f"cannot read {folder}: {exc.strerror or exc}") from None
    for path in entries:
        class_id = index.get(unicodedata.normalize("NFC", path.name))
        if class_id is None:
            unknown.append(path.name)
        elif class_id in found:
            raise GoldFolderError(f"{found[class_id]} and {path} both name class {classes[class_id]!r} (one written "
                                  "composed, one decomposed?): merge them; nothing added")
        else:
            found[class_id] = path
    if unknown:
        raise GoldFolderError(f"folder(s) {', '.join(repr(n) for n in unknown[:5])} in {folder} name no class "
                              f"people answer in ({', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}); "
                              "nothing added")
    if not found:
        raise GoldFolderError(f"{folder} has no class folder (expected {folder}/<class name>/*.png|jpg)")
    return found


def pictures(class_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The regular files under a class folder (hidden and junk ones passed over; links to files followed, links to
    folders not), and the folders that cannot be read."""
    files: list[Path] = []
    unreadable: list[tuple[str, str]] = []

    def said(exc: OSError) -> None:
        unreadable.append((str(exc.filename), f"folder cannot be read: {exc.strerror or exc}"))

    for root, dirs, names in os.walk(class_dir, onerror=said):
        dirs[:] = sorted(d for d in dirs if not _passed_over(d))
        paths = (Path(root) / name for name in sorted(names) if not _passed_over(name))
        files.extend(path for path in paths if path.is_file())  # not a FIFO or a device: opening one would hang
    return files, unreadable


def known_gold(gold: GoldBook) -> dict[str, int]:
    """SHA-256 -> class of every gold picture already stored (read one at a time: a gold set is small, but its
    inline pictures together need not fit in memory)."""
    digests: dict[str, int] = {}
    with gold.kb.session() as s:
        rows = s.execute(select(Sample.image_bytes, Sample.image_path, GoldItem.class_id)
                         .join(GoldItem, GoldItem.sample_id == Sample.id).execution_options(yield_per=50))
        for inline, relative, class_id in rows:
            try:
                digests[hashlib.sha256(gold.kb.images.get(inline, relative)).hexdigest()] = class_id
            except KnowledgeBaseError:
                continue  # its file is gone: it cannot match a picture, and adding that picture again is right
    return digests


def _read(path: Path) -> bytes:
    """At most MAX_FILE_BYTES: a file's size says nothing of some files' contents (/proc, a device)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise BadInputError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
    return data


def add_gold_folder(gold: GoldBook, folder: Path, classes: tuple[str, ...], limits: LimitsConfig) -> GoldFolderReport:
    """Add every picture under `folder`'s class folders as a gold task of that class."""
    folders = class_folders(Path(folder), classes)
    loose = [p for p in sorted(Path(folder).iterdir()) if p.is_file() and not _passed_over(p.name)]
    refused = [(str(p), "not in a class folder: its class is the folder it is in") for p in loose]
    read: dict[str, tuple[int, Path]] = {}  # digest -> (class, first file): the bytes are read again to add
    for class_id, class_dir in sorted(folders.items()):
        files, unreadable = pictures(class_dir)
        refused += unreadable
        for path in files:
            try:
                data = _read(path)
            except (BadInputError, OSError) as exc:
                refused.append((str(path), str(exc)))
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in read and read[digest][0] != class_id:
                refused.append((str(path), f"the same picture is {read[digest][1]}, under class "
                                           f"{classes[read[digest][0]]!r}: one picture, one truth"))
                continue
            read.setdefault(digest, (class_id, path))
    return _add(gold, read, classes, limits, refused)


def _add(gold: GoldBook, read: dict[str, tuple[int, Path]], classes: tuple[str, ...], limits: LimitsConfig,
         refused: list[tuple[str, str]]) -> GoldFolderReport:
    stored = known_gold(gold)
    shapes = gold.recent_shapes(len(classes))  # read once: it scans recent samples
    added: dict[str, int] = {}
    already = 0
    for digest, (class_id, path) in read.items():
        if digest in stored:
            if stored[digest] == class_id:
                already += 1
            else:
                refused.append((str(path), f"already gold as class {classes[stored[digest]]!r}: a picture has "
                                           "one truth"))
            continue
        try:
            gold.add(encoded_image(_read(path)), class_id, len(classes), limits, shapes)
        except (BadInputError, OSError) as exc:
            refused.append((str(path), str(exc)))
            continue
        added[classes[class_id]] = added.get(classes[class_id], 0) + 1
    return GoldFolderReport(added, already, tuple(refused))
