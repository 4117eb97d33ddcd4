"""The agent's reading of declines in a reply: results carry the cant_tell / skipped counts, and a sample that
people declined without labelling it is `declined` with the model's label, not `hub_refused` (null engine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent.agent import Agent, Waiting
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sinks import CallbackSink
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.protos import hub_pb2

MODEL_LABEL = 3


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys)
    config = parse_agent_config({"device_id": "cam-1", "bundle": {"path": str(bundle),
                                                                  "public_key": str(keys.public_pem)},
                                 "source": {"kind": "images", "uri": str(tmp_path)},
                                 "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    agent = Agent(config)
    yield agent
    agent.stop()


def waiting(agent: Agent) -> Waiting:
    logits = np.full(10, -1.0, np.float32)
    logits[MODEL_LABEL] = 1.0
    pending = Result(0, "s-1", 0.0, ResultStatus.PENDING, "people", label=MODEL_LABEL, label_name="three",
                     model_label=MODEL_LABEL, confidence=0.4)
    return Waiting(pending, logits, "cnn", agent.model.params, patience_at=float("inf"))


def reply(status: int, *labels: int, cant_tell: int = 0, skipped: int = 0) -> hub_pb2.SampleReply:
    answers = [hub_pb2.Answer(annotator_id=f"p{i}", class_id=label) for i, label in enumerate(labels)]
    return hub_pb2.SampleReply(sample_id="s-1", status=status, answers=answers, cant_tell=cant_tell,
                               skipped=skipped)


def test_everyone_declined_keeps_the_model_label_and_says_so(agent: Agent) -> None:
    emitted: list[Result] = []
    agent.sinks.append(CallbackSink(emitted.append))
    agent._waiting["s-1"] = waiting(agent)
    agent._on_reply(reply(hub_pb2.REPLY_STATUS_EXPIRED, cant_tell=2, skipped=1))  # counted as it is settled
    [result] = emitted
    assert result.status is ResultStatus.DECLINED and result.final
    assert result.label == result.model_label == MODEL_LABEL and result.answers == ()
    assert (result.cant_tell, result.skipped, result.declined) == (2, 1, 3)
    assert "2 could not tell, 1 skipped" in result.detail and "model's answer stands" in result.detail
    snap = agent.telemetry.snapshot()
    assert snap["declined"] == 1 and snap["hub_refused"] == 0


def test_fused_result_carries_the_declines_beside_the_answers(agent: Agent) -> None:
    result = agent._fused(waiting(agent), reply(hub_pb2.REPLY_STATUS_PARTIAL, 7, 7, cant_tell=1))
    assert result.status is ResultStatus.FUSED and result.answers == (7, 7)
    assert (result.cant_tell, result.skipped) == (1, 0)


def test_expired_without_declines_is_still_hub_refused(agent: Agent) -> None:
    result = agent._fused(waiting(agent), reply(hub_pb2.REPLY_STATUS_EXPIRED))
    assert result.status is ResultStatus.HUB_REFUSED and result.declined == 0
    assert result.label == MODEL_LABEL


def test_late_reply_after_patience_reports_the_declines_too(agent: Agent) -> None:
    result = agent._late(waiting(agent), reply(hub_pb2.REPLY_STATUS_PARTIAL, 7, skipped=2))
    assert result.status is ResultStatus.LATE and result.label == MODEL_LABEL
    assert (result.answers, result.cant_tell, result.skipped) == ((7,), 0, 2)


def test_counts_survive_the_results_log_and_old_lines_still_load() -> None:
    result = Result(4, "s-9", 1.0, ResultStatus.DECLINED, "people", label=1, cant_tell=2, skipped=1)
    assert Result.from_dict(result.to_dict()) == result
    old_line = {k: v for k, v in result.to_dict().items() if k not in ("cant_tell", "skipped")}
    assert Result.from_dict(old_line).declined == 0
