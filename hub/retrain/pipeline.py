"""One retrain, start to end: collect, filter, enhance, re-calibrate, accept, re-lower, sign, store, publish.

`RetrainPipeline.execute(run)` never raises for a retrain that goes wrong: the run is stored as `failed` (an
error) or `rejected` (the acceptance check said no) with the reason, and the deployed model stays current. The
original dataset and the autoencoder are built once per model and kept for later retrains. What differs per H-DNN
kind (original data, human labels as training targets, enhancement training, the acceptance metric) is asked of
the model's `RetrainKind` (`hgen.hub.retrain.kinds`); the steps and their order are the same for every kind.
What a new model is judged on, and at which labour and demands, is the `Judge`'s (`hgen.hub.retrain.judge`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from hgen.hub.config import ModelConfig, RetrainConfig
from hgen.hub.errors import RetrainError, UnknownModelError, VersionTakenError
from hgen.hub.retrain.data import split_holdout
from hgen.hub.retrain.deployed import OneModel
from hgen.hub.retrain.field import learned_familiarity, refitted_tau
from hgen.hub.retrain.filter import AutoencoderFilter
from hgen.hub.retrain.judge import Judge, Prepared, run_metrics
from hgen.hub.retrain.kinds import HumanLabels, OriginalData, RetrainKind, get_retrain_kind, retrain_kind_names
from hgen.hub.retrain.publish import (
    Publisher,
    announce,
    build_bundles,
    bundle_name_for,
    bundle_record,
    next_version,
    prune_archives,
    targets_of,
)
from hgen.hub.retrain.records import RetrainStore, RunRecord, VersionRecord
from hgen.hub.retrain.research import Searched, load_compile_config, research
from hgen.hub.retrain.store_prune import prune_store
from hgen.runtime.bundle.manifest import Manifest
from hgen.runtime.errors import HGenError

log = logging.getLogger(__name__)


class RetrainPipeline:
    """Runs retrains for the configured models; thread-safe per model (the worker runs one at a time)."""

    def __init__(self, config: RetrainConfig, store: RetrainStore, publisher: Publisher) -> None:
        self.config = config
        self.store = store
        self.publisher = publisher
        self._datasets: dict[str, OriginalData] = {}
        self._filters: dict[str, AutoencoderFilter] = {}
        self._configured: dict[str, tuple[int, Manifest]] = {}  # model -> (its manifest file's mtime, manifest)
        self.one_model = OneModel(self.public_key)  # the Keras file a retrain starts from is the bundle's model
        self.judge = Judge(config, store, self.verified, self.store_dir)
        self._lock = threading.Lock()

    def model_config(self, name: str) -> ModelConfig:
        model = self.config.model(name)
        if model is None:
            valid = ", ".join(m.name for m in self.config.models) or "(none configured)"
            raise UnknownModelError(f"unknown model {name!r}; retrain.models has: {valid}")
        return model

    # --- the deployed version ---------------------------------------------------------------------------------

    def current(self, name: str) -> VersionRecord:
        """The deployed version; the first time, the configured Keras file and bundle are registered as it."""
        found = self.store.current_version(name)
        if found is not None:
            return found
        model = self.model_config(name)
        manifest = self.verified(Path(model.bundle))
        keras_path, bundle_dir = self._keep_first(model, manifest.model.version)
        record = VersionRecord(name, manifest.model.version, str(keras_path), str(bundle_dir), manifest.tau,
                               manifest.temperature, self.store.clock())
        try:
            self.store.add_version(record)
        except VersionTakenError:  # another hub registered it a moment ago
            return self.store.current_version(name) or record
        return record

    def _keep_first(self, model: ModelConfig, version: str) -> tuple[Path, Path]:
        """A copy of the compile's Keras file and bundle in the store, where the first version is recorded: the
        compile's folder may be rebuilt (a new compile into the same --out is 1.0.0 again), and a rollback to the
        first version then re-signed other files under its name. Without a store, the configured files."""
        if self.config.store_dir is None:
            return Path(model.keras_model), Path(model.bundle)
        dest = self.store_dir() / model.name / version
        dest.mkdir(parents=True, exist_ok=True)
        keras_path, bundle_dir = dest / Path(model.keras_model).name, dest / "bundle"
        shutil.copy2(model.keras_model, keras_path)
        shutil.copytree(model.bundle, bundle_dir, dirs_exist_ok=True)
        return keras_path, bundle_dir

    def configured_manifest(self, name: str) -> Manifest:
        """The verified manifest of the bundle `retrain.models` names: the model as first deployed. Verified once
        (it hashes every file) until the manifest file changes: a release asks for it several times."""
        from hgen.runtime.bundle.manifest import MANIFEST_NAME

        bundle = Path(self.model_config(name).bundle)
        try:
            stamp = (bundle / MANIFEST_NAME).stat().st_mtime_ns
        except OSError:
            stamp = -1  # verifying says what is missing
        cached = self._configured.get(name)
        if cached is None or cached[0] != stamp or stamp == -1:
            cached = (stamp, self.verified(bundle))
            self._configured[name] = cached
        return cached[1]

    def base_target(self, name: str) -> str:
        """The target whose bundles carry the bare model name (others: `<name>-<target>`): the configured
        bundle's, fixed for the model's life, so no version renames a target's bundles."""
        return self.configured_manifest(name).target

    def routes_of(self, name: str) -> dict[str, tuple[str, ...]]:
        """Bundle name -> the devices that run it, for each target the model's devices run. Read from the
        configured bundle's manifest without its signature (names only; devices verify every bundle they fetch),
        so a hub that relays but holds no signing key routes too."""
        from hgen.runtime.bundle.manifest import MANIFEST_NAME, parse_manifest

        try:
            base = parse_manifest((Path(self.model_config(name).bundle) / MANIFEST_NAME).read_bytes())
        except OSError as exc:
            raise RetrainError(f"{name}: cannot read its configured bundle's manifest ({exc})") from None
        return {bundle_name_for(base.model.name, base.target, target): device_ids
                for target, device_ids in targets_of(self.model_config(name).devices, base.target).items()}

    def verified(self, bundle_dir: Path) -> Manifest:
        """A bundle folder's manifest, checked against the hub's key: one verify rule for retrains and releases."""
        from hgen.runtime.bundle.loader import verify_directory

        return verify_directory(bundle_dir, self.public_key())

    def public_key(self) -> Any:
        """The key devices verify the hub's bundles with (from `retrain.signing_key`)."""
        from hgen.runtime import signing

        return signing.load_private_key(self.signing_key()).public_key()

    def signing_key(self) -> Path:
        """`retrain.signing_key`; RetrainError when unset (only signing needs it)."""
        if self.config.signing_key is None:
            raise RetrainError("retrain.signing_key is not set")
        return self.config.signing_key

    # --- one run ----------------------------------------------------------------------------------------------

    def execute(self, run: RunRecord) -> RunRecord:
        """Run and record `run`; returns the stored outcome (published, rejected or failed)."""
        self.store.start_run(run.id)
        start = time.perf_counter()
        try:
            outcome = self._execute(run, start)
        except Exception as exc:  # any failure: keep the deployed model, say why
            # hgen's own errors say what is wrong in one line; a traceback is for a fault in the code
            trace = "" if isinstance(exc, HGenError) else f"\n{traceback.format_exc()}"
            log.warning("retrain %d of %s failed: %s%s", run.id, run.model_name, exc, trace)
            self.store.finish_run(run.id, "failed", error=f"{type(exc).__name__}: {exc}",
                                  metrics={"retrain_seconds": time.perf_counter() - start})
            return self.store.run(run.id)  # type: ignore[return-value]
        except BaseException as exc:  # Ctrl-C on `hgen-hub retrain`: the run must not stay "running"
            with contextlib.suppress(Exception):
                self.store.finish_run(run.id, "failed", error=f"{type(exc).__name__}: interrupted")
            raise
        return outcome

    def _execute(self, run: RunRecord, start: float) -> RunRecord:
        model_config = self.model_config(run.model_name)
        prepared = self._prepare(model_config, run)
        train, holdout = split_holdout(prepared.human, self.config.holdout_share, self.config.seed)
        kept, filtered_out = self._filter(model_config, prepared.data, train)
        if len(kept) == 0:
            raise RetrainError(f"no human-labelled training samples left ({len(train)} before the filter, "
                               f"{filtered_out} filtered out)")
        if run.research:
            enhanced = self._research(model_config, prepared, kept, run)
        else:
            enhanced = prepared.kind.enhance(prepared.current.keras_path, prepared.data, kept, self.config)
        field = self.judge.field(model_config, prepared, holdout)
        if field is not None and not run.research:
            enhanced = self.judge.refit(model_config, prepared, enhanced, field)
        verdict = self.judge.accept(model_config, prepared, enhanced, holdout, field)
        metrics = run_metrics(prepared, enhanced, verdict, len(holdout))
        common = {"samples_used": len(kept), "filtered_out": filtered_out}
        if not verdict.accepted:
            metrics["retrain_seconds"] = time.perf_counter() - start
            self.store.finish_run(run.id, "rejected", error=f"acceptance check refused: {verdict.reason}",
                                  metrics=metrics, **common)
            return self.store.run(run.id)  # type: ignore[return-value]
        if isinstance(enhanced, Searched):  # the new plan and tau travel in the manifest
            prepared = replace(prepared, manifest=prepared.manifest.model_copy(
                update={"tau": enhanced.tau, "plan": enhanced.plan}))
        elif refitted_tau(enhanced) is not None:  # a tau re-chosen on the field travels in the manifest too
            prepared = replace(prepared, manifest=prepared.manifest.model_copy(update={"tau": refitted_tau(enhanced)}))
        prepared = replace(prepared, manifest=learned_familiarity(prepared.manifest, kept.x))
        metrics["retrain_seconds"] = time.perf_counter() - start
        version = self._publish(model_config, prepared, enhanced.model, enhanced.temperature, run, metrics)
        self.store.finish_run(run.id, "published", to_version=version, metrics=metrics, **common)
        return self.store.run(run.id)  # type: ignore[return-value]

    def check_research(self, name: str) -> None:
        """RetrainError unless `name` can be re-searched (an H-CNN with its compile settings)."""
        self._compile_settings(self.model_config(name), self.store_dir() / name / "research-check")

    def _compile_settings(self, model_config: ModelConfig, out: Path) -> Any:
        """The model's hgen-compile settings, writing into `out`; RetrainError for a kind the compile search does not
        take (its retrain kind says) or none configured."""
        if not get_retrain_kind(model_config.kind).supports_research:
            searchable = [name for name in retrain_kind_names() if get_retrain_kind(name).supports_research]
            raise RetrainError(f"re-search covers {', '.join(searchable)} models; {model_config.name!r} is "
                               f"{model_config.kind}")
        return load_compile_config(model_config.compile_config, model_config.name, out)

    def _research(self, model_config: ModelConfig, prepared: Prepared, kept: HumanLabels, run: RunRecord) -> Searched:
        config = self._compile_settings(model_config, self.store_dir() / model_config.name / f"research-{run.id}")
        return research(config, prepared.data, kept.x, kept.y)

    def _prepare(self, model_config: ModelConfig, run: RunRecord) -> Prepared:
        current = self.current(model_config.name)
        manifest = self.verified(Path(current.bundle_dir))
        kind = get_retrain_kind(model_config.kind)
        data = self.dataset(model_config, kind)
        check_same_classes(model_config, data, manifest)
        human = kind.human(self.store, model_config.name, run.cutoff, data, self.config.max_labels)
        if len(human) == 0:
            raise RetrainError(f"no human-labelled samples for model {model_config.name!r} yet")
        self.one_model.require(model_config.name, Path(model_config.keras_model), current, manifest, data.test.x)
        return Prepared(current, manifest, data, human, kind)

    def dataset(self, model_config: ModelConfig, kind: RetrainKind) -> OriginalData:
        """The model's original data set, loaded once and kept for later retrains and releases."""
        with self._lock:
            if model_config.name not in self._datasets:
                self._datasets[model_config.name] = kind.load_data(model_config.dataset, seed=self.config.seed,
                                                                   limit=model_config.dataset_limit)
            return self._datasets[model_config.name]

    def _filter(self, model_config: ModelConfig, data: OriginalData, train: HumanLabels) -> tuple[HumanLabels, int]:
        if not self.config.filter_enabled or len(train) == 0:
            return train, 0
        with self._lock:
            if model_config.name not in self._filters:
                self._filters[model_config.name] = AutoencoderFilter.fit(
                    data.train.take(self.config.original_samples).x, quantile=self.config.filter_quantile,
                    epochs=self.config.filter_epochs, seed=self.config.seed)
            autoencoder = self._filters[model_config.name]
        result = autoencoder(train.x, field_factor=self.config.field.filter_factor)
        return train.subset(result.keep), result.filtered_out

    def _publish(self, model_config: ModelConfig, prepared: Prepared, model: Any, temperature: float,
                 run: RunRecord, metrics: dict[str, Any]) -> str:
        """Lower, sign and record the new version, marking `run` published in the same transaction (a hub dying
        before the announcement left a live version under a run later marked failed), then announce it."""
        from hgen.compiler.lowering.tflite import calibration_images  # the compiler only when a retrain publishes

        version = next_version(prepared.current.version, [v.version for v in self.store.versions(model_config.name)])
        out_dir = self.store_dir() / model_config.name / version
        out_dir.mkdir(parents=True, exist_ok=True)
        keras_path = out_dir / "model.keras"
        model.save(keras_path)
        built = build_bundles(model, prepared.manifest, version=version, temperature=temperature,
                              devices=model_config.devices, out_dir=out_dir, signing_key=self.signing_key(),
                              engines=self.config.engines,
                              representative=calibration_images(prepared.data.train),
                              base_target=self.base_target(model_config.name))
        base = next((b for b in built if b.target == prepared.manifest.target), built[0])
        fetch_uri = self.publisher.fetch_uri()
        self.store.add_version(  # with its bundles, in one transaction: devices never see part of a version
            VersionRecord(model_config.name, version, str(keras_path), str(base.directory), prepared.manifest.tau,
                          temperature, self.store.clock(), run.id),
            bundles=[bundle_record(b.archive, b.bundle_name, version, b.signature, fetch_uri) for b in built],
            published=(run.id, metrics))
        announce(self.publisher, built, version)
        prune_archives(self.store.kb, self.config.keep_bundle_archives)
        # under this run's lease: no retrain or release of the model reads a folder meanwhile
        prune_store(self.store, self.config.store_dir, model_config.name, self.config.keep_bundle_archives,
                    [b.bundle_name for b in built])
        return version

    def store_dir(self) -> Path:
        """`retrain.store_dir`; RetrainError when unset."""
        if self.config.store_dir is None:
            raise RetrainError("retrain.store_dir is not set")
        return self.config.store_dir


def check_same_classes(model_config: ModelConfig, data: OriginalData, manifest: Manifest) -> None:
    """The retrain's data set must name the deployed bundle's classes in its order, at its input size: a class
    folder added or renamed shifted every index, and the retrain trained, judged and published in the new order
    under the bundle's old labels."""
    if tuple(data.labels) != tuple(manifest.labels):
        raise RetrainError(f"retrain.models {model_config.name!r}: the data set {model_config.dataset!r} has the "
                           f"classes {list(data.labels)}, the deployed bundle {list(manifest.labels)} (the same "
                           "names in the same order are needed: people's answers are indices into them)")
    if tuple(data.input_shape) != tuple(manifest.input.shape[1:]):
        raise RetrainError(f"retrain.models {model_config.name!r}: the data set's images are "
                           f"{tuple(data.input_shape)}, the deployed model takes {tuple(manifest.input.shape[1:])}")

