"""`images`: every image file of a folder in name order, decoded by OpenCV and turned upright by its EXIF tag.

A phone photo taken sideways is shown upright by every viewer and by the compiler's loader, so the device turns it
upright too (`hgen.runtime.orientation`); alpha and 16 bits are kept for the runtime's frame steps. An undecodable
or unreadable file becomes a frame with `image=None`, so the agent reports it instead of silently skipping it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from hgen.edge_agent.config import SourceConfig
from hgen.edge_agent.errors import SourceSettingError
from hgen.edge_agent.sources.base import SOURCES, Frame, FrameSource
from hgen.runtime.orientation import decode_upright

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


@SOURCES.register("images")
class ImageFolderSource(FrameSource):
    def __init__(self, config: SourceConfig, stop: threading.Event) -> None:
        super().__init__(config, stop)
        folder = Path(config.uri)
        if not folder.is_dir():
            raise SourceSettingError(f"image folder {folder} does not exist")
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceSettingError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._position = 0
        self._index = 0

    def read(self) -> Frame | None:
        if self.stop.is_set():
            return None
        if self._position >= len(self._files):
            if not self.config.loop:
                return None
            self._position = 0
        path = self._files[self._position]
        self._position += 1
        try:
            image = decode_upright(path.read_bytes())
        except OSError:  # vanished or unreadable since the listing: reported like an undecodable file
            image = None
        frame = Frame(self._index, image, time.time(), path.name)
        self._index += 1
        self.stats.frames += 1
        return frame
