"""The source contract, frame pacing (fps limit, live drops) and reconnect-with-back-off for live streams."""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import numpy as np

from hgen.edge_agent.config import SourceConfig
from hgen.edge_agent.errors import SourceError, SourceSettingError
from hgen.runtime.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One frame as OpenCV delivered it (uint8, HxW or HxWxC BGR); `image` is None when it could not be decoded."""

    index: int
    image: np.ndarray | None
    captured_at: float
    origin: str = ""
    prepared: Any = None  # what a consumer's `prepare` hook computed on the reader thread (the model input)


@dataclass
class SourceStats:
    """Counters every source keeps; the agent copies them into telemetry."""

    frames: int = 0
    dropped: int = 0  # live pacing: frames a camera would have overwritten while we were busy
    reconnects: int = 0
    failed_opens: int = 0
    problem: str = ""  # current problem, empty when the source is healthy
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_problem(self, text: str) -> None:
        with self.lock:
            self.problem = text


class FrameSource(ABC):
    """Yields frames until the end of the stream (`read` returns None) or `close`."""

    live: ClassVar[bool] = False  # a camera or network stream: reopened with back-off, never at an end

    def __init__(self, config: SourceConfig, stop: threading.Event) -> None:
        self.config = config
        self.stop = stop
        self.stats = SourceStats()

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of the stream (or when stopped)."""

    def close(self) -> None:
        """Release the device or file handle."""

    def set_prepare(self, prepare: Callable[[Frame], Frame]) -> bool:
        """Ask the source to run `prepare` on each frame off the consumer's thread; False if it cannot."""
        return False

    @classmethod
    def uri_problem(cls, uri: str) -> str | None:
        """Why `uri` is nothing this kind can read (None: it may be), judged from the text alone, so agent.yaml's
        validation (`hgen-agent check`) can refuse it by key instead of `run` failing on it later."""
        del uri
        return None


SOURCES: Registry[type[FrameSource]] = Registry("frame source", package="hgen.edge_agent.sources")


def is_live(kind: str) -> bool:
    """Whether the source kind is a live stream (opening it may wait for a camera or a network)."""
    return SOURCES.get(kind).live


def open_source(config: SourceConfig, stop: threading.Event | None = None) -> FrameSource:
    """Open the configured source, paced by `fps_limit` when set."""
    source = SOURCES.get(config.kind)(config, stop or threading.Event())
    if config.prefetch:
        source = PrefetchSource(source, config.prefetch)
    return PacedSource(source) if config.fps_limit else source


