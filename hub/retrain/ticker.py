"""A daemon thread that calls one function every `period_s` until stopped: the lease keeper's and the relay's."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    """`tick` runs every `period_s` (at once first when `first_now`); `stop` returns within one tick's run."""

    def __init__(self, tick: Callable[[], None], period_s: float, name: str, *, first_now: bool = False) -> None:
        self.tick = tick
        self.period_s = period_s
        self.name = name
        self.first_now = first_now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        if self.first_now:
            self.tick()
        while not self._stop.wait(self.period_s):
            self.tick()
