"""Operator releases: publishing a bundle compiled offline, rolling back to an earlier version, the history.

Real bundles (LeNet-5 on digits, TFLite), a real SQLite knowledge base and the hub's own signing key; every
published bundle is verified with the public key the devices trust.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from hgen.hub.config import parse_hub_config
from hgen.hub.errors import ReleaseError, RetrainBusyError, RetrainError
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore
from hgen.hub.retrain.publish import next_version
from hgen.hub.retrain.release import Releases
from hgen.hub.testing.models import DeployedModel, deploy_lenet, recompiled, retrain_section
from hgen.runtime import signing
from hgen.runtime.bundle import verify_archive
from hgen.runtime.bundle.manifest import Manifest


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    return deploy_lenet(tmp_path_factory.mktemp("deployed"), epochs=1, limit=300)


def releases_for(tmp_path: Path, deployed: DeployedModel, devices: dict[str, str]) -> Releases:
    config = parse_hub_config({"retrain": retrain_section(deployed, tmp_path / "store", devices=devices,
                                                          threshold=10)})
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    store = RetrainStore(kb)
    return Releases(RetrainPipeline(config.retrain, store, HubPublisher(kb)))


@pytest.fixture
def releases(tmp_path: Path, deployed: DeployedModel) -> Any:
    made = releases_for(tmp_path, deployed, {"cam-1": "x86_64"})
    yield made
    made.store.kb.close()


def published(releases: Releases, deployed: DeployedModel, name: str, version: str, tmp: Path) -> Manifest:
    """The archive the knowledge base serves for (name, version), verified as a device verifies it."""
    record = releases.store.kb.bundle(name, version)
    assert record is not None, f"{name} {version} was not published"
    tmp.mkdir(parents=True)
    return verify_archive(Path(record.path), signing.load_public_key(deployed.public_key), None, tmp)


def model_digest(manifest: Manifest, root: Path) -> str:
    return hashlib.sha256((root / manifest.engines[0].file).read_bytes()).hexdigest()


def test_next_version_is_the_wanted_one_only_when_higher_and_unused() -> None:
    assert next_version("1.0.3", ["1.0.0", "1.0.3"]) == "1.0.4"
    assert next_version("1.0.3", ["1.0.4"]) == "1.0.5"  # never reuses a number a device may have seen
    assert next_version("1.0.3", [], wanted="2.0.0") == "2.0.0"
    assert next_version("1.0.3", [], wanted="1.0.1") == "1.0.4"  # devices only swap forward


def test_publish_then_rollback_restores_the_deployed_files_byte_for_byte(releases: Releases, deployed: DeployedModel,
                                                                         tmp_path: Path) -> None:
    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
    run = releases.publish(deployed.name, [bundle], keras_path)
    assert (run.status, run.trigger, run.from_version, run.to_version) == ("published", "publish", "1.0.0", "1.1.0")
    new = published(releases, deployed, deployed.name, "1.1.0", tmp_path / "v110")
    kept = Path(releases.pipeline.current(deployed.name).keras_path)  # a copy: the compile's folder may change
    assert new.tau == 0.7 and kept != keras_path and kept.read_bytes() == keras_path.read_bytes()

    back = releases.rollback(deployed.name)
    assert (back.trigger, back.from_version, back.to_version) == ("rollback", "1.1.0", "1.1.1")
    restored = published(releases, deployed, deployed.name, "1.1.1", tmp_path / "v111")
    original = Manifest.model_validate_json((deployed.bundle_dir / "manifest.json").read_bytes())
    assert model_digest(restored, tmp_path / "v111") == model_digest(original, deployed.bundle_dir)
    assert model_digest(restored, tmp_path / "v111") != model_digest(new, tmp_path / "v110")
    assert (restored.model.version, restored.tau, restored.temperature) == ("1.1.1", original.tau,
                                                                             original.temperature)
    current = releases.pipeline.current(deployed.name)
    assert current.version == "1.1.1"  # the next retrain starts from the first version's Keras file, as kept
    assert Path(current.keras_path).read_bytes() == deployed.keras_path.read_bytes()

    history = [(e.version, e.how, e.deployed) for e in releases.history(deployed.name)]
    assert history == [("1.1.1", "rollback to 1.0.0", True), ("1.1.0", "publish", False),
                       ("1.0.0", "configured", False)]
    undo = releases.rollback(deployed.name)  # rolling back a rollback restores what it replaced
    assert undo.to_version == "1.1.2" and undo.metrics["restored"] == "1.1.0"


def test_rollback_to_a_named_version_and_its_refusals(releases: Releases, deployed: DeployedModel,
                                                      tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="first version: there is nothing to roll back to"):
        releases.rollback(deployed.name)
    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.0.7")
    releases.publish(deployed.name, [bundle], keras_path)
    with pytest.raises(ReleaseError, match=r"no version '0.9.0'; it has: 1.0.7, 1.0.0"):
        releases.rollback(deployed.name, to="0.9.0")
    with pytest.raises(ReleaseError, match="deployed version already"):
        releases.rollback(deployed.name, to="1.0.7")
    assert releases.rollback(deployed.name, to="1.0.0").to_version == "1.0.8"


def test_a_retrain_in_progress_blocks_a_release(releases: Releases, deployed: DeployedModel, tmp_path: Path) -> None:
    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
    releases.store.claim_run(deployed.name, "threshold", "1.0.0", "worker:other-hub", 60.0)
    with pytest.raises(RetrainBusyError, match="worker:other-hub"):
        releases.publish(deployed.name, [bundle], keras_path)
    assert releases.store.kb.bundle(deployed.name) is None
    assert [v.version for v in releases.store.versions(deployed.name)] == ["1.0.0"]


def test_offline_bundles_the_devices_could_not_run_are_refused(releases: Releases, deployed: DeployedModel,
                                                               tmp_path: Path) -> None:
    from hgen.compiler.bundle import generate_keypair

    stranger = generate_keypair(tmp_path / "other-keys").private_path
    foreign, keras_path = recompiled(deployed, tmp_path / "foreign", version="1.1.0", key=stranger)
    with pytest.raises(ReleaseError, match="signing_key"):
        releases.publish(deployed.name, [foreign], keras_path)
    renamed = tuple(f"class {i}" for i in range(len(deployed.data.labels)))
    other, keras_other = recompiled(deployed, tmp_path / "labels", version="1.1.0", labels=renamed)
    with pytest.raises(ReleaseError, match="its labels"):
        releases.publish(deployed.name, [other], keras_other)
    good, keras_good = recompiled(deployed, tmp_path / "good", version="1.1.0")
    with pytest.raises(ReleaseError, match="--keras .*no such file"):
        releases.publish(deployed.name, [good], tmp_path / "missing.keras")
    assert releases.store.kb.bundle(deployed.name) is None  # nothing reached a device
    assert releases.store.runs(deployed.name) == []


def test_every_target_the_devices_run_gets_a_bundle(tmp_path: Path, deployed: DeployedModel) -> None:
    releases = releases_for(tmp_path, deployed, {"cam-x": "x86_64", "pi-1": "rpi4"})
    try:
        x86, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
        with pytest.raises(ReleaseError, match="also run rpi4"):
            releases.publish(deployed.name, [x86], keras_path)
        pi, _ = recompiled(deployed, tmp_path / "offline", version="1.1.0", target="rpi4")
        releases.publish(deployed.name, [x86, pi], keras_path)
        assert published(releases, deployed, "lenet5-rpi4", "1.1.0", tmp_path / "pi").target == "rpi4"
        # the configured version has no rpi4 bundle: rolling back lowers its Keras file for the Pi
        back = releases.rollback(deployed.name)
        assert sorted(back.metrics["targets"]) == ["rpi4", "x86_64"]
        pi_back = published(releases, deployed, "lenet5-rpi4", "1.1.1", tmp_path / "pi-back")
        assert (pi_back.target, pi_back.model.version) == ("rpi4", "1.1.1")
        assert published(releases, deployed, "lenet5", "1.1.1", tmp_path / "x86-back").target == "x86_64"
    finally:
        releases.store.kb.close()


def test_the_cli_lists_rolls_back_and_publishes(tmp_path: Path, deployed: DeployedModel,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from hgen.hub.cli import main

    config = tmp_path / "hub.yaml"
    config.write_text(json.dumps({
        "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
        "retrain": retrain_section(deployed, tmp_path / "store", devices={"cam-1": "x86_64"}, threshold=10)}))
    assert main(["rollback", "--config", str(config), "--model", deployed.name]) == 2  # refused: the input
    assert "nothing to roll back to" in capsys.readouterr().err
    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.2.0")
    assert main(["publish", "--config", str(config), "--model", deployed.name, "--bundle", str(bundle),
                 "--keras", str(keras_path)]) == 0
    assert "lenet5 1.0.0 -> 1.2.0 published for x86_64" in capsys.readouterr().out
    assert main(["rollback", "--config", str(config), "--model", deployed.name, "--to", "1.0.0"]) == 0
    assert "1.2.0 -> 1.2.1 published (the files of 1.0.0)" in capsys.readouterr().out
    assert main(["versions", "--config", str(config), "--model", deployed.name]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["*", "1.2.0", "1.0.0"] and lines[0].split()[1] == "1.2.1"
    assert "rollback to 1.0.0" in lines[0] and "publish" in lines[1] and "configured" in lines[2]


@pytest.mark.parametrize("retraining", [True, False], ids=["retraining", "not-retraining"])
def test_the_operator_view_rolls_back(tmp_path: Path, deployed: DeployedModel, retraining: bool) -> None:
    """Also on a hub that never retrains (`retrain.enabled: false`): its models may still be published by hand."""
    from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub

    retrain = retrain_section(deployed, tmp_path / "store", devices={"cam-1": "x86_64"}, threshold=100_000,
                              enabled=retraining)
    with web_hub(tmp_path, retrain=retrain) as app:
        assert (app.retrain is not None) == retraining
        add_people(app)
        operator = logged_in(app, "op")
        page = operator.get("/operator").get_data(as_text=True)
        assert re.search(r'<button type="submit" name="model" value="lenet5" id="rollback-lenet5"', page)

        def roll_back(to: str = "") -> str:
            form = {"model": deployed.name, "to": to,
                    "csrf_token": csrf_token_of(operator.get("/operator").get_data(True))}
            return operator.post("/operator/rollback", data=form, follow_redirects=True).get_data(as_text=True)

        assert "nothing to roll back to" in roll_back()
        bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
        Releases(app.pipeline).publish(deployed.name, [bundle], keras_path)
        shown = roll_back()
        assert "lenet5 rolled back: 1.1.0 -&gt; 1.1.1 (the files of 1.0.0)" in shown
        assert "the files of 1.0.0</td>" in shown  # the run in the retrain table
        assert app.retrain_store.current_version(deployed.name).version == "1.1.1"
        assert "lenet5 rolled back: 1.1.1 -&gt; 1.1.2 (the files of 1.1.0)" in roll_back(to="1.1.0")
        assert "no version &#39;9.9.9&#39;" in roll_back(to="9.9.9")


def test_an_offline_bundle_takes_the_models_name_and_a_copy_of_its_keras_file(releases: Releases,
                                                                               deployed: DeployedModel,
                                                                               tmp_path: Path) -> None:
    """Compiled under another name, it is still the bundle the model's devices watch (renamed as it is re-signed)."""
    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0", name="lenet5_v2")
    releases.publish(deployed.name, [bundle], keras_path)
    assert published(releases, deployed, deployed.name, "1.1.0", tmp_path / "v").model.name == deployed.name
    assert releases.store.kb.bundle("lenet5_v2") is None
    keras_path.unlink()  # the operator cleans the build folder: rollback and retrain do not need it
    assert releases.rollback(deployed.name).to_version == "1.1.1"
    assert releases.rollback(deployed.name).metrics["restored"] == "1.1.0"


