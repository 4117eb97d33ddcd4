"""Declines end to end over real gRPC on loopback: people answer "can't tell" / skip through the annotator API,
the device's SampleReply counts them, and the edge agent's result carries the counts (and, when nobody labelled
the sample, is `declined` with the model's label). The hub runs on a simulated clock: a sample's deadline passes
when the test moves the clock past it, not after a wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.results import ResultStatus
from hgen.edge_agent.testing import ResultCollector, make_keys, null_bundle
from hgen.hub.annotators import AnnotatorAPI
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.device import GrpcDevice, ReplyLog, enroll
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2
from hgen.hub.transports.grpc_server import GrpcTransport

DEVICE = "cam-1"
PEOPLE = ("ann", "bob", "cat")
DEADLINE_S = 600.0  # never reached in real time: the hub's clock is moved past it
WAIT_S = 30.0  # deadline for what follows at once (replies after the sweep), not a pause
Act = Callable[[str, str], str | int]  # (annotator, sample id) -> "cant_tell" | "skip" | a class


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    """Its clock starts at the wall clock's now, so a device's absolute deadline is read in the same frame."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url},
                               "grpc": {"port": free_port(), "reply_poll_s": 0.1}})
    clock = Clock(time.time())
    service = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    app = HubApp(config, service=service).start()
    for person in PEOPLE:
        app.service.annotators.register(person)
    yield app
    app.stop()


def wait_for_samples(app: HubApp, count: int, timeout: float = 30.0) -> None:
    """Block on the annotator API's work signal (no sleeps) until the hub stored `count` samples."""
    api, generation, give_up = app.service.annotators, 0, time.monotonic() + timeout
    while app.service.kb.count(Sample) < count:
        assert time.monotonic() < give_up, "the device's samples never reached the hub"
        generation = api.wait_for_work(generation, 0.5)


def pass_deadlines(app: HubApp) -> None:
    """Move the hub's clock just past every open sample's deadline and close them, as its sweep would."""
    clock = app.service.clock
    while (due := app.service.kb.next_deadline()) is not None:
        clock.now = max(clock.now, due + 1.0)  # type: ignore[attr-defined]
        app.service.sweep_once()


def work_through(api: AnnotatorAPI, act: Act) -> int:
    """Each person takes tasks in turn and does what `act` says, until nobody gets a task; returns the tasks."""
    done, progressed = 0, True
    while progressed:
        progressed = False
        for person in PEOPLE:
            task = api.next_task(person)
            if task is None:
                continue
            choice = act(person, task.sample_id)
            if isinstance(choice, str):
                api.release(task.task_id, person, choice, latency_s=2.0)
            else:
                api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=person, class_id=choice,
                                                 operations=1, latency_s=2.0))
            done, progressed = done + 1, True
    return done


def test_device_reply_counts_cant_tell_and_skip_over_grpc(hub: HubApp) -> None:
    declined, labelled = make_sample(DEVICE, top=1), make_sample(DEVICE, top=1)
    request = make_request(DEVICE, [declined, labelled], m=2, deadline_s=DEADLINE_S, now=hub.service.clock())
    log = ReplyLog()
    address = f"127.0.0.1:{hub.transport(GrpcTransport).port}"
    device = GrpcDevice(address, log, call_timeout_s=30, token=enroll(hub, DEVICE)[DEVICE].bearer)
    sender = threading.Thread(target=device.submit_until_replied, args=(request,), daemon=True)
    sender.start()
    wait_for_samples(hub, 2)

    def act(person: str, sample_id: str) -> str | int:
        if sample_id == declined.sample_id:
            return "skip" if person == "bob" else "cant_tell"
        return "cant_tell" if person == "bob" else 6

    assert work_through(hub.service.annotators, act) == 6  # every person saw both samples once
    assert log.wait_for(1, timeout=WAIT_S), "the labelled sample's reply did not come at once"
    assert set(log.labels) == {labelled.sample_id}  # nobody labelled the other: it waits for its deadline
    pass_deadlines(hub)
    assert log.wait_for(2, timeout=WAIT_S), "the device did not get both replies"
    sender.join(timeout=10)
    device.close()
    nobody, some = log.labels[declined.sample_id], log.labels[labelled.sample_id]
    assert nobody.status == hub_pb2.REPLY_STATUS_EXPIRED and not nobody.answers
    assert (nobody.cant_tell, nobody.skipped) == (2, 1)
    assert some.status == hub_pb2.REPLY_STATUS_ANSWERED and some.aggregated.class_id == 6
    assert len(some.answers) == 2 and some.aggregated.confidence == pytest.approx(1.0)
    assert (some.cant_tell, some.skipped) == (1, 0)


def agent_config(tmp: Path, hub_url: str, secret: str) -> dict:
    keys = make_keys(tmp / "keys")
    bundle = null_bundle(tmp / "bundle", keys)
    frames = tmp / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (28, 28), np.uint8))
    return {"device_id": DEVICE, "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
            "source": {"kind": "images", "uri": str(frames)},
            "gate": {"tau": 1.0, "audit_share": 0.0},  # every frame goes to people
            "batching": {"size": 8, "max_wait_s": 0.1, "annotators": 2, "deadline_s": DEADLINE_S,
                         "patience_s": 120.0},
            "hub": {"url": hub_url, "resend_after_s": 60.0, "watch_updates": False, "secret": secret},
            "outbox": {"path": str(tmp / "outbox.sqlite")}}


def test_agent_result_is_declined_with_the_counts_and_the_model_label(tmp_path: Path, hub: HubApp) -> None:
    results = ResultCollector()
    agent = Agent(parse_agent_config(agent_config(tmp_path, f"grpc://127.0.0.1:{hub.transport(GrpcTransport).port}",
                                                  enroll(hub, DEVICE)[DEVICE].secret)),
                  callbacks=[results])
    with agent:  # starts the agent; leaving stops it
        wait_for_samples(hub, 2)
        assert work_through(hub.service.annotators, lambda person, _: "skip" if person == "bob" else "cant_tell") == 6
        pending = {r.sample_id for r in results.results if r.status is ResultStatus.PENDING}
        assert len(pending) == 2
        pass_deadlines(hub)
        final = results.final_for(pending, timeout=WAIT_S)
    for result in final.values():
        assert result.status is ResultStatus.DECLINED, result
        assert result.label == result.model_label is not None and result.answers == ()
        assert (result.cant_tell, result.skipped) == (2, 1)
    assert agent.telemetry.count("declined") == 2 and agent.telemetry.count("hub_refused") == 0
    replies = hub.service.kb.replies_for(sorted(pending))
    assert {(r.status, r.cant_tell, r.skipped) for r in replies} == {(hub_pb2.REPLY_STATUS_EXPIRED, 2, 1)}

