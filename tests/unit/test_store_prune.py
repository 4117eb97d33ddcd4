"""Pruning `retrain.store_dir`: every retrain, rollback and publish wrote `<model>/<version>/` and every re-search
`<model>/research-<run id>/`, and nothing removed them, so a hub left running for months filled its disk.

A real SQLite knowledge base and real folders; the releases at the end run on real signed LeNet bundles.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.hub.config import parse_hub_config
from hgen.hub.errors import ReleaseError
from hgen.hub.kb.models import Batch, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore
from hgen.hub.retrain.records import VersionRecord
from hgen.hub.retrain.release import Releases
from hgen.hub.retrain.store_prune import prune_store
from hgen.hub.testing.models import DeployedModel, deploy_lenet, recompiled, retrain_section
from hgen.protos import hub_pb2

NAME = "lenet5"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RetrainStore]:
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        yield RetrainStore(kb)
    finally:
        kb.close()


def version_folder(root: Path, version: str, *, keras_in: str | None = None) -> VersionRecord:
    """What a retrain or release writes for `version` (its Keras file in `keras_in`'s folder for a rollback)."""
    folder = root / NAME / version
    (folder / "bundle-x86_64").mkdir(parents=True)
    (folder / "bundle-x86_64" / "manifest.json").write_text("{}")
    (folder / "bundle-x86_64.hgb").write_bytes(b"\0" * 1000)
    (folder / "model.keras").write_bytes(b"\0" * 2000)
    keras = root / NAME / (keras_in or version) / "model.keras"
    return VersionRecord(NAME, version, str(keras), str(folder / "bundle-x86_64"), 0.8, 1.0, 0.0)


def publish_run(store: RetrainStore, from_version: str, to_version: str) -> None:
    run = store.create_run(NAME, "rollback", from_version)
    store.finish_run(run.id, "published", to_version=to_version)


def newest_sample(kb: KnowledgeBase, device: str, bundle: str, version: str) -> None:
    sid = str(uuid.uuid4())
    with kb.session() as s:
        s.add(Batch(id=sid, device_id=device, m=1, deadline=1.0, labour_budget=0.0, labour_reserved=0.0,
                    created_at=0.0))
        s.flush()
        s.add(Sample(id=sid, batch_id=sid, device_id=device, bundle_name=bundle, bundle_version=version,
                     hdnn_kind=1, image_format=1, height=28, width=28, channels=1, image_bytes=b"\0",
                     model_output=b"", confidence=0.4, difficulty=0.5, labour_reserved=1.0, m=1,
                     aggregator="majority", transport="grpc", status="answered", deadline=1.0, received_at=0.0))


def test_old_version_folders_go_but_what_may_still_be_needed_stays(store: RetrainStore, tmp_path: Path) -> None:
    root = tmp_path / "store"
    for version in ("1.0.0", "1.0.1", "1.0.3", "1.0.4", "1.0.5", "1.0.6", "1.0.7"):
        store.add_version(version_folder(root, version))
    store.add_version(version_folder(root, "1.0.2", keras_in="1.0.1"))  # a rollback to 1.0.1: its Keras file
    store.add_version(version_folder(root, "1.0.8", keras_in="1.0.2"))  # a rollback to 1.0.2, 1.0.1's in turn
    publish_run(store, "1.0.7", "1.0.8")  # 1.0.8 replaced 1.0.7: what a rollback without --to restores
    store.kb.register_devices(["cam-1", "cam-2", "cam-3"])
    store.kb.record_status(hub_pb2.DeviceStatus(device_id="cam-1", bundle_name=NAME, bundle_version="1.0.3"))
    newest_sample(store.kb, "cam-2", f"{NAME}-rpi4", "1.0.5")  # no status: its newest sample's bundle
    newest_sample(store.kb, "cam-3", "other-model", "1.0.6")  # another model's 1.0.6

    pruned = prune_store(store, root, NAME, keep_last=1)

    assert pruned.versions == ("1.0.4", "1.0.6") and not pruned.failures
    assert pruned.bytes_freed == 2 * 3002
    assert sorted(p.name for p in (root / NAME).iterdir()) == ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.5",
                                                                "1.0.7", "1.0.8"]
    assert len(store.versions(NAME)) == 9  # the history stays
    assert prune_store(store, root, NAME, keep_last=1).versions == ()  # nothing more to remove


