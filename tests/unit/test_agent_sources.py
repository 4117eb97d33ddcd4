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


WAIT_S = 10.0  # a deadline for what happens at once, not a pause


class CountingSource(FrameSource):
    """An endless source that counts reads (a camera stand-in: no camera on this machine) and can fail."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(SourceConfig(kind="camera", uri="0"), threading.Event())
        self.reads = 0
        self.fail_at = fail_at
        self._counted = threading.Condition()

    def read(self) -> Frame | None:
        if self.reads == self.fail_at:
            raise SourceError("device unplugged")
        with self._counted:
            self.reads += 1
            self._counted.notify_all()
        return Frame(self.reads - 1, np.zeros((2, 2), np.uint8), 0.0)

    def wait_reads(self, n: int) -> bool:
        """Block until `n` frames were read (False after WAIT_S): the reader's progress is the signal, not time."""
        with self._counted:
            return self._counted.wait_for(lambda: self.reads >= n, WAIT_S)


def test_read_ahead_is_bounded_and_close_is_prompt() -> None:
    inner = CountingSource()
    source = PrefetchSource(inner, depth=2)
    assert source.read().index == 0
    # the reader fills the queue (2) and holds one more frame it cannot put: exactly 1 + 2 + 1 reads, and there it
    # stays, since putting the fourth frame needs room the queue only gets from the consumer
    assert inner.wait_reads(4), f"the reader stopped after {inner.reads} reads"
    assert inner.reads == 4 and source._queue.full() and source._thread.is_alive()
    assert source.read().index == 1  # room for one more: the held frame goes in and exactly one more is read
    assert inner.wait_reads(5), f"the reader stopped after {inner.reads} reads"
    assert inner.reads == 5 and source._queue.full()
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


def test_prepare_hook_runs_on_the_reader_and_a_failing_hook_leaves_frames_as_they_are() -> None:
    inner = CountingSource()
    source = PrefetchSource(inner, depth=2)
    reader = []

    def prepare(frame: Frame) -> Frame:
        if frame.index == 1:
            raise ValueError("cannot prepare")
        reader.append(threading.current_thread().name)
        return Frame(frame.index, frame.image, frame.captured_at, prepared=("spec", frame.index))

    assert source.set_prepare(prepare)
    frames = [source.read() for _ in range(3)]
    source.close()
    assert [f.prepared for f in frames] == [("spec", 0), None, ("spec", 2)]
    assert set(reader) == {"agent-source"}


@pytest.mark.parametrize("prefetch", [0, 4])
def test_the_agent_gives_the_same_answers_with_and_without_prefetch(tmp_path, prefetch) -> None:
    from hgen.edge_agent.agent import Agent
    from hgen.edge_agent.config import parse_agent_config
    from hgen.edge_agent.testing import ResultCollector, make_keys, null_bundle

    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "null", keys)
    video = write_video(tmp_path / "v.avi", 30)
    expected = [(f.index, f.image[:, :, 0].mean()) for f in read_all(open_source(
        SourceConfig(kind="video", uri=str(video), prefetch=0)))]
    collector = ResultCollector()
    config = parse_agent_config({"device_id": "d", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
                                 "source": {"kind": "video", "uri": str(video), "prefetch": prefetch},
                                 "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    agent = Agent(config, callbacks=[collector])
    agent.run()
    results = collector.results
    assert [r.frame_index for r in results] == [i for i, _ in expected]
    baseline = Agent(parse_agent_config({**config.model_dump(mode="json"), "source": {
        "kind": "video", "uri": str(video), "prefetch": 0}, "outbox": {"path": str(tmp_path / "o2.sqlite")}}),
        callbacks=[other := ResultCollector()])
    baseline.run()
    assert [(r.label, r.confidence) for r in results] == [(r.label, r.confidence) for r in other.results]