def test_refused_offline_bundles_store_nothing(tmp_path: Path, deployed: DeployedModel) -> None:
    releases = releases_for(tmp_path, deployed, {"cam-x": "x86_64"})
    try:
        x86, keras_path = recompiled(deployed, tmp_path / "a", version="1.1.0")
        pi, _ = recompiled(deployed, tmp_path / "b", version="1.1.0", target="rpi4")
        with pytest.raises(ReleaseError, match="is for rpi4, which none of lenet5's devices runs"):
            releases.publish(deployed.name, [x86, pi], keras_path)
        from hgen.compiler.bundle import pack_bundle

        with pytest.raises(ReleaseError, match="not a folder; give the compile's bundle folder"):
            releases.publish(deployed.name, [pack_bundle(x86)], keras_path)
        with pytest.raises(ReleaseError, match="no such folder"):
            releases.publish(deployed.name, [tmp_path / "typo"], keras_path)
        assert releases.store.runs(deployed.name) == [] and releases.store.kb.bundle(deployed.name) is None
    finally:
        releases.store.kb.close()


def test_a_release_that_fails_part_way_records_no_version_and_says_why(releases: Releases, deployed: DeployedModel,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from hgen.hub.retrain import release as release_module

    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")

    def disk_full(*_args: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(release_module, "resign", disk_full)
    with pytest.raises(RetrainError, match="publish of lenet5 failed: .*No space left on device"):
        releases.publish(deployed.name, [bundle], keras_path)
    [run] = releases.store.runs(deployed.name)
    assert run.status == "failed" and "No space left" in run.error
    assert releases.store.kb.bundle(deployed.name) is None
    assert [v.version for v in releases.store.versions(deployed.name)] == ["1.0.0"]
    assert releases.store.live_lease(deployed.name) is None  # freed: a retrain may run


def test_a_version_published_meanwhile_stops_the_rollback(releases: Releases, deployed: DeployedModel,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another hub published between the operator's click and the lease: "roll back" no longer means the same."""
    from hgen.hub.retrain.records import VersionRecord

    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
    releases.publish(deployed.name, [bundle], keras_path)
    plan = releases._rollback_plan

    def racing(name: str, to: str | None) -> Any:
        resolved = plan(name, to)  # then, before the lease, another hub publishes
        releases.store.add_version(VersionRecord(name, "1.1.1", str(keras_path), str(bundle), 0.7, 1.3,
                                                 releases.store.clock() + 1))
        return resolved

    monkeypatch.setattr(releases, "_rollback_plan", racing)
    with pytest.raises(ReleaseError, match="moved from 1.1.0 to 1.1.1 meanwhile"):
        releases.rollback(deployed.name, to="1.0.0")
    assert releases.store.runs(deployed.name)[0].status == "failed"


def test_the_relay_announces_what_another_process_recorded_once_and_never_goes_back(
        releases: Releases, deployed: DeployedModel, tmp_path: Path) -> None:
    from hgen.hub.kb.store import BundleRecord
    from hgen.hub.retrain.publish import HubPublisher
    from hgen.hub.retrain.relay import BundleRelay

    class Recording:
        fetch_uri = "grpc://hub.example:50051"
        said: list[tuple[str, str, str, tuple[str, ...]]] = []

        def announce(self, notice: Any, device_ids: Any) -> None:
            self.said.append((notice.bundle_name, notice.version, notice.fetch_uri, tuple(device_ids)))

    serving = HubPublisher(releases.store.kb, [Recording()])  # type: ignore[list-item]
    relay = BundleRelay(releases.pipeline, serving)
    assert relay.check() == []
    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
    releases.publish(deployed.name, [bundle], keras_path)  # the CLI: its publisher serves nothing
    assert relay.check() == ["lenet5 1.1.0"] and relay.check() == []
    assert Recording.said == [("lenet5", "1.1.0", "grpc://hub.example:50051", ("cam-1",))]
    newest = releases.store.kb.bundle(deployed.name)
    skewed = BundleRecord("lenet5", "1.0.9", "0" * 64, 1, b"", "x", newest.published_at + 60)  # a clock ahead
    releases.store.kb.add_bundle(skewed)
    assert releases.store.kb.bundle(deployed.name).version == "1.1.0"  # the newest is the highest version
    assert relay.check() == [] and len(Recording.said) == 1  # a notice never goes back to an older bundle


def test_ctrl_c_during_a_release_leaves_a_failed_run_and_a_free_lease(releases: Releases, deployed: DeployedModel,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hgen.hub.retrain import release as release_module

    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")

    def interrupted(*_args: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(release_module, "resign", interrupted)
    with pytest.raises(KeyboardInterrupt):
        releases.publish(deployed.name, [bundle], keras_path)
    [run] = releases.store.runs(deployed.name)
    assert run.status == "failed" and releases.store.live_lease(deployed.name) is None
    assert releases.store.kb.bundle(deployed.name) is None


def test_the_first_version_is_kept_as_it_was_when_the_compile_folder_is_rebuilt(
        releases: Releases, deployed: DeployedModel, tmp_path: Path) -> None:
    """The first version was recorded at the compile's own paths; a new compile into the same folder (1.0.0 again)
    changed what a rollback to 1.0.0 re-signed."""
    first = releases.pipeline.current(deployed.name)
    assert Path(first.keras_path).is_relative_to(tmp_path / "store")
    assert Path(first.bundle_dir).is_relative_to(tmp_path / "store")
    original = Manifest.model_validate_json((deployed.bundle_dir / "manifest.json").read_bytes())
    kept = Path(first.bundle_dir)
    assert model_digest(Manifest.model_validate_json((kept / "manifest.json").read_bytes()), kept) == \
        model_digest(original, deployed.bundle_dir)
    assert Path(first.keras_path).read_bytes() == deployed.keras_path.read_bytes()


def test_an_old_versions_deleted_folder_does_not_fail_later_retrains(releases: Releases, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Every retrain reads each version's familiarity ranges; one folder deleted to free the disk failed them all."""
    gone = str(tmp_path / "store" / "lenet5" / "0.9.0")
    with caplog.at_level("WARNING"):
        assert releases.pipeline.judge.familiarity_of(gone) is None  # the step the field set calls
    assert f"the bundle {gone} cannot be read" in caplog.text


def test_each_publish_empties_old_archive_copies_keeping_the_first_and_the_newest(tmp_path: Path,
                                                                                   deployed: DeployedModel) -> None:
    """Every version's archive copy stayed in the knowledge base for good (one per target at every retrain); now each
    publish empties those older than the newest `keep_bundle_archives`, the first kept, and the publishing hub still
    serves an emptied one from its file."""
    from sqlalchemy import select

    from hgen.hub.bundle_files import open_archive
    from hgen.hub.kb.models import Bundle

    config = parse_hub_config({"retrain": retrain_section(deployed, tmp_path / "store", devices={"cam-1": "x86_64"},
                                                          threshold=10, keep_bundle_archives=1)})
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        releases = Releases(RetrainPipeline(config.retrain, RetrainStore(kb), HubPublisher(kb)))
        bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
        releases.publish(deployed.name, [bundle], keras_path)
        releases.rollback(deployed.name)  # 1.1.1
        releases.rollback(deployed.name)  # 1.1.2
        with kb.session() as s:
            copies = dict(s.execute(select(Bundle.version, Bundle.archive.is_not(None))).tuples().all())
        assert copies == {"1.1.0": True, "1.1.1": False, "1.1.2": True}
        record = kb.bundle(deployed.name, "1.1.1")
        with open_archive(kb, record) as served:
            assert hashlib.sha256(served.read()).hexdigest() == record.sha256
    finally:
        kb.close()
