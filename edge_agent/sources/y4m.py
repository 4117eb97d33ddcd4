"""`y4m`: a YUV4MPEG2 file read plane by plane, converted to RGB with `hgen.runtime.yuv`'s integer rule.

The `video` kind hands a `.y4m` to FFmpeg, whose YUV->RGB differs by a grey level here and there from what other
devices make of the same planes; this source converts the planes itself, with the rule the phone's page applies to
its camera's planes (android_bridge/src/yuv.ts), so a phone and the agent watching the same file see the same
pixels. 4:2:0 (`C420`, `C420jpeg`, `C420paldv`, `C420mpeg2`, the default) and grey (`Cmono`) at 8 bits; FFmpeg's
`XCOLORRANGE=FULL` selects full range; y4m names no matrix, so BT.601 (the rule's default).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from hgen.edge_agent.config import SourceConfig
from hgen.edge_agent.errors import SourceError, SourceSettingError
from hgen.edge_agent.sources.base import SOURCES, Frame, FrameSource
from hgen.runtime.yuv import chroma_shape, i420_to_rgb

MAGIC = b"YUV4MPEG2"
FOUR_TWO_ZERO = frozenset({"420", "420jpeg", "420paldv", "420mpeg2"})
MAX_HEADER = 4096


@dataclass(frozen=True)
class Y4mHeader:
    width: int
    height: int
    mono: bool
    full_range: bool
    data_offset: int  # where the first FRAME starts

    @property
    def frame_bytes(self) -> int:
        rows, columns = chroma_shape(self.height, self.width)
        return self.width * self.height + (0 if self.mono else 2 * rows * columns)


def read_header(stream: BinaryIO, name: str) -> Y4mHeader:
    """The stream header's size, colour space and range; anything this source cannot convert is a SourceError."""
    line = stream.readline(MAX_HEADER)
    if not line.startswith(MAGIC + b" ") or not line.endswith(b"\n"):
        raise SourceSettingError(f"{name} is not a YUV4MPEG2 file (no 'YUV4MPEG2 ...' header line)")
    fields = {token[:1]: token[1:] for token in line[len(MAGIC):].decode("ascii", "replace").split()}
    extensions = {token for token in line.decode("ascii", "replace").split() if token.startswith("X")}
    try:
        width, height = int(fields["W"]), int(fields["H"])
    except (KeyError, ValueError):
        raise SourceSettingError(f"{name}: the y4m header has no valid W and H") from None
    colour = fields.get("C", "420jpeg")
    if width <= 0 or height <= 0 or colour not in FOUR_TWO_ZERO | {"mono"}:
        raise SourceSettingError(f"{name}: y4m {width}x{height} C{colour} is not supported (8-bit 4:2:0 or mono)")
    return Y4mHeader(width, height, colour == "mono", "XCOLORRANGE=FULL" in extensions, stream.tell())


@SOURCES.register("y4m")
class Y4mFileSource(FrameSource):
    """Frames as BGR (the `Frame` contract), made from the file's planes by the shared integer rule."""

    def __init__(self, config: SourceConfig, stop: threading.Event) -> None:
        super().__init__(config, stop)
        path = Path(config.uri)
        try:
            self._file: BinaryIO = path.open("rb")
        except OSError as exc:
            raise SourceSettingError(f"y4m source cannot open {config.uri!r}: {exc}") from exc
        try:
            self.header = read_header(self._file, path.name)
        except BaseException:
            self._file.close()
            raise
        self._index = 0

    def read(self) -> Frame | None:
        if self.stop.is_set():
            return None
        planes = self._planes()
        if planes is None and self.config.loop and self._index > 0:
            self._file.seek(self.header.data_offset)
            planes = self._planes()
        if planes is None:
            return None
        frame = Frame(self._index, self._bgr(planes), time.time(), str(self.config.uri))
        self._index += 1
        self.stats.frames += 1
        return frame

    def _planes(self) -> bytes | None:
        """The next frame's bytes; None at the end (a frame cut short by a truncated file also ends it)."""
        marker = self._file.readline(MAX_HEADER)
        if not marker.startswith(b"FRAME"):
            if marker:
                raise SourceError(f"{self.config.uri}: frame {self._index} has no FRAME marker")
            return None
        data = self._file.read(self.header.frame_bytes)
        return data if len(data) == self.header.frame_bytes else None

    def _bgr(self, data: bytes) -> np.ndarray:
        h = self.header
        buffer = np.frombuffer(data, np.uint8)
        luma, shape = h.width * h.height, chroma_shape(h.height, h.width)
        y = buffer[:luma].reshape(h.height, h.width)
        if h.mono:
            u = v = np.full(shape, 128, np.uint8)
        else:
            u, v = buffer[luma:].reshape(2, *shape)
        return np.ascontiguousarray(i420_to_rgb(y, u, v, "bt601", h.full_range)[..., ::-1])

    def close(self) -> None:
        self._file.close()
