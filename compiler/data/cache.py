"""Decode once: a content-addressed cache of resized uint8 images.

Two levels, both keyed by hashes so nothing stale is ever read:

- one `.npy` per image under `items/`, key = hash(file bytes, or (path, size, mtime)) + the `Preprocess`;
  a retrain that adds images decodes only the new ones;
- one `.npy` per assembled set under `sets/` (all images of a load, in split order) with a `.json` sidecar
  (split sizes, labels, skipped files), key = hash of the ordered item keys and labels; it is read memory-mapped
  (`np.load(mmap_mode="r")`), so a second load decodes nothing and reads only the pages it touches.

Every file is written to a temporary name and renamed into place (atomic on POSIX): a crash or a concurrent
writer never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data.images import Preprocess

# np.load parses each file's header with ast.literal_eval, and CPython 3.11's AST constructor is not thread-safe
# (python/cpython#106905: "SystemError: AST constructor recursion depth mismatch" when the reader's threads load
# cached items at once); the loads are small, so they take turns.
NPY_LOAD = threading.Lock()

# Part of every key (`preprocess_key`): raise it when decoding changes what a file becomes, so older entries are
# not read back. 2: 16-bit pixels take their high byte (`hgen.runtime.preprocess.eight_bits`), as on the device.
# 3: PGM/PPM files are decoded as the device decodes them (OpenCV keeps the samples Pillow rescaled by maxval).
CACHE_VERSION = 3
CHUNK = 1 << 20


def default_cache_dir() -> Path:
    if os.environ.get("HGEN_CACHE"):
        return Path(os.environ["HGEN_CACHE"]) / "images"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hgen" / "images"


def file_key(path: Path, mode: str = "content") -> str:
    """Hash of the file's bytes (`content`) or of (absolute path, size, mtime) (`stat`)."""
    digest = hashlib.blake2b(digest_size=20)
    if mode == "stat":
        stat = path.stat()
        # os.fsencode: a file name that is not UTF-8 (kept by Python as surrogates) hashes as its own bytes
        digest.update(os.fsencode(path.resolve()) + f"\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    else:
        with path.open("rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()


def preprocess_key(pre: Preprocess) -> str:
    text = json.dumps({"v": CACHE_VERSION, **pre.model_dump()}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def combine(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=20).hexdigest()


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class ImageCache:
    """Per-image and per-set entries under one folder (see the module doc)."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def _item(self, key: str) -> Path:
        return self.root / "items" / key[:2] / f"{key}.npy"

    def get_item(self, key: str) -> np.ndarray | None:
        path = self._item(key)
        try:
            with NPY_LOAD:
                return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def put_item(self, key: str, array: np.ndarray) -> None:
        with _atomic(self._item(key)) as tmp:
            with tmp.open("wb") as handle:
                np.save(handle, np.ascontiguousarray(array, np.uint8), allow_pickle=False)

    def _set(self, key: str) -> tuple[Path, Path]:
        base = self.root / "sets" / key
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def get_set(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The assembled set, memory-mapped, and its sidecar; None when absent or unreadable."""
        array_path, meta_path = self._set(key)
        try:
            meta = json.loads(meta_path.read_text())
            with NPY_LOAD:
                array = np.load(array_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        rows = meta.get("rows")
        if not isinstance(rows, int) or rows > int(array.shape[0]):
            return None
        return array[:rows], meta

    @contextmanager
    def writing_set(self, key: str, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
        """A writable memory-mapped array for the set, renamed into place only if the block completes.

        Rows past the sidecar's `rows` (left by skipped files) are never read. Write the sidecar after this block.
        """
        array_path, _ = self._set(key)
        with _atomic(array_path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            try:
                yield array
                array.flush()
            finally:
                del array

    def put_meta(self, key: str, meta: dict[str, Any]) -> None:
        _, meta_path = self._set(key)
        with _atomic(meta_path) as tmp:
            tmp.write_text(json.dumps(meta))
