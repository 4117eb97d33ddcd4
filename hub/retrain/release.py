"""Operator releases of a model: roll back to an earlier version, or publish a bundle compiled offline.

Both make a NEW version, the next patch (or the offline bundle's own version when it is higher): devices only
ever swap forward to a version they have not run, and the next retrain starts from what is deployed now. A
rolled-back version's model files are the restored version's, byte for byte, under a manifest re-signed with the
new version number by the hub's key (the one devices trust). Each release is a run in the retrain history (trigger
`rollback` or `publish`) taken under the model's retrain lease, so it never races a retrain on any hub. Its cutoff
is the newest human label, so the next retrain waits for `threshold` new labels instead of re-learning at once
what was just rolled back.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hgen.hub.errors import ReleaseError, RetrainError
from hgen.hub.retrain.pipeline import RetrainPipeline
from hgen.hub.retrain.publish import (
    BuiltBundle,
    announce,
    build_bundles,
    bundle_name_for,
    bundle_record,
    next_version,
    prune_archives,
    targets_of,
)
from hgen.hub.retrain.records import RunRecord, VersionRecord
from hgen.hub.retrain.store_prune import prune_store
from hgen.hub.retrain.worker import LEASE_TTL_S, LeaseKeeper, holder_id
from hgen.runtime.bundle import BundleError, Manifest, SignatureError
from hgen.runtime.bundle.manifest import SIGNATURE_NAME, ModelId, sign_manifest
from hgen.runtime.errors import HGenError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionEntry:
    """One row of a model's version history, for `hgen-hub versions`."""

    version: str
    created_at: float
    deployed: bool
    how: str  # "configured", "retrain", "re-search", "rollback to 1.0.0", "publish"
    run_id: int | None