class PrefetchSource(FrameSource):
    """Reads `depth` frames ahead on its own thread: OpenCV decodes outside the GIL, so on a multi-core device
    decoding overlaps inference instead of adding to it. Bounded, so a slow pipeline never piles up frames."""

    POLL_S = 0.1  # how often a blocked reader or consumer re-checks for stop/close

    def __init__(self, inner: FrameSource, depth: int) -> None:
        super().__init__(inner.config, inner.stop)
        self.inner = inner
        self.stats = inner.stats
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._ended = False
        self._error: BaseException | None = None
        self._prepare: Callable[[Frame], Frame] | None = None
        self._thread = threading.Thread(target=self._fill, name="agent-source", daemon=True)
        self._start_lock = threading.Lock()  # the reader starts on the first read, after set_prepare

    def _halted(self) -> bool:
        return self.stop.is_set() or self._closed.is_set()

    def _fill(self) -> None:
        try:
            while not self._halted():
                frame = self.inner.read()
                if frame is not None and self._prepare is not None:
                    frame = self._prepare_safely(frame)
                if not self._put(frame) or frame is None:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it on its thread
            self._error = exc
            self._put(None)

    def set_prepare(self, prepare: Callable[[Frame], Frame]) -> bool:
        self._prepare = prepare
        return True

    def _prepare_safely(self, frame: Frame) -> Frame:
        assert self._prepare is not None
        try:
            return self._prepare(frame)
        except Exception:  # the consumer prepares it again and reports the problem on its own thread
            log.debug("prepare hook failed on frame %d", frame.index, exc_info=True)
            return frame

    def _put(self, item: Frame | None) -> bool:
        while not self._halted():
            try:
                self._queue.put(item, timeout=self.POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread.ident is None:
                self._thread.start()

    def read(self) -> Frame | None:
        self._ensure_started()
        while not self._ended:
            try:
                item = self._queue.get(timeout=self.POLL_S)
            except queue.Empty:
                if self._halted() or not self._thread.is_alive() and self._queue.empty():
                    self._ended = True
                continue
            if item is None:
                self._ended = True
                if self._error is not None:
                    raise self._error
            return item
        return None

    def close(self) -> None:
        self._closed.set()
        with self._start_lock:
            if self._thread.ident is not None:
                self._thread.join(timeout=10)
        self.inner.close()


class PacedSource(FrameSource):
    """Frame i is due at t0 + i/fps. `all` waits for the slot; `live` also skips frames already a period late."""

    def __init__(self, inner: FrameSource) -> None:
        super().__init__(inner.config, inner.stop)
        self.inner = inner
        self.stats = inner.stats
        self.period = 1.0 / float(inner.config.fps_limit or 1.0)
        self._t0: float | None = None
        self._slot = 0

    def read(self) -> Frame | None:
        while True:
            frame = self.inner.read()
            if frame is None:
                return None
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            due = self._t0 + self._slot * self.period
            self._slot += 1
            if self.config.pacing == "live" and now > due + self.period:
                with self.stats.lock:
                    self.stats.dropped += 1
                continue
            if due > now and self.stop.wait(due - now):
                return None
            return frame

    def close(self) -> None:
        self.inner.close()

    def set_prepare(self, prepare: Callable[[Frame], Frame]) -> bool:
        return self.inner.set_prepare(prepare)


class CaptureSource(FrameSource):
    """A `cv2.VideoCapture` source; live kinds reopen with exponential back-off when reads fail."""

    def __init__(self, config: SourceConfig, stop: threading.Event) -> None:
        super().__init__(config, stop)
        import cv2

        self._cv2 = cv2
        self._capture = None
        self._index = 0
        self._open_or_raise()

    def _target(self) -> str | int:
        return self.config.uri

    def _api(self) -> int:
        """The OpenCV backend to open `_target` with: any that takes it, unless the kind knows better."""
        return int(self._cv2.CAP_ANY)

    def _open(self) -> bool:
        capture = self._cv2.VideoCapture(self._target(), self._api())
        if not capture.isOpened():
            capture.release()
            return False
        self._capture = capture
        return True

    def _open_or_raise(self) -> None:
        if not self._open():
            if not self.live:
                raise SourceSettingError(f"{self.config.kind} source cannot open {self.config.uri!r}")
            self.stats.set_problem(f"cannot open {self.config.uri!r}; retrying")
            self.stats.failed_opens += 1

    def read(self) -> Frame | None:
        while not self.stop.is_set():
            if self._capture is not None:
                ok, image = self._capture.read()
                if ok and image is not None:
                    return self._frame(image)
                self._release()
            if not self._restart():
                return None
        return None

    def _frame(self, image: np.ndarray) -> Frame:
        frame = Frame(self._index, image, time.time(), str(self.config.uri))
        self._index += 1
        self.stats.frames += 1
        return frame

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _restart(self) -> bool:
        """End of a file, or a live stream dropped: loop / reconnect, else end the stream."""
        if not self.live:
            return self.config.loop and self._open()
        return self._reconnect()

    def _reconnect(self) -> bool:
        """Reopen with doubling back-off until it opens (True), the agent stops (False), or `reconnect_attempts`
        run out (SourceError)."""
        delay, attempts = self.config.reconnect_initial_s, 0
        self.stats.set_problem(f"{self.config.kind} {self.config.uri!r} dropped; reconnecting")
        log.warning("source %s dropped; reconnecting with back-off", self.config.uri)
        while not self.stop.is_set():
            if self._open():
                with self.stats.lock:
                    self.stats.reconnects += 1
                self.stats.set_problem("")
                return True
            attempts += 1
            with self.stats.lock:
                self.stats.failed_opens += 1
            if self.config.reconnect_attempts is not None and attempts > self.config.reconnect_attempts:
                self._give_up(attempts)
            if self.stop.wait(delay):
                return False
            delay = min(delay * 2, self.config.reconnect_max_s)
        return False

    def _give_up(self, attempts: int) -> NoReturn:
        """A live source that stays away fails the run (exit 1), unlike a file's end (exit 0): a supervisor that
        restarts on failure then brings the device back, where a clean end would leave it down for good."""
        text = (f"{self.config.kind} source {self.config.uri!r} gone after {attempts} failed reopen attempts "
                f"(source.reconnect_attempts: {self.config.reconnect_attempts})")
        self.stats.set_problem(text)
        raise SourceError(text)  # logged by the pipeline as it fails, and printed by the CLI

    def close(self) -> None:
        self._release()
