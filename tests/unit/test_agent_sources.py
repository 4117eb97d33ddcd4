"""The prefetching reader: same frames in the same order as reading inline, bounded read-ahead, errors of the
reader thread raised to the consumer, and a prompt close while the reader is blocked on a full queue."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hgen.edge_agent.config import SourceConfig
from hgen.edge_agent.errors import SourceError
from hgen.edge_agent.sources import Frame, FrameSource, open_source
from hgen.edge_agent.sources.base import PrefetchSource
from hgen.edge_agent.testing import write_video


def read_all(source: FrameSource) -> list[Frame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    return frames


def test_prefetch_yields_the_same_frames_in_order(tmp_path) -> None:
    video = write_video(tmp_path / "v.avi", 40)
    inline = read_all(open_source(SourceConfig(kind="video", uri=str(video), prefetch=0)))
    ahead_source = open_source(SourceConfig(kind="video", uri=str(video), prefetch=3))
    assert isinstance(ahead_source, PrefetchSource)
    ahead = read_all(ahead_source)
    assert [f.index for f in ahead] == list(range(40)) == [f.index for f in inline]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(ahead, inline, strict=True))


class CountingSource(FrameSource):
    """An endless source that counts reads (a camera stand-in: no camera on this machine) and can fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(SourceConfig(kind="camera", uri="0"), threading.Event())
        self.reads = 0
        self.fail_at = fail_at

    def read(self) -> Frame | None:
        if self.reads == self.fail_at:
            raise SourceError("device unplugged")
        self.reads += 1
        return Frame(self.reads - 1, np.zeros((2, 2), np.uint8), 0.0)


def test_read_ahead_is_bounded_and_close_is_prompt() -> None:
    inner = CountingSource()
    source = PrefetchSource(inner, depth=2)
    assert source.read().index == 0
    # the reader fills the queue (2) and holds one more frame it cannot put: at most 1 + 2 + 1 reads
    source._thread.join(timeout=0.5)  # it must NOT end: it is blocked on the full queue
    assert source._thread.is_alive() and inner.reads <= 4
    source.close()
    assert not source._thread.is_alive()


def test_a_reader_error_reaches_the_consumer() -> None:
    source = PrefetchSource(CountingSource(fail_at=3), depth=8)
    assert [source.read().index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SourceError, match="unplugged"):
        source.read()
    assert source.read() is None
    source.close()


def test_stop_event_ends_a_blocked_consumer() -> None:
    inner = CountingSource()
    source = PrefetchSource(inner, depth=1)
    source.read()
    inner.stop.set()
    drained = [source.read() for _ in range(4)]
    assert drained[-1] is None
    source.close()