def resign(source: Path, manifest: Manifest, dest: Path, version: str, signing_key: Path, model_name: str) -> Path:
    """Copy the bundle files `manifest` lists from `source` to `dest` and sign the manifest anew as `model_name`
    `version` (the name devices watch); returns the packed archive devices fetch."""
    from hgen.compiler.bundle.archive import pack_bundle  # no TensorFlow: tar + gzip

    if dest.exists():
        shutil.rmtree(dest)  # left by a release that failed part way: nothing points at it
    dest.mkdir(parents=True)
    for entry in manifest.files():
        shutil.copy2(source / entry.file, dest / entry.file)
    renamed = manifest.model_copy(update={"model": ModelId(name=model_name, version=version),
                                          "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    sign_manifest(dest, renamed, signing_key)
    return pack_bundle(dest)


@dataclass(frozen=True)
class Plan:
    """What a release publishes, resolved against the deployed version `against` (checked again under the lease)."""

    against: str
    sources: Mapping[str, tuple[Path, Manifest]]  # target -> a verified bundle folder and its manifest
    keras_path: Path
    tau: float
    temperature: float
    restored: VersionRecord | None = None
    wanted: str | None = None


class Releases:
    """Rollback, publish and the version history of the models a hub retrains."""

    def __init__(self, pipeline: RetrainPipeline) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store

    # --- history ----------------------------------------------------------------------------------------------

    def history(self, name: str) -> list[VersionEntry]:
        """Newest first; the deployed version is the newest."""
        current = self.pipeline.current(name)
        runs = {run.id: run for run in self.store.runs(name, limit=10_000)}
        entries = []
        for record in self.store.versions(name):
            run = runs.get(record.retrain_id) if record.retrain_id is not None else None
            entries.append(VersionEntry(record.version, record.created_at, record.version == current.version,
                                        _how(run), record.retrain_id))
        return entries

    def previous(self, name: str) -> VersionRecord:
        """The version the deployed one replaced: what "roll back" restores without `--to`."""
        current = self.pipeline.current(name)
        replaced = next((run.from_version for run in self.store.runs(name, limit=10_000)
                         if run.status == "published" and run.to_version == current.version), None)
        if replaced is None:
            raise ReleaseError(f"{name} {current.version} is its first version: there is nothing to roll back to")
        return self._version(name, replaced)

    def _version(self, name: str, version: str) -> VersionRecord:
        found = next((v for v in self.store.versions(name) if v.version == version), None)
        if found is None:
            known = ", ".join(v.version for v in self.store.versions(name))
            raise ReleaseError(f"{name} has no version {version!r}; it has: {known}")
        return found

    # --- rollback ---------------------------------------------------------------------------------------------

    def rollback(self, name: str, to: str | None = None) -> RunRecord:
        """Publish `to` (default: the version the deployed one replaced) again, as the next version."""
        return self._release(name, "rollback", lambda: self._rollback_plan(name, to))

    def _rollback_plan(self, name: str, to: str | None) -> Plan:
        current = self.pipeline.current(name)
        restored = self.previous(name) if to is None else self._version(name, to)
        if restored.version == current.version:
            raise ReleaseError(f"{name} {restored.version} is the deployed version already")
        return Plan(current.version, self._stored_bundles(name, restored), Path(restored.keras_path), restored.tau,
                    restored.temperature, restored=restored)

    def _stored_bundles(self, name: str, version: VersionRecord) -> dict[str, tuple[Path, Manifest]]:
        """The version's verified bundles by target: its own, and its siblings `bundle-<target>` (a retrain's)."""
        base = Path(version.bundle_dir)
        model_name = self._model_name(name)
        found = {}
        for folder in (base, *sorted(base.parent.glob("bundle-*"))):
            try:
                manifest = self.pipeline.verified(folder)
            except (BundleError, SignatureError, OSError):
                continue  # not a bundle of this version (the configured bundle's folder holds other things)
            if manifest.model.version == version.version and manifest.model.name == model_name:
                found.setdefault(manifest.target, (folder, manifest))
        if not found:
            raise ReleaseError(f"{name} {version.version}: its bundle {base} is gone or no longer verifies (each "
                               "publish removes old versions' folders from retrain.store_dir but the first, the newest "
                               "retrain.keep_bundle_archives, the one the deployed version replaced and those devices "
                               "run: see `hgen-hub versions`)")
        return found

    # --- publish ----------------------------------------------------------------------------------------------

    def publish(self, name: str, bundles: Sequence[Path], keras_model: Path) -> RunRecord:
        """Publish bundles compiled offline (one per target the model's devices run) with their Keras file, the
        starting point of the next retrain (copied into the hub's store), as the model's next version."""
        return self._release(name, "publish", lambda: self._publish_plan(name, bundles, Path(keras_model)))

    def _publish_plan(self, name: str, bundles: Sequence[Path], keras_model: Path) -> Plan:
        current = self.pipeline.current(name)
        deployed = self.pipeline.verified(Path(current.bundle_dir))
        wanted = targets_of(self.pipeline.model_config(name).devices, self.pipeline.base_target(name))
        sources: dict[str, tuple[Path, Manifest]] = {}
        for folder in map(Path, bundles):
            manifest = self._offline_manifest(folder)
            _check_compatible(manifest, deployed, folder)
            if manifest.target in sources:
                raise ReleaseError(f"two bundles for target {manifest.target}: {sources[manifest.target][0]} "
                                   f"and {folder}")
            if manifest.target not in wanted:
                raise ReleaseError(f"bundle {folder} is for {manifest.target}, which none of {name}'s devices runs "
                                   f"(they run: {', '.join(wanted)}; retrain.models[].devices)")
            sources[manifest.target] = (folder, manifest)
        missing = sorted(set(wanted) - set(sources))
        if missing:
            raise ReleaseError(f"{name}'s devices also run {', '.join(missing)}: give a bundle for each target "
                               f"(--bundle once per target)")
        versions = {m.model.version for _, m in sources.values()}
        if len(versions) > 1:
            raise ReleaseError(f"the bundles carry different versions ({', '.join(sorted(versions))}): one "
                               f"compile per release")
        _check_keras(keras_model, deployed)
        self._check_one_model(name, keras_model, *sources[self._record_target(name, sources)])
        first = sources[self._record_target(name, sources)][1]
        return Plan(current.version, sources, keras_model, first.tau, first.temperature, wanted=first.model.version)

    def _check_one_model(self, name: str, keras_model: Path, folder: Path, manifest: Manifest) -> None:
        """The Keras file the next retrain starts from must be the model the published bundle runs, on the inputs a
        retrain feeds (`deployed.py`): the user's own file (same shapes) passed `_check_keras`, and the next retrain
        distilled a model at chance."""
        from hgen.hub.retrain.kinds import get_retrain_kind

        model_config = self.pipeline.model_config(name)
        try:
            data = self.pipeline.dataset(model_config, get_retrain_kind(model_config.kind))
        except (HGenError, OSError) as exc:  # a release needs no data set; the next retrain checks the pair
            log.warning("%s: --keras %s is not compared with the bundle (its data set does not load here: %s)",
                        name, keras_model, exc)
            return
        problem = self.pipeline.one_model.problem(keras_model, folder, manifest, data.test.x)
        if problem is not None:
            raise ReleaseError(f"--keras {keras_model} with --bundle {folder}: {problem}")

    def _offline_manifest(self, folder: Path) -> Manifest:
        if not folder.exists():
            raise ReleaseError(f"--bundle {folder}: no such folder")
        if not folder.is_dir():
            raise ReleaseError(f"--bundle {folder}: not a folder; give the compile's bundle folder (OUT/bundle), "
                               f"not its .hgb archive")
        try:
            return self.pipeline.verified(folder)
        except (BundleError, SignatureError, OSError) as exc:
            raise ReleaseError(f"bundle {folder}: {exc} (devices trust retrain.signing_key's public key: compile "
                               f"with --signing-key set to it)") from None

    # --- the release itself -----------------------------------------------------------------------------------

    def _release(self, name: str, trigger: str, resolve: Callable[[], Plan]) -> RunRecord:
        """Resolve (refusals store nothing), take the lease, check the deployed version has not moved meanwhile,
        build, then record the version, its bundles and the run's outcome in one transaction, then announce."""
        self.pipeline.model_config(name)  # UnknownModelError before anything is stored
        plan = resolve()
        holder = holder_id(trigger)
        run = self.store.claim_run(name, trigger, plan.against, holder, LEASE_TTL_S)
        keeper = LeaseKeeper(self.store, holder, LEASE_TTL_S, lambda: (name,)).start()
        try:
            self.store.start_run(run.id)
            moved = self.pipeline.current(name).version
            if moved != plan.against:  # another hub published between the resolve and the lease
                raise ReleaseError(f"{name}'s deployed version moved from {plan.against} to {moved} meanwhile; "
                                   f"see `hgen-hub versions` and run again")
            version, built = self._record(name, trigger, plan, run.id)
        except BaseException as exc:  # Ctrl-C in a long lowering too: the run must not stay "running"
            with contextlib.suppress(Exception):
                self.store.finish_run(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, OSError):
                raise RetrainError(f"{trigger} of {name} failed: {exc}") from None  # not refused: exit 1
            raise
        else:  # recorded; still under the lease, so no retrain or release of the model reads a folder meanwhile
            prune_store(self.store, self.pipeline.config.store_dir, name, self.pipeline.config.keep_bundle_archives,
                        [b.bundle_name for b in built])
        finally:
            keeper.stop()
            try:
                self.store.release_lease(name, holder)
            except Exception:  # it expires within one TTL anyway; the outcome stands
                log.exception("releasing the retrain lease of %s failed", name)
        log.info("%s of %s: %s -> %s%s", trigger, name, plan.against, version,
                 f" (the files of {plan.restored.version})" if plan.restored else "")
        announce(self.pipeline.publisher, built, version)
        prune_archives(self.store.kb, self.pipeline.config.keep_bundle_archives)
        return self.store.run(run.id)  # type: ignore[return-value]

    def _record(self, name: str, trigger: str, plan: Plan, run_id: int) -> tuple[str, list[BuiltBundle]]:
        """Build the bundles and the kept Keras file, then record the version with its bundles and the run."""
        taken = [v.version for v in self.store.versions(name)]
        version = next_version(plan.against, taken, plan.wanted)
        out_dir = (self.pipeline.store_dir() / name / version).resolve()
        built = self._build(name, plan, version, out_dir)
        keras_path = plan.keras_path
        if trigger == "publish":  # the compile's folder may be rebuilt; the next retrain starts from this copy
            keras_path = out_dir / "model.keras"
            shutil.copy2(plan.keras_path, keras_path)
        record_target = self._record_target(name, {b.target: b for b in built})
        record_dir = next(b.directory for b in built if b.target == record_target)
        fetch_uri = self.pipeline.publisher.fetch_uri()
        metrics = {"release": trigger, "restored": plan.restored.version if plan.restored else None,
                   "targets": sorted(b.target for b in built)}
        self.store.add_version(
            VersionRecord(name, version, str(keras_path), str(record_dir), plan.tau, plan.temperature,
                          self.store.clock(), run_id),
            bundles=[bundle_record(b.archive, b.bundle_name, version, b.signature, fetch_uri) for b in built],
            published=(run_id, metrics))
        return version, built

    def _build(self, name: str, plan: Plan, version: str, out_dir: Path) -> list[BuiltBundle]:
        """One re-signed bundle per target the model's devices run (the stored one; a target the restored version
        has no bundle for, e.g. the configured version's other targets, is lowered from its Keras file)."""
        base, model_name = self.pipeline.base_target(name), self._model_name(name)
        key = self.pipeline.signing_key()
        wanted = targets_of(self.pipeline.model_config(name).devices, base)
        built = []
        for target, device_ids in wanted.items():
            if target not in plan.sources:
                continue
            folder, manifest = plan.sources[target]
            dest = out_dir / f"bundle-{target}"
            archive = resign(folder, manifest, dest, version, key, model_name)
            built.append(BuiltBundle(target, bundle_name_for(model_name, base, target), dest, archive,
                                     (dest / SIGNATURE_NAME).read_bytes(), device_ids))
        lowered = {t: d for t, d in wanted.items() if t not in plan.sources}
        if lowered and plan.restored is not None:
            built += self._lower(name, plan.restored, lowered, version, out_dir,
                                 next(iter(plan.sources.values()))[1])
        return built

    def _lower(self, name: str, restored: VersionRecord, devices: Mapping[str, tuple[str, ...]], version: str,
               out_dir: Path, manifest: Manifest) -> list[BuiltBundle]:
        from hgen.compiler.lowering.tflite import calibration_images
        from hgen.compiler.models import load_model_file
        from hgen.hub.retrain.kinds import get_retrain_kind

        model_config = self.pipeline.model_config(name)
        data = self.pipeline.dataset(model_config, get_retrain_kind(model_config.kind))
        log.info("%s %s has no stored bundle for %s: lowering its Keras file", name, restored.version,
                 ", ".join(devices))
        by_device = {device: target for target, ids in devices.items() for device in ids}
        return build_bundles(load_model_file(restored.keras_path), manifest, version=version,
                             temperature=restored.temperature, devices=by_device, out_dir=out_dir,
                             signing_key=self.pipeline.signing_key(),
                             engines=self.pipeline.config.engines, representative=calibration_images(data.train),
                             base_target=self.pipeline.base_target(name))

    def _record_target(self, name: str, by_target: Mapping[str, object]) -> str:
        """The target whose bundle the version record names (and whose tau it keeps): the base one if built."""
        base = self.pipeline.base_target(name)
        return base if base in by_target else sorted(by_target)[0]

    def _model_name(self, name: str) -> str:
        return self.pipeline.configured_manifest(name).model.name


def _how(run: RunRecord | None) -> str:
    if run is None:
        return "configured"
    if run.trigger == "rollback":
        return f"rollback to {run.metrics.get('restored')}"
    if run.trigger == "publish":
        return "publish"
    return "re-search" if run.research else "retrain"


def _check_compatible(offline: Manifest, deployed: Manifest, folder: Path) -> None:
    """An offline bundle must be the same model to devices and to the retrain: kind, labels, input and output."""
    for what, new, old in (("kind", offline.kind, deployed.kind), ("labels", offline.labels, deployed.labels),
                           ("input shape", offline.input.shape, deployed.input.shape),
                           ("output shape", offline.output_shape, deployed.output_shape)):
        if new != old:
            raise ReleaseError(f"bundle {folder}: its {what} {new!r} differs from the deployed model's {old!r}; "
                               f"a new model is a new retrain.models entry, with its own devices")


def _check_keras(path: Path, deployed: Manifest) -> None:
    """The Keras file the next retrain starts from must be the published model's: same input and output."""
    from hgen.compiler.errors import CompilerError
    from hgen.compiler.models import load_model_file

    if not path.is_file():
        raise ReleaseError(f"--keras {path}: no such file")
    try:
        model = load_model_file(path)
    except (CompilerError, OSError, ValueError) as exc:
        raise ReleaseError(f"--keras {path}: cannot load it ({exc})") from None
    shapes = (tuple(model.input_shape[1:]), tuple(model.output_shape[1:]))
    wanted = (tuple(deployed.input.shape[1:]), tuple(deployed.output_shape[1:]))
    if shapes != wanted:
        raise ReleaseError(f"--keras {path}: input/output {shapes} are not the bundle's {wanted}")
