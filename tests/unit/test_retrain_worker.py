"""The retrain worker's rules: one retrain per model, unknown models refused, a failed retrain keeps the model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.hub.config import parse_hub_config
from hgen.hub.errors import RetrainBusyError, UnknownModelError
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore, RetrainWorker
from hgen.hub.testing.models import DeployedModel, deploy_lenet, retrain_section


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    return deploy_lenet(tmp_path_factory.mktemp("deployed"), epochs=1, limit=300)


@pytest.fixture
def worker(tmp_path: Path, deployed: DeployedModel) -> Iterator[RetrainWorker]:
    config = parse_hub_config({"retrain": retrain_section(deployed, tmp_path / "models", devices={},
                                                          threshold=10)})
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    store = RetrainStore(kb)
    running = RetrainWorker(RetrainPipeline(config.retrain, store, HubPublisher(kb)), store).start()
    yield running
    running.stop()
    kb.close()


def test_failed_retrain_keeps_the_current_model_and_says_why(worker: RetrainWorker, deployed: DeployedModel,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    run = worker.request(deployed.name, "operator")
    assert run.status == "queued" and run.from_version == "1.0.0"
    done = worker.wait(run.id, timeout=60)
    assert done.status == "failed"
    assert "no human-labelled samples" in done.error
    assert worker.store.current_version(deployed.name).version == "1.0.0"
    assert worker.pipeline.store.kb.bundle(deployed.name) is None  # nothing was announced
    [said] = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert "no human-labelled samples" in said and "Traceback" not in said  # an ordinary outcome: one line


def test_a_fault_in_the_code_is_logged_with_its_traceback(worker: RetrainWorker, deployed: DeployedModel,
                                                          caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise ZeroDivisionError("a bug, not an outcome")

    monkeypatch.setattr(worker.pipeline, "_execute", broken)
    done = worker.wait(worker.request(deployed.name, "operator").id, timeout=60)
    assert done.status == "failed" and done.error == "ZeroDivisionError: a bug, not an outcome"
    [said] = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert "Traceback" in said and "in broken" in said


def test_one_retrain_per_model_and_unknown_models_refused(worker: RetrainWorker, deployed: DeployedModel) -> None:
    idle = RetrainWorker(worker.pipeline, worker.store)  # not started: a queued run stays queued
    with pytest.raises(UnknownModelError, match="lenet5"):
        idle.request("resnet", "cli")
    first = idle.request(deployed.name, "cli")
    with pytest.raises(RetrainBusyError, match="one at a time"):
        idle.request(deployed.name, "threshold")
    idle.start()
    try:
        assert idle.wait(first.id, timeout=60).done
        assert not idle.busy(deployed.name)
        again = idle.request(deployed.name, "cli")  # allowed once the first is done
        assert idle.wait(again.id, timeout=60).id == again.id
    finally:
        idle.stop()


def test_a_stopped_hubs_unfinished_retrain_is_marked_failed(tmp_path: Path, deployed: DeployedModel) -> None:
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    store = RetrainStore(kb)
    orphan = store.create_run(deployed.name, "api", "1.0.0")
    store.start_run(orphan.id)
    assert store.abandon_active("hub stopped") == 1
    record = store.run(orphan.id)
    assert record.status == "failed" and record.error == "hub stopped"
    kb.close()


def test_cli_retrain_reports_the_outcome_and_add_user(tmp_path: Path, deployed: DeployedModel,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from hgen.hub.cli import main

    config = {"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
              "retrain": retrain_section(deployed, tmp_path / "models", devices={}, threshold=10)}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["retrain", "--config", str(path), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["retrain", "--config", str(path), "--model", deployed.name]) == 1
    assert "failed 1.0.0 -> 1.0.0" in capsys.readouterr().out  # no labels yet: refused, model unchanged
    assert main(["add-user", "--config", str(path), "--name", "eve", "--invite"]) == 0
    assert "open http://127.0.0.1:8080/join#token=" in capsys.readouterr().out  # after "#": never sent or logged
    # (without web.public_url the configured host and port; it printed a "<hub web UI>" placeholder)
