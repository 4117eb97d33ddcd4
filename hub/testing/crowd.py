"""Drives the simulated crowd through the annotator API (next_task / submit_answer), as the web UI will.

Simulated people do not see images: an oracle (sample id -> true class) tells them the truth, and they answer
through their SimulatedAnnotator (accuracy, latency, operations). Latency is recorded as simulated time in the
answer, never slept, so 1,000 samples take seconds.

A person whose profile says so declines ("can't tell", given back through `release` as the web UI's button does) or
walks away: they take a task and never come back, so the task stays held until the hub's
`tasks.assignment_timeout_s` gives it to somebody else, and they take no more tasks (`gone`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from hgen.hub.annotators import AnnotatorAPI
from hgen.hub.crowd import SimulatedAnswer, SimulatedCrowd
from hgen.hub.errors import BadInputError
from hgen.hub.kb.store import Task
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.5  # upper bound between looks at the database when another process may have added work


class CrowdDriver:
    """A thread that lets every simulated annotator take and answer tasks until stopped."""

    def __init__(self, api: AnnotatorAPI, crowd: SimulatedCrowd, oracle: Mapping[str, int] | Callable[[str], int],
                 hardness: Callable[[Task], float] | None = None) -> None:
        self.api = api
        self.crowd = crowd
        self._truth = oracle if callable(oracle) else oracle.__getitem__
        self._hardness = hardness or (lambda task: 1.0 - task.model_output.confidence)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.answered = 0
        self.refused = 0
        self.declined = 0
        self.gone: set[str] = set()  # people who walked away from a task (and the crowd)
        for annotator in crowd.annotators:
            api.register(annotator.name, simulated=True)

    def start(self) -> CrowdDriver:
        self._thread = threading.Thread(target=self._run, name="simulated-crowd", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.api.notify_work()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_once(self) -> int:
        """One round: each annotator takes at most one task; returns how many answers were given."""
        given = 0
        for annotator in self.crowd.annotators:
            if annotator.name in self.gone:
                continue
            task = self.api.next_task(annotator.name)
            if task is None:
                continue
            gold = self.api.gold_truth(task.sample_id)
            truth = gold if gold is not None else self._truth(task.sample_id)
            simulated = annotator.answer(truth, self._hardness(task))
            if simulated.action != "answer":
                self._decline(annotator.name, task, simulated)
                continue
            answer = hub_pb2.Answer(task_id=task.task_id, sample_id=task.sample_id, annotator_id=annotator.name,
                                    class_id=simulated.label, latency_s=simulated.latency_s,
                                    operations=simulated.operations, simulated=True)
            try:
                self.api.submit_answer(answer)
                given += 1
            except BadInputError:  # e.g. the deadline closed the task meanwhile: counted by the API
                self.refused += 1
        self.answered += given
        return given

    def _decline(self, name: str, task: Task, simulated: SimulatedAnswer) -> None:
        """Walk away (the task stays held until the hub's timeout) or say "can't tell" (the task goes back)."""
        if simulated.action == "walk_away":
            self.gone.add(name)
            return
        try:
            self.api.release(task.task_id, name, "cant_tell", simulated.latency_s)
            self.declined += 1
        except BadInputError:  # closed meanwhile: counted by the API
            self.refused += 1

    def _run(self) -> None:
        generation = 0
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue
            except Exception:  # keep the crowd alive across a hub restart (engine disposed under us)
                log.exception("simulated crowd round failed")
            generation = self.api.wait_for_work(generation, IDLE_WAIT_S)
