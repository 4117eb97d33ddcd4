"""Transactions PostgreSQL aborts because they raced another (deadlock detected, serialization failure) did nothing
and are safe to run again from the start: a task's transitions are retried a few times, then refused as a conflict
(TaskConflictError, 409), never surfaced as a 500."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError

from hgen.hub.errors import TaskConflictError

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
RETRYABLE = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
ATTEMPTS = 3


def is_conflict(exc: DBAPIError) -> bool:
    """Did the database abort the transaction for racing another (rather than for what it tried to store)?"""
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE


def retry_conflicts(transition: Callable[P, R]) -> Callable[P, R]:
    """Run `transition` (one whole transaction) again when the database aborted it for a race."""

    @functools.wraps(transition)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return transition(*args, **kwargs)
            except DBAPIError as exc:
                if not is_conflict(exc):
                    raise
                log.warning("%s aborted by the database (%s), attempt %d of %d", transition.__name__,
                            type(exc.orig).__name__, attempt, ATTEMPTS)
        raise TaskConflictError("another request changed this task at the same moment; nothing was stored, "
                                "reload the page")

    return run
