"""Audit faults: the hub's refusals are typed errors of its own root (still the built-in type a caller may catch)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from hgen.hub.config import parse_hub_config
from hgen.hub.errors import HubConfigError, HubError, RetrainError, RetrainTriggerError, RetrainWaitTimeoutError
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore, RetrainWorker
from hgen.hub.web.app import create_web_app
from hgen.protos.mqtt import topic
from hgen.runtime.errors import HGenError


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[RetrainWorker]:
    """A worker that is never started: requests and waits are answered on the caller's thread."""
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    store = RetrainStore(kb)
    yield RetrainWorker(RetrainPipeline(parse_hub_config({}).retrain, store, HubPublisher(kb)), store)
    kb.close()


def test_a_web_app_without_a_secret_is_a_config_error() -> None:
    hub = SimpleNamespace(config=parse_hub_config({}))  # the web section off: no secret, which the app refuses
    with pytest.raises(HubConfigError, match="web.secret_key"):
        create_web_app(hub)


def test_an_unknown_retrain_trigger_is_a_retrain_error_and_queues_nothing(worker: RetrainWorker) -> None:
    with pytest.raises(RetrainTriggerError, match="trigger must be one of") as raised:
        worker.request("lenet5", "cron")
    assert isinstance(raised.value, RetrainError) and isinstance(raised.value, ValueError)
    assert worker.store.runs("lenet5", limit=5) == []


def test_waiting_past_the_timeout_is_a_hub_timeout(worker: RetrainWorker) -> None:
    with pytest.raises(RetrainWaitTimeoutError, match="retrain 12345 not finished") as raised:
        worker.wait(12345, timeout=0.0)
    assert isinstance(raised.value, HubError) and isinstance(raised.value, TimeoutError)
    assert not isinstance(raised.value, RetrainError)  # the retrain itself may still be running
    with pytest.raises(RetrainWaitTimeoutError, match="no retrain of 'lenet5'"):
        worker.wait_for_run("lenet5", after_id=0, timeout=0.0)


def test_an_unknown_topic_kind_is_an_hgen_error_naming_the_valid_kinds() -> None:
    assert topic("hgen/v1", "dev-1", "samples") == "hgen/v1/dev-1/samples"
    with pytest.raises(HGenError, match="valid: samples, replies, updates, status") as raised:
        topic("hgen/v1", "dev-1", "sample")
    assert isinstance(raised.value, ValueError)
