"""The annotator API: the one path by which answers enter the hub, for people (web UI) and the simulated crowd.

`next_task` assigns an open sample to an annotator (a gold task at the configured share, nothing while the
annotator is paused; their oldest open task again once they hold `max_open`, so opening more sessions
hoards nothing; a sample whose image is lost is closed on the way, counted and its reply sent); `submit_answer`
records the answer and, on the m-th, aggregates and replies; `release` gives a task back without a label
(skip / can't tell). Bad answers (unknown or closed task, or a paused annotator's) raise typed errors that are
counted and logged once; nothing else changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from typing import TYPE_CHECKING

from hgen.hub.errors import AnnotatorPausedError, BadInputError
from hgen.hub.kb.store import KnowledgeBase, Task

if TYPE_CHECKING:
    from hgen.hub.gold import GoldBook
from hgen.hub.metrics import HubMetrics
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)
ReplyListener = Callable[[Sequence[hub_pb2.SampleReply]], None]


class AnnotatorAPI:
    """Assign tasks and accept answers; notifies listeners of the replies that answers complete."""

    def __init__(self, kb: KnowledgeBase, metrics: HubMetrics, on_replies: ReplyListener,
                 gold: GoldBook | None = None, *, max_open: int | None = None) -> None:
        self._kb = kb
        self.max_open = max_open
        self._metrics = metrics
        self._on_replies = on_replies
        self.gold = gold
        self._work = threading.Condition()
        self._generation = 0

    def register(self, annotator_id: str, *, simulated: bool = False) -> None:
        self._kb.register_annotator(annotator_id, "simulated" if simulated else "human")

    def next_task(self, annotator_id: str, min_time_s: float = 0.0) -> Task | None:
        """The annotator's next task: None when there is no work or the annotator is paused. `min_time_s`: hand out
        no sample whose deadline is nearer (a person needs time to answer before the deadline closes it)."""
        task = None
        if self.gold is not None:
            if self.gold.paused_reason(annotator_id) is not None:
                return None
            if self.gold.due(annotator_id):
                if self.gold.review(annotator_id).paused_reason is not None:  # gold left to time out counts too
                    return None
                task = self.gold.assign(annotator_id, max_open=self.max_open)
        unreadable: list[str] = []
        try:
            task = self._device_task(annotator_id, min_time_s, unreadable) if task is None else self._given(task)
        finally:
            if unreadable:  # set aside by the knowledge base (logged there once per sample)
                self._metrics.inc("sample_image_unreadable", len(unreadable))
        if task is not None and self.paused_reason(annotator_id) is not None:
            self._kb.withdraw_open(annotator_id)  # paused between the check above and the assignment
            return None
        return task

    def _device_task(self, annotator_id: str, min_time_s: float, unreadable: list[str]) -> Task | None:
        task = self._kb.assign_next(annotator_id, max_open=self.max_open, min_time_s=min_time_s,
                                    unreadable=unreadable)
        if task is not None:
            return self._given(task)
        if self.max_open is not None and self._kb.open_task_count(annotator_id) >= self.max_open:
            return self._kb.held_task(annotator_id, unreadable)  # at the cap: the task they hold, not a new one
        return None

    def _given(self, task: Task) -> Task:
        self._metrics.inc("tasks_assigned")
        return task

    def paused_reason(self, annotator_id: str) -> str | None:
        return self.gold.paused_reason(annotator_id) if self.gold is not None else None

    def check_active(self, annotator_id: str) -> None:
        """AnnotatorPausedError while the annotator is paused: their answers and skips are stored nowhere (the pause
        already gave their open tasks to others)."""
        reason = self.paused_reason(annotator_id)
        if reason is not None:
            raise AnnotatorPausedError(f"you are paused ({reason}); nothing was stored, ask an operator to resume you")

    def gold_truth(self, sample_id: str) -> int | None:
        """The known class of a gold sample (None for a device's sample): the simulated crowd's oracle for gold."""
        return self.gold.truth(sample_id) if self.gold is not None else None

    def release(self, task_id: str, annotator_id: str, kind: str, latency_s: float = 0.0) -> None:
        """Skip or can't tell: recorded with the time taken, and counted in the sample's reply (cant_tell /
        skipped) so the device learns people declined; the sample goes to another annotator."""
        try:
            self.check_active(annotator_id)
            self._kb.release_task(task_id, annotator_id, kind, latency_s)
        except BadInputError as exc:
            self._metrics.inc(exc.code)
            log.warning("release refused (%s): %s", exc.code, exc)
            raise
        self._metrics.inc(f"released_{kind}")
        if self.gold is not None:
            self.gold.after_answer(annotator_id, self._kb.sample_of_task(task_id))  # a gold task given back is a miss
        self.notify_work()

    def submit_answer(self, answer: hub_pb2.Answer) -> hub_pb2.SampleReply | None:
        """Record `answer`; returns the reply when this answer completed its sample."""
        try:
            self.check_active(answer.annotator_id)
            reply = self._kb.submit_answer(answer)
        except BadInputError as exc:
            self._metrics.inc(exc.code)
            log.warning("answer refused (%s): %s", exc.code, exc)
            raise
        self._metrics.inc("answers")
        if self.gold is not None:
            self.gold.after_answer(answer.annotator_id, self._kb.sample_of_task(answer.task_id))
        if reply is not None:
            self._on_replies([reply])
        return reply

    # --- waking annotators when work arrives (in-process; other processes' work is seen on timeout) ---------

    def notify_work(self) -> None:
        with self._work:
            self._generation += 1
            self._work.notify_all()

    def wait_for_work(self, seen_generation: int, timeout: float) -> int:
        """Block until work newer than `seen_generation` is announced or `timeout`; return the generation."""
        with self._work:
            self._work.wait_for(lambda: self._generation != seen_generation, timeout=timeout)
            return self._generation
