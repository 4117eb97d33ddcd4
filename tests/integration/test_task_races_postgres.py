"""PostgreSQL (READ COMMITTED): two requests changing one task at once. Reading the task's state and then writing it
let both pass: the same answer posted twice was a 500 (unique answers.task_id), an answer and a skip were both
stored or deadlocked, an answer racing the timeout sweep deadlocked. Exactly one must win; the other gets the
"already closed" refusal (409), and nothing is stored twice.

The overlap is forced, not hoped for: a third transaction holds the task's row while the racers start, each
started once the one before waits on a lock (seen in pg_stat_activity), then lets go."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from hgen.hub.config import parse_hub_config
from hgen.hub.errors import TaskClosedError
from hgen.hub.kb.models import AnswerRow, Sample, TaskEvent
from hgen.hub.kb.store import KnowledgeBase, Task
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import pg_url  # noqa: F401 (pytest fixture; pg_server comes from tests/conftest.py)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import wait_until
from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub
from hgen.protos import hub_pb2

DEVICE = "cam-1"
TIMEOUT_S = 900.0
Outcome = object  # a step's result, or the exception it raised


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(pg_url: str, tmp_path: Path, clock: Clock) -> Iterator[HubService]:
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": pg_url, "image_dir": str(tmp_path)},
                               "tasks": {"assignment_timeout_s": TIMEOUT_S}})
    hub = HubService(config, KnowledgeBase.open(pg_url, image_dir=tmp_path, clock=clock), clock=clock)
    hub.annotators.register("ann")
    yield hub
    hub.close()


def held_task(service: HubService, clock: Clock, m: int = 3) -> Task:
    sample = make_sample(DEVICE, confidence=0.4, top=3)
    assert service.submit(make_request(DEVICE, [sample], m=m, now=clock.now), "grpc").accepted == [sample.sample_id]
    task = service.kb.assign_next("ann")
    assert task is not None
    return task


def waiting_on_locks(service: HubService) -> int:
    with service.kb.engine.connect() as c:
        return int(c.scalar(text("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND wait_event_type = 'Lock'")))


def outcome(future: Future) -> Outcome:
    return future.exception() or future.result()


def race(service: HubService, task_id: str, *steps: Callable[[], object]) -> list[Outcome]:
    """Run `steps` on threads so that they overlap for certain (see the module's docstring); their outcomes."""
    with ThreadPoolExecutor(len(steps)) as pool, service.kb.engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM assignments WHERE id = :id FOR UPDATE"), {"id": task_id})
        futures: list[Future] = []
        for step in steps:
            futures.append(pool.submit(step))
            assert wait_until(lambda: waiting_on_locks(service) >= len(futures) or any(f.done() for f in futures)), \
                f"step {len(futures)} never waited on a lock"
        holder.commit()
        return [outcome(f) for f in futures]


def answer(service: HubService, task: Task) -> Callable[[], object]:
    return lambda: service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="ann",
                                                                   class_id=2, operations=1))


def skip(service: HubService, task: Task) -> Callable[[], object]:
    return lambda: service.annotators.release(task.task_id, "ann", "skip", 1.0)


def refusals(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes that are exceptions; any but TaskClosedError fails the test with its traceback."""
    for o in outcomes:
        if isinstance(o, BaseException) and not isinstance(o, TaskClosedError):
            raise o
    return [o for o in outcomes if isinstance(o, TaskClosedError)]


def stored(service: HubService, task: Task) -> tuple[int, int, int, int]:
    """(answers, releases) of the task, and its sample's (answer_count, assigned_count)."""
    kb = service.kb
    with kb.session() as s:
        row = s.get(Sample, task.sample_id)
        counts = (row.answer_count, row.assigned_count)
    return kb.count(AnswerRow, task_id=task.task_id), kb.count(TaskEvent, task_id=task.task_id), *counts


def test_the_same_answer_twice_at_once_is_stored_once(service: HubService, clock: Clock) -> None:
    task = held_task(service, clock)
    outcomes = race(service, task.task_id, answer(service, task), answer(service, task))
    assert len(refusals(outcomes)) == 1
    assert stored(service, task) == (1, 0, 1, 1)


@pytest.mark.parametrize("first", ["answer", "skip"])
def test_an_answer_and_a_skip_at_once_one_wins(service: HubService, clock: Clock, first: str) -> None:
    task = held_task(service, clock)
    steps = [answer(service, task), skip(service, task)]
    outcomes = race(service, task.task_id, *(steps if first == "answer" else steps[::-1]))
    assert len(refusals(outcomes)) == 1
    assert stored(service, task) in ((1, 0, 1, 1), (0, 1, 0, 0))  # answered, or given back: never both


@pytest.mark.parametrize("first", ["answer", "sweep"])
def test_an_answer_racing_the_timeout_sweep_is_stored_or_refused_never_both(
        service: HubService, clock: Clock, first: str) -> None:
    task = held_task(service, clock)
    clock.now += TIMEOUT_S + 1
    steps = [answer(service, task), lambda: service.kb.expire_assignments(TIMEOUT_S)]
    outcomes = race(service, task.task_id, *(steps if first == "answer" else steps[::-1]))
    refused = refusals(outcomes)
    timed_out = [o for o in outcomes if isinstance(o, int)]
    assert timed_out in ([0], [1]) and len(refused) == timed_out[0]  # the answer lost exactly when the sweep won
    assert stored(service, task) == ((0, 0, 0, 0) if refused else (1, 0, 1, 1))


def test_a_double_posted_answer_is_a_409_not_a_500(pg_url: str, tmp_path: Path) -> None:
    with web_hub(tmp_path, knowledge_base={"url": pg_url, "image_dir": str(tmp_path / "img")}) as app:
        add_people(app, annotators=("ann",), operators=())
        sample = make_sample("cam-1", confidence=0.4, top=3)
        assert app.service.submit(make_request("cam-1", [sample], m=3), "grpc").accepted == [sample.sample_id]
        clients = [logged_in(app, "ann"), logged_in(app, "ann")]
        pages = [c.get("/annotate").get_data(as_text=True) for c in clients]
        [task_id] = {re.search(r'data-task="([^"]+)"', p).group(1) for p in pages}  # one task, two tabs

        def post(c: FlaskClient, page: str) -> Callable[[], int]:
            form = {"class_id": "2", "kind": "class", "csrf_token": csrf_token_of(page)}
            return lambda: c.post(f"/task/{task_id}/answer", data=form).status_code

        codes = race(app.service, task_id, *(post(c, p) for c, p in zip(clients, pages)))
        assert sorted(codes) == [303, 409]
        assert app.service.kb.count(AnswerRow, task_id=task_id) == 1
