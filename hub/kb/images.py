"""Where sample images live: small ones inline in the database, larger ones as files under `image_dir`."""

from __future__ import annotations

from pathlib import Path

from hgen.hub.errors import KnowledgeBaseError, SampleImageMissingError
from hgen.protos import hub_pb2

EXTENSIONS = {hub_pb2.IMAGE_FORMAT_PNG: "png", hub_pb2.IMAGE_FORMAT_JPEG: "jpg", hub_pb2.IMAGE_FORMAT_RAW_U8: "raw"}


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
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(image.data)
        tmp.replace(target)  # atomic: a crash never leaves half an image under the final name
        return None, relative

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