def test_only_real_folders_of_recorded_versions_are_removed_and_no_symlink_is_followed(
        store: RetrainStore, tmp_path: Path) -> None:
    root, outside = tmp_path / "store", tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    for version in ("1.0.0", "1.0.1", "1.0.2", "1.0.3"):
        store.add_version(version_folder(root, version))
    (root / NAME / "1.0.1" / "link").symlink_to(outside)  # inside a folder that goes: removed as a link only
    foreign = version_folder(root, "1.0.4")  # recorded with its bundle elsewhere: not a folder this record wrote
    store.add_version(VersionRecord(NAME, "1.0.4", foreign.keras_path, str(outside), 0.8, 1.0, 0.0))
    os.symlink(outside, root / NAME / "1.0.5")  # a recorded version whose folder is a symlink out of the store
    store.add_version(VersionRecord(NAME, "1.0.5", str(root / NAME / "1.0.5" / "model.keras"),
                                    str(root / NAME / "1.0.5" / "bundle"), 0.8, 1.0, 0.0))
    (root / NAME / "0.9.0").mkdir()  # never recorded (another hub's, a half-written one): not ours to remove
    (root / NAME / "notes.txt").write_text("operator's")
    store.add_version(version_folder(root, "1.0.6"))
    store.add_version(version_folder(root, "1.0.7"))

    pruned = prune_store(store, root, NAME, keep_last=1)

    assert pruned.versions == ("1.0.1", "1.0.2", "1.0.3", "1.0.6") and not pruned.failures
    assert (outside / "precious").read_text() == "keep me"
    assert sorted(p.name for p in (root / NAME).iterdir()) == ["0.9.0", "1.0.0", "1.0.4", "1.0.5", "1.0.7",
                                                                "notes.txt"]
    assert (root / NAME / "1.0.5").is_symlink()


