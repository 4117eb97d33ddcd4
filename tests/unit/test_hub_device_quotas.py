"""One device flooding the hub (review of device intake): its 5,000 samples came before every other device's in
hand-out, so theirs expired unanswered; nothing capped what one device stores (samples, image bytes); a sample
already past its deadline was stored in full; class-probability vectors of any length were kept; five spellings
of one UUID made five samples. On SQLite and PostgreSQL where the knowledge base is involved."""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

from hgen.hub.config import DEFAULT_CLASSES, LimitsConfig, class_names, parse_hub_config
from hgen.hub.errors import InvalidRequestError
from hgen.hub.kb.models import Sample
from hgen.hub.kb.store import KnowledgeBase, Task
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.validation import MAX_CLASS_PROBABILITIES, check_uuid, classes_known
from hgen.hub.web.routes_annotate import guesses
from hgen.hub.testing.services import answer_next, closing_maker
from hgen.protos import hub_pb2

A, B, C = "cam-a", "cam-b", "cam-c"
HOUR_S = 3600.0
MakeHub = Callable[..., HubService]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_hub(url: str, tmp_path: Path, clock: Clock, hub_settings: dict[str, object] | None = None,
             **limits: object) -> HubService:
    """A hub without transports; images over 2,000 bytes are files under tmp_path/img."""
    config = parse_hub_config({"devices": [A, B, C], "limits": limits, **(hub_settings or {}),
                               "knowledge_base": {"url": url, "inline_image_max_bytes": 2000,
                                                  "image_dir": str(tmp_path / "img")}})
    kb = KnowledgeBase.open(url, image_dir=tmp_path / "img", inline_max_bytes=2000, clock=clock)
    return HubService(config, kb, clock=clock)


