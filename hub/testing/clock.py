"""A simulated wall clock for tests: deadlines, windows and leases pass when the test moves `now`, not after a sleep."""

from __future__ import annotations


class Clock:
    """Callable like `time.time`; set or advance `now` to let time pass."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
