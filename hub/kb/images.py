"""Where sample images live: small ones inline in the database, larger ones as files under `image_dir`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from hgen.hub.errors import KnowledgeBaseError, SampleImageMissingError
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)
EXTENSIONS = {hub_pb2.IMAGE_FORMAT_PNG: "png", hub_pb2.IMAGE_FORMAT_JPEG: "jpg", hub_pb2.IMAGE_FORMAT_RAW_U8: "raw"}


class ImageWriteError(KnowledgeBaseError):
    """An image file could not be written (a full disk, mostly): its sample is not stored, so its device, which
    got no answer for it, sends it again, and it is stored once there is room."""


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not delete %s after a failed image write", path)


class ImageStore:
    """Decides inline vs file by size; file names derive from the sample id, so a rewrite is idempotent."""

    def __init__(self, image_dir: Path | None, inline_max_bytes: int) -> None:
        self.image_dir = image_dir
        self.inline_max_bytes = inline_max_bytes

    def put(self, sample_id: str, image: hub_pb2.Image) -> tuple[bytes | None, str | None]:
        """Return (inline bytes, relative path): exactly one is set."""
        if len(image.data) <= self.inline_max_bytes:
            return bytes(image.data), None
        if self.image_dir is None:
            raise KnowledgeBaseError("an image exceeds knowledge_base.inline_image_max_bytes but no image_dir is set")
        relative = f"{sample_id[:2]}/{sample_id}.{EXTENSIONS.get(image.format, 'bin')}"
        target = self.image_dir / relative
        tmp = target.with_suffix(target.suffix + ".tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(image.data)
            tmp.replace(target)  # atomic: a crash never leaves half an image under the final name
        except OSError as exc:  # a full disk, mostly: the half-written file must not hold what space is left
            _discard(tmp)
            raise ImageWriteError(f"image of sample {sample_id} cannot be stored under knowledge_base.image_dir "
                                  f"({exc.strerror or exc}); nothing was stored, the device sends it again") from None
        return None, relative

    def discard(self, relative: str) -> None:
        """Delete the file of an image whose sample was not stored after all (its transaction failed: a full
        database): left, it was space no row named, for good unless the device sent that sample again."""
        if self.image_dir is not None:
            _discard(self.image_dir / relative)

    def get(self, inline: bytes | None, relative: str | None) -> bytes:
        """The image's bytes; SampleImageMissingError when they cannot be read (a typed error the task queue
        catches: one lost file must not fail every request that meets its sample)."""
        if inline is not None:
            return inline
        if self.image_dir is None or relative is None:
            raise SampleImageMissingError("sample has neither inline image bytes nor an image file")
        try:
            return (self.image_dir / relative).read_bytes()
        except OSError as exc:
            raise SampleImageMissingError(f"image file {relative} cannot be read: {exc.strerror or exc}") from None

    def remove(self, relative: str) -> int:
        """Delete an image file (retention, hgen.hub.kb.retention); the bytes it freed. A file already gone (another
        hub sharing `image_dir` removed it, or it was lost) frees 0 and is no error; any other failure is raised."""
        if self.image_dir is None:
            return 0
        target = self.image_dir / relative
        try:
            size = target.stat().st_size
            target.unlink()
        except FileNotFoundError:
            return 0
        return size


UNREADABLE_RETRY_S = 60.0  # a sample whose image could not be read is left out of assignment this long
MAX_SET_ASIDE = 1024  # samples this process keeps aside at once (the oldest leave first)


class UnreadableSamples:
    """Samples whose image this process could not read lately: left out of assignment for UNREADABLE_RETRY_S, then
    tried again, and never closed for it. A read can fail for a while (a full descriptor table, a remount) or only
    on this hub (an `image_dir` another hub holds), where closing the sample threw away work people could still do;
    a sample whose file is gone for good reaches its deadline and expires as any other. Logged once per sample (of
    the last MAX_SET_ASIDE logged)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._until: dict[str, float] = {}
        self._logged: dict[str, None] = {}  # the last MAX_SET_ASIDE samples logged, oldest first
        self._lock = threading.Lock()

    def set_aside(self, sample_id: str, reason: str) -> None:
        with self._lock:
            self._until[sample_id] = self.clock() + UNREADABLE_RETRY_S
            while len(self._until) > MAX_SET_ASIDE:
                self._until.pop(next(iter(self._until)))
            first = sample_id not in self._logged
            self._logged[sample_id] = None
            while len(self._logged) > MAX_SET_ASIDE:  # the oldest go: a set that only filled went quiet for good
                self._logged.pop(next(iter(self._logged)))  # after a hub's first 1,024 unreadable samples
        if first:
            log.error("sample %s: its image cannot be read (%s); set aside for %.0f s, then tried again (logged "
                      "once per sample; counted as sample_image_unreadable)", sample_id, reason, UNREADABLE_RETRY_S)

    def current(self) -> list[str]:
        """The samples still set aside (those whose time is up leave, and all when the clock stepped back: they
        would sit out the step, which a months-long run meets at an NTP correction, and expire unanswered)."""
        now = self.clock()
        with self._lock:
            for sample_id in [s for s, until in self._until.items() if not now < until <= now + UNREADABLE_RETRY_S]:
                del self._until[sample_id]
            return list(self._until)