def hub_maker(url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:
    yield from closing_maker(functools.partial(open_hub, url, tmp_path, clock))


@pytest.fixture
def hubs(kb_url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:  # noqa: F811
    """Hubs on SQLite and on PostgreSQL."""
    yield from hub_maker(kb_url, tmp_path, clock)


@pytest.fixture
def sqlite_hubs(tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:
    """Hubs on SQLite only, for checks that never reach the database's own behaviour."""
    yield from hub_maker(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, clock)


def submit(hub: HubService, clock: Clock, device: str, samples: list[hub_pb2.Sample], *, deadline_s: float = 600.0,
           batch_id: str | None = None) -> tuple[list[str], list[hub_pb2.SampleReply]]:
    result = hub.submit(make_request(device, samples, m=1, deadline_s=deadline_s, now=clock.now,
                                     batch_id=batch_id), "grpc")
    return result.accepted, result.immediate


def refused(replies: list[hub_pb2.SampleReply]) -> list[tuple[str, str]]:
    return [(hub_pb2.RejectReason.Name(r.reject_reason), r.detail) for r in replies
            if r.status == hub_pb2.REPLY_STATUS_REJECTED]


# --- fair hand-out ---------------------------------------------------------------------------------------------


def test_hand_out_goes_round_the_devices_instead_of_oldest_first(hubs: MakeHub, clock: Clock) -> None:
    """A flooded first; B's and C's samples came after all of A's (and expired unanswered). Now each device's
    oldest comes before any device's second, also when each task is answered before the next is taken."""
    hub = hubs()
    hub.annotators.register("p")
    submit(hub, clock, A, [make_sample(A) for _ in range(20)])
    clock.now += 1
    submit(hub, clock, B, [make_sample(B) for _ in range(3)])
    clock.now += 1
    submit(hub, clock, C, [make_sample(C)])
    order = [answer_next(hub, "p") for _ in range(10)]
    assert order == [A, B, C, A, B, A, B, A, A, A]


def test_a_device_hands_out_its_own_samples_oldest_first(hubs: MakeHub, clock: Clock) -> None:
    hub = hubs()
    ids = []
    for _ in range(3):
        sample = make_sample(A)
        submit(hub, clock, A, [sample])
        ids.append(sample.sample_id)
        clock.now += 1
    for person in ("p", "q", "r"):
        hub.annotators.register(person)
    assert [hub.annotators.next_task(p).sample_id for p in ("p", "q", "r")] == ids


def test_hand_out_reads_each_devices_oldest_from_the_open_samples_index(tmp_path: Path, clock: Clock) -> None:
    """The statements of hand-out and of the open-samples cap use ix_samples_open_device (SQLite's planner, no
    ANALYZE: what a hub runs with), never a scan of every sample."""
    hub = open_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, clock)
    try:
        submit(hub, clock, A, [make_sample(A) for _ in range(3)])
        submit(hub, clock, B, [make_sample(B)])
        seen: list[tuple[str, object]] = []
        event.listen(hub.kb.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, parameters, context, many: seen.append((statement, parameters)))
        hub.annotators.register("p")
        assert hub.annotators.next_task("p") is not None
        hub.kb.device_intake(A)
        wanted = [(sql, params) for sql, params in seen if "!= 'gold'" in sql]  # the index's predicate, inline
        # each device's oldest; then, two devices being fewer than the candidates tried, each one's next; the count
        assert len(wanted) == 4 and "FROM devices" in wanted[0][0] and "count(*)" in wanted[3][0]
        with hub.kb.engine.connect() as connection:
            for sql, params in wanted:
                plan = " | ".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
                assert "ix_samples_open_device" in plan and "SCAN samples" not in plan, plan
    finally:
        hub.close()


# --- per-device limits -----------------------------------------------------------------------------------------


def test_the_limits_defaults() -> None:
    limits = LimitsConfig()
    assert limits.max_open_samples_per_device == 1000 and limits.max_samples_per_device_per_hour == 0
    assert limits.max_image_bytes_per_device_per_hour == 1 << 30 and limits.max_model_boxes == 1000


def test_a_device_at_its_open_cap_is_refused_as_labour_budget_and_others_are_not(
        hubs: MakeHub, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    hub = hubs(max_open_samples_per_device=3)
    samples = [make_sample(A) for _ in range(5)]
    with caplog.at_level(logging.WARNING, logger="hgen.hub.service"):
        accepted, replies = submit(hub, clock, A, samples)
        assert accepted == [s.sample_id for s in samples[:3]]
        assert [reason for reason, _ in refused(replies)] == ["REJECT_REASON_LABOUR_BUDGET"] * 2  # a known reason
        assert all("limits.max_open_samples_per_device (3)" in detail for _, detail in refused(replies))
        request = make_request(A, samples, m=1, now=clock.now)  # the device asks again: stored ones are no new ones
        again = hub.submit(request, "grpc")
        assert len(again.duplicates) == 3 and len(refused(again.immediate)) == 2
    assert hub.metrics.get("device_sample_cap") == 4
    assert sum("device_sample_cap" in r.getMessage() for r in caplog.records) == 1  # logged once per device
    clock.now += 1
    assert submit(hub, clock, B, [make_sample(B), make_sample(B)])[0] != []  # another device is not held back
    hub.annotators.register("p")
    assert answer_next(hub, "p") == A  # one of A's closes: room for one more
    accepted, replies = submit(hub, clock, A, [make_sample(A), make_sample(A)])
    assert len(accepted) == 1 and len(refused(replies)) == 1


def test_the_hourly_sample_count_caps_when_set(sqlite_hubs: MakeHub, clock: Clock) -> None:
    hub = sqlite_hubs(max_samples_per_device_per_hour=2, max_open_samples_per_device=0)
    accepted, replies = submit(hub, clock, A, [make_sample(A) for _ in range(3)])
    assert len(accepted) == 2
    [(reason, detail)] = refused(replies)
    assert reason == "REJECT_REASON_LABOUR_BUDGET" and "limits.max_samples_per_device_per_hour (2)" in detail
    clock.now += HOUR_S + 1
    assert len(submit(hub, clock, A, [make_sample(A)], deadline_s=60)[0]) == 1


def big_sample(device: str, seed: int) -> hub_pb2.Sample:
    """A sample whose image is stored as a file (over the 2,000-byte inline limit)."""
    return make_sample(device, image=png_image(size=64, seed=seed))


def test_image_bytes_per_device_and_hour_are_capped_also_across_a_restart(hubs: MakeHub, clock: Clock,
                                                                           tmp_path: Path) -> None:
    samples = [big_sample(A, seed) for seed in range(3)]
    sizes = [len(s.image.data) for s in samples]
    assert min(sizes) > 2000
    budget = sum(sizes) - 1
    hub = hubs(max_image_bytes_per_device_per_hour=budget)
    accepted, replies = submit(hub, clock, A, samples)
    assert accepted == [s.sample_id for s in samples[:2]]
    [(reason, detail)] = refused(replies)
    assert reason == "REJECT_REASON_TOO_LARGE" and "limits.max_image_bytes_per_device_per_hour" in detail
    assert hub.metrics.get("device_image_budget") == 1
    assert len(submit(hub, clock, B, [big_sample(B, 7)])[0]) == 1  # per device
    late = big_sample(A, 8)  # past its deadline: no image is stored, so none is counted
    assert submit(hub, clock, A, [late], deadline_s=-60)[0] == [late.sample_id]
    clock.now += 1
    restarted = hubs(max_image_bytes_per_device_per_hour=budget)  # reads the last hour's stored images once
    assert refused(submit(restarted, clock, A, [samples[2]])[1])[0][0] == "REJECT_REASON_TOO_LARGE"
    clock.now += HOUR_S
    assert len(submit(restarted, clock, A, [samples[2]])[0]) == 1


def test_a_sample_without_image_is_stored_without_one_and_expires_at_once(hubs: MakeHub, clock: Clock) -> None:
    """The agent sends a sample past its deadline (by its own clock) without its image; the hub's clock may say
    the deadline is a little off still. Such a sample failed check_image (INVALID_REQUEST, final); it is now stored
    without image and expires at once, and a resent one the hub holds gets its stored reply."""
    hub = hubs()
    listened: list[hub_pb2.SampleReply] = []
    hub.add_reply_listener("grpc", listened.extend)
    answered = make_sample(A)
    submit(hub, clock, A, [answered])
    hub.annotators.register("p")
    assert answer_next(hub, "p") == A  # answered, its reply stored
    imageless, resent = make_sample(A), hub_pb2.Sample()
    imageless.image.ClearField("data")
    resent.CopyFrom(answered)
    resent.image.ClearField("data")
    accepted, replies = submit(hub, clock, A, [imageless, resent], deadline_s=5.0)  # 5 s left by the hub's clock
    assert accepted == [imageless.sample_id]
    assert [(r.sample_id, r.status) for r in replies] == [(answered.sample_id, hub_pb2.REPLY_STATUS_ANSWERED)]
    with hub.kb.session() as s:
        row = s.get(Sample, imageless.sample_id)
        assert (row.image_bytes, row.image_path, row.deadline) == (b"", None, pytest.approx(clock.now))
    listened.clear()
    assert hub.sweep_once()  # at once: no clock advance
    assert [(r.sample_id, r.status) for r in listened] == [(imageless.sample_id, hub_pb2.REPLY_STATUS_EXPIRED)]
    hub.annotators.register("q")
    assert hub.annotators.next_task("q") is None  # never handed to people


def test_a_sample_past_its_deadline_on_arrival_keeps_no_image_and_expires(sqlite_hubs: MakeHub, clock: Clock,
                                                                         tmp_path: Path) -> None:
    hub = sqlite_hubs()
    sample = big_sample(A, 1)
    accepted, replies = submit(hub, clock, A, [sample], deadline_s=-HOUR_S)
    assert accepted == [sample.sample_id] and replies == []
    with hub.kb.session() as s:
        row = s.get(Sample, sample.sample_id)
        assert (row.image_bytes, row.image_path, row.width) == (b"", None, 64)
    assert not any(p.is_file() for p in (tmp_path / "img").rglob("*"))
    listened: list[hub_pb2.SampleReply] = []
    hub.add_reply_listener("grpc", listened.extend)
    hub.sweep_once()
    assert [r.status for r in listened] == [hub_pb2.REPLY_STATUS_EXPIRED]


# --- the model's output and ids --------------------------------------------------------------------------------


def with_probabilities(count: int) -> hub_pb2.Sample:
    sample = make_sample(A)
    sample.output.ClearField("class_probabilities")
    sample.output.class_probabilities.extend(np.full(count, 1.0 / count).tolist())
    return sample


def test_class_probabilities_are_none_or_one_per_class_when_the_hub_knows_its_classes(sqlite_hubs: MakeHub,
                                                                                       clock: Clock) -> None:
    hub = sqlite_hubs({"num_classes": 10})
    assert hub.classes_known
    for count in (11, 3, 20_000):
        [(reason, detail)] = refused(submit(hub, clock, A, [with_probabilities(count)])[1])
        assert reason == "REJECT_REASON_INVALID_REQUEST" and detail.startswith("output.class_probabilities has")
    assert len(submit(hub, clock, A, [make_sample(A)])[0]) == 1  # num_classes (10) values


def test_a_hub_that_does_not_know_its_classes_only_caps_their_number(sqlite_hubs: MakeHub, clock: Clock) -> None:
    """No num_classes and no readable retrain.models bundle: the hub falls back to 10 classes, which a device's
    model need not have. A 5-class model's samples, accepted before, were all refused (final); now any length up
    to MAX_CLASS_PROBABILITIES is taken, and the annotator page offers no guess outside the hub's classes."""
    hub = sqlite_hubs()
    assert not hub.classes_known and hub.config.num_classes == DEFAULT_CLASSES
    for count in (5, 11, MAX_CLASS_PROBABILITIES):
        assert len(submit(hub, clock, A, [with_probabilities(count)])[0]) == 1, count
    [(reason, detail)] = refused(submit(hub, clock, A, [with_probabilities(MAX_CLASS_PROBABILITIES + 1)])[1])
    assert reason == "REJECT_REASON_INVALID_REQUEST" and str(MAX_CLASS_PROBABILITIES) in detail

    names = class_names((), hub.config.num_classes)
    longer = with_probabilities(12)
    longer.output.class_probabilities[11] = 0.9  # the model's favourite: a class the hub has no button for
    longer.output.class_probabilities[4] = 0.5
    task = Task("t", longer.sample_id, "p", hub_pb2.HDNN_KIND_CNN, longer.image, longer.output, clock.now + 60)
    offered = guesses(task, names)
    assert 4 in [i for i, _ in offered] and all(i < len(names) and name == names[i] for i, name in offered)


def test_a_sample_the_hub_holds_is_answered_before_its_output_is_checked(tmp_path: Path, clock: Clock) -> None:
    """The model-output check ran before the hub looked the sample up: a resent stored sample (stored while the
    rules let it in) was refused instead of getting the reply the hub holds."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    before = open_hub(url, tmp_path, clock)  # does not know its classes: a 5-class output is taken
    sample = with_probabilities(5)
    try:
        assert submit(before, clock, A, [sample])[0] == [sample.sample_id]
    finally:
        before.close()
    clock.now += 601
    now = open_hub(url, tmp_path, clock, {"num_classes": 10})  # the operator sets num_classes since
    try:
        assert now.classes_known
        now.sweep_once()  # EXPIRED, stored
        result = now.submit(make_request(A, [sample], m=1, now=clock.now), "grpc")
        assert result.duplicates == [sample.sample_id]
        assert [r.status for r in result.immediate] == [hub_pb2.REPLY_STATUS_EXPIRED]
    finally:
        now.close()


def detection(boxes: int) -> hub_pb2.Sample:
    sample = make_sample(A, kind=hub_pb2.HDNN_KIND_YOLO)
    sample.output.ClearField("class_probabilities")  # what the agent's detectors send: boxes, no probabilities
    sample.output.boxes.extend(hub_pb2.Box(x_min=1, y_min=1, x_max=5, y_max=5, class_id=1, score=0.5)
                               for _ in range(boxes))
    return sample


def test_detection_samples_carry_boxes_and_at_most_max_model_boxes(sqlite_hubs: MakeHub, clock: Clock) -> None:
    hub = sqlite_hubs()
    assert len(submit(hub, clock, A, [detection(1000)])[0]) == 1
    [(reason, detail)] = refused(submit(hub, clock, A, [detection(1001)])[1])
    assert reason == "REJECT_REASON_INVALID_REQUEST" and "limits.max_model_boxes (1000)" in detail


def test_only_the_canonical_spelling_of_a_uuid_is_accepted(sqlite_hubs: MakeHub, clock: Clock) -> None:
    hub = sqlite_hubs()
    base = str(uuid.uuid4())
    spellings = [base.upper(), f"{{{base}}}", base.replace("-", ""), "urn:uuid:" + base]
    for spelling in spellings:
        [(reason, detail)] = refused(submit(hub, clock, A, [make_sample(A, sample_id=spelling)])[1])
        assert reason == "REJECT_REASON_INVALID_REQUEST" and "canonical form" in detail and base in detail
    assert len(submit(hub, clock, A, [make_sample(A, sample_id=base)])[0]) == 1
    assert hub.kb.count(Sample) == 1
    refusals = refused(submit(hub, clock, A, [make_sample(A)], batch_id=str(uuid.uuid4()).upper())[1])
    assert len(refusals) == 1 and refusals[0][1].startswith("batch_id")


@pytest.mark.parametrize("value", ["", "not-a-uuid", "0" * 32, "urn:uuid:" + "0" * 36])
def test_check_uuid_refuses_what_is_no_canonical_uuid(value: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_uuid(value, "sample_id")


# --- the agent's side of a cap refusal -------------------------------------------------------------------------


def test_the_agent_takes_a_cap_refusal_as_final_and_drops_the_sample_from_its_outbox(tmp_path: Path) -> None:
    """The caps answer with LABOUR_BUDGET / TOO_LARGE, reasons today's agents know: the model's answer stands and
    the sample leaves the outbox (no endless resend)."""
    from hgen.edge_agent.agent import Agent, Waiting
    from hgen.edge_agent.config import parse_agent_config
    from hgen.edge_agent.outbox import OutboxRow
    from hgen.edge_agent.results import Result, ResultStatus
    from hgen.edge_agent.sinks import CallbackSink
    from hgen.edge_agent.testing import make_keys, null_bundle

    keys = make_keys(tmp_path / "keys")
    config = parse_agent_config({"device_id": A, "bundle": {"path": str(null_bundle(tmp_path / "bundle", keys)),
                                                            "public_key": str(keys.public_pem)},
                                 "source": {"kind": "images", "uri": str(tmp_path)},
                                 "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    agent = Agent(config)
    try:
        pending = Result(0, "s-1", 0.0, ResultStatus.PENDING, "people", label=3, model_label=3, confidence=0.4)
        meta = {"result": pending.to_dict(), "kind": "cnn", "temperature": 1.0, "lambda": 0.1, "shape": [10],
                "size": [28, 28]}
        agent.outbox.put([OutboxRow("s-1", "b-1", 0.0, 0, 1, 600.0, hub_pb2.Sample(sample_id="s-1")
                                    .SerializeToString(), np.zeros(10, np.float32).tobytes(), json.dumps(meta))])
        emitted: list[Result] = []
        agent.sinks.append(CallbackSink(emitted.append))
        logits = np.full(10, -1.0, np.float32)
        logits[3] = 1.0
        agent._waiting["s-1"] = Waiting(pending, logits, "cnn", agent.model.params, patience_at=float("inf"))
        agent._on_reply(hub_pb2.SampleReply(sample_id="s-1", status=hub_pb2.REPLY_STATUS_REJECTED,
                                            reject_reason=hub_pb2.REJECT_REASON_LABOUR_BUDGET,
                                            detail="at limits.max_open_samples_per_device (1000)"))
        [result] = emitted
        assert result.status is ResultStatus.HUB_REFUSED and result.final and result.label == 3
        assert "REJECT_REASON_LABOUR_BUDGET" in result.detail and "max_open_samples_per_device" in result.detail
        assert agent.outbox.get("s-1") is None and "s-1" not in agent._waiting
    finally:
        agent.stop()


def test_num_classes_written_as_its_default_0_is_not_a_known_count() -> None:
    """`num_classes: 0` (the documented default: take the bundles' count) falls back to DEFAULT_CLASSES without a
    readable bundle, like leaving it out: a 5-class model's samples were refused for good."""
    assert not classes_known(parse_hub_config({"num_classes": 0}))
    assert not classes_known(parse_hub_config({}))
    assert classes_known(parse_hub_config({"num_classes": 10}))