def test_a_folder_that_cannot_be_removed_is_counted_and_never_fails_the_caller(
        store: RetrainStore, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that cannot be deleted (a read-only mount, an immutable file): made here by failing the deletion of
    one file, since CI runs as root, where permissions do not stop it, and may lack the capability chattr needs.
    Everything else is real: the folders, rmtree, its error callback, the knowledge base."""
    import shutil

    root = tmp_path / "store"
    for version in ("1.0.0", "1.0.1", "1.0.2", "1.0.3"):
        store.add_version(version_folder(root, version))
    stuck = root / NAME / "1.0.1" / "model.keras"
    real_rmtree = shutil.rmtree

    def rmtree_failing_on_stuck(path: str, *args: object, **kwargs: object) -> None:
        callback = kwargs.get("onexc") or kwargs.get("onerror")
        if Path(path) == stuck.parent:
            assert callable(callback)
            callback(os.unlink, str(stuck), PermissionError(1, "Operation not permitted", str(stuck)))
            return
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("hgen.hub.retrain.store_prune.shutil.rmtree", rmtree_failing_on_stuck)
    with caplog.at_level("ERROR"):
        pruned = prune_store(store, root, NAME, keep_last=1)
    monkeypatch.undo()
    assert pruned.versions == ("1.0.2",) and len(pruned.failures) == 1 and "1.0.1" in pruned.failures[0]
    assert f"could not remove {root / NAME / '1.0.1'}" in caplog.text
    assert stuck.is_file()
    assert prune_store(store, root, NAME, keep_last=1).versions == ("1.0.1",)  # the next publish tries again


def test_ended_research_folders_go_but_the_newest_and_running_ones_stay(store: RetrainStore, tmp_path: Path) -> None:
    root = tmp_path / "store"
    store.add_version(version_folder(root, "1.0.0"))
    runs = [store.create_run(NAME, "operator", "1.0.0", research=True) for _ in range(4)]
    for run, status in zip(runs, ("rejected", "failed", "published", "running"), strict=True):
        store.start_run(run.id)
        if status != "running":
            store.finish_run(run.id, status)
        (root / NAME / f"research-{run.id}").mkdir()
        (root / NAME / f"research-{run.id}" / "search.jsonl").write_text("{}\n")
    (root / NAME / "research-999").mkdir()  # no such run in this knowledge base: left alone
    (root / NAME / "research-check").mkdir()

    pruned = prune_store(store, root, NAME, keep_last=2)

    assert pruned.research == (runs[0].id,)
    left = {p.name for p in (root / NAME).iterdir()}
    assert left == {"1.0.0", "research-999", "research-check", *(f"research-{r.id}" for r in runs[1:])}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    return deploy_lenet(tmp_path_factory.mktemp("deployed"), epochs=1, limit=300)


def test_releases_prune_the_store_and_every_kept_version_still_rolls_back(tmp_path: Path,
                                                                        deployed: DeployedModel) -> None:
    """With `keep_bundle_archives` 1: a version no device runs, not the newest nor the first nor the one the deployed
    version replaced, and whose files no kept version uses, is removed; rolling back to it is refused, saying why;
    a kept one rolls back as before."""
    config = parse_hub_config({"retrain": retrain_section(deployed, tmp_path / "store", devices={"cam-1": "x86_64"},
                                                          threshold=10, keep_bundle_archives=1)})
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        releases = Releases(RetrainPipeline(config.retrain, RetrainStore(kb), HubPublisher(kb)))
        model_dir = tmp_path / "store" / deployed.name
        bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
        releases.publish(deployed.name, [bundle], keras_path)
        releases.rollback(deployed.name)  # 1.1.1: the files of 1.0.0
        releases.rollback(deployed.name)  # 1.1.2: the files of 1.1.0, its Keras file in 1.1.0's folder
        assert sorted(p.name for p in model_dir.iterdir()) == ["1.0.0", "1.1.0", "1.1.1", "1.1.2"]
        kb.register_devices(["cam-1"])
        kb.record_status(hub_pb2.DeviceStatus(device_id="cam-1", bundle_name=deployed.name, bundle_version="1.1.1"))
        releases.rollback(deployed.name, to="1.0.0")  # 1.1.3; cam-1 still runs 1.1.1
        assert sorted(p.name for p in model_dir.iterdir()) == ["1.0.0", "1.1.0", "1.1.1", "1.1.2", "1.1.3"]
        kb.record_status(hub_pb2.DeviceStatus(device_id="cam-1", bundle_name=deployed.name, bundle_version="1.1.3"))
        releases.rollback(deployed.name)  # 1.1.4, the files of 1.1.2 (whose Keras file is 1.1.0's)

        assert sorted(p.name for p in model_dir.iterdir()) == ["1.0.0", "1.1.0", "1.1.3", "1.1.4"]
        with pytest.raises(ReleaseError, match="1.1.1: its bundle .* is gone .* removes old versions' folders"):
            releases.rollback(deployed.name, to="1.1.1")
        assert releases.rollback(deployed.name).to_version == "1.1.5"  # to 1.1.3, the one 1.1.4 replaced
        current = releases.pipeline.current(deployed.name)
        assert Path(current.keras_path).read_bytes() == deployed.keras_path.read_bytes()
    finally:
        kb.close()


def test_a_retrain_prunes_old_version_folders_and_ended_research_folders(tmp_path: Path, deployed: DeployedModel,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The retrain's own publish prunes too (the search's result is fixed: a 2-core search is not the point)."""
    import yaml

    from hgen.compiler.models import load_model_file
    from hgen.hub.app import HubApp
    from hgen.hub.crowd import SimulatedCrowd
    from hgen.hub.retrain import pipeline
    from hgen.hub.retrain.research import Searched
    from hgen.hub.testing.crowd import CrowdDriver
    from hgen.hub.testing.device import GrpcDevice, ReplyLog, enroll
    from hgen.hub.testing.models import device_samples
    from hgen.hub.testing.samples import make_request
    from hgen.hub.testing.services import free_port
    from hgen.hub.transports.grpc_server import GrpcTransport

    plan = {"layers": {"conv1": "identity"}, "ratios": {}}
    fixed = Searched(load_model_file(deployed.keras_path), deployed.temperature, 1.0, 100, 0.6, plan,
                     {"plan": plan["layers"], "feasible": True, "search_seconds": 1.0}, accuracy_demand=0.5)
    monkeypatch.setattr(pipeline, "research", lambda *args: fixed)
    settings = tmp_path / "compile.yaml"
    settings.write_text(yaml.safe_dump({"dataset": "digits:lowres", "model": str(deployed.keras_path)}))
    section = retrain_section(deployed, tmp_path / "store", devices={"cam-1": "x86_64"}, threshold=10_000,
                              original_samples=500, epochs=1, min_holdout=5, tolerance=0.1, holdout_share=0.4,
                              noise_se=0.0, keep_bundle_archives=1)
    section["models"][0]["compile_config"] = str(settings)
    app = HubApp(parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                   "grpc": {"port": free_port()}, "retrain": section})).start()
    model_dir = tmp_path / "store" / deployed.name
    try:
        releases = Releases(app.pipeline)
        bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
        releases.publish(deployed.name, [bundle], keras_path)
        releases.rollback(deployed.name)  # 1.1.1: the files of 1.0.0
        ended = [app.retrain_store.create_run(deployed.name, "operator", "1.1.1", research=True) for _ in range(2)]
        for run in ended:
            app.retrain_store.finish_run(run.id, "failed", error="interrupted")
            (model_dir / f"research-{run.id}").mkdir()
        samples, oracle = device_samples(deployed, 60, "cam-1")
        crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(3, 0.9, 10, seed=3), oracle).start()
        try:
            device = GrpcDevice(f"127.0.0.1:{app.transport(GrpcTransport).port}", ReplyLog(),
                                token=enroll(app, "cam-1")["cam-1"].bearer)
            device.submit_until_replied(make_request("cam-1", samples, m=3))
            device.close()
            run = app.retrain.request(deployed.name, "operator", research=True)
            done = app.retrain.wait(run.id, timeout=600)
        finally:
            crowd.stop()
    finally:
        app.stop()
    assert (done.status, done.to_version) == ("published", "1.1.2"), done.error
    # 1.1.0 went: not the first, the newest, the one 1.1.2 replaced (1.1.1), nor holding a kept version's files
    assert sorted(p.name for p in model_dir.iterdir()) == ["1.0.0", "1.1.1", "1.1.2", f"research-{ended[1].id}"]
