"""Re-lower, sign, version, store and announce a retrained model.

One bundle per target that the model's devices run. Bundle names: the model name for the deployed bundle's own
target, `<name>-<target>` for the others (a device watches the name it runs). Every bundle is built before any
is announced, so a failure on one target leaves every device on the current version.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hgen.hub.bundle_files import bundle_target
from hgen.hub.errors import RetrainError
from hgen.hub.kb.store import BundleRecord, KnowledgeBase, bundle_notice
from hgen.protos import hub_pb2
from hgen.runtime.bundle.manifest import SEMVER_PREFIX as SEMVER
from hgen.runtime.bundle.manifest import SIGNATURE_NAME, Manifest, version_key

from hgen.hub.transports.base import AnnounceError

if TYPE_CHECKING:
    from hgen.hub.transports.base import HubTransport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltBundle:
    """A signed, packed bundle for one target and the devices that should get it."""

    target: str
    bundle_name: str
    directory: Path
    archive: Path
    signature: bytes
    device_ids: tuple[str, ...]


def bump_version(version: str) -> str:
    """1.2.3 (or 1.2.3-rc+x) -> 1.2.4: every retrain is a patch release of the same plan."""
    match = SEMVER.match(version)
    if match is None:
        raise RetrainError(f"current version {version!r} is not semantic (major.minor.patch)")
    major, minor, patch = (int(g) for g in match.groups())
    return f"{major}.{minor}.{patch + 1}"


def semver_key(version: str) -> tuple[int, int, int]:
    match = SEMVER.match(version)
    if match is None:
        raise RetrainError(f"version {version!r} is not semantic (major.minor.patch)")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def next_version(current: str, taken: Iterable[str], wanted: str | None = None) -> str:
    """`wanted` when it is above `current` and unused, else the first unused patch after `current`."""
    used = set(taken)
    if wanted is not None and wanted not in used and semver_key(wanted) > semver_key(current):
        return wanted
    version = bump_version(current)
    while version in used:
        version = bump_version(version)
    return version


def bundle_name_for(model_name: str, base_target: str, target: str) -> str:
    return model_name if target == base_target else f"{model_name}-{target}"


def targets_of(devices: Mapping[str, str], base_target: str) -> dict[str, tuple[str, ...]]:
    """target -> its devices; with no devices configured, the deployed bundle's target alone."""
    grouped: dict[str, list[str]] = {}
    for device, target in sorted(devices.items()):
        grouped.setdefault(target, []).append(device)
    return {t: tuple(d) for t, d in grouped.items()} or {base_target: ()}


def build_bundles(model: Any, manifest: Manifest, *, version: str, temperature: float,
                  devices: Mapping[str, str], out_dir: Path, signing_key: Path, engines: Sequence[str],
                  representative: np.ndarray, base_target: str | None = None) -> list[BuiltBundle]:
    """Lower and sign `model` for each target, keeping the deployed manifest's plan, tau, labels, lambda,
    familiarity ranges and precision (an int8 deployment stays int8, calibrated on `representative`).

    Bundle names follow `base_target` (the configured bundle's target; default the manifest's), so a target's
    name stays the same from version to version whichever target the previous version was recorded under."""
    base_target = manifest.target if base_target is None else base_target
    from hgen.compiler.bundle import pack_bundle, write_bundle

    quantize = "int8" if any(entry.precision == "int8" for entry in manifest.engines) else "float"
    built = []
    for target, device_ids in targets_of(devices, base_target).items():
        directory = out_dir / f"bundle-{target}"
        write_bundle(directory, model, name=manifest.model.name, version=version, kind=manifest.kind, target=target,
                     labels=manifest.labels, input_spec=manifest.input.model_dump(), tau=manifest.tau,
                     temperature=temperature, fusion_lambda=manifest.fusion_lambda,
                     confidence_params=manifest.confidence, predicted_metrics=manifest.predicted.model_dump(),
                     plan=manifest.plan, representative_data=representative, engines=engines,
                     quantize=quantize, familiarity=manifest.familiarity, signing_key=signing_key, overwrite=True)
        archive = pack_bundle(directory)
        built.append(BuiltBundle(target, bundle_name_for(manifest.model.name, base_target, target), directory,
                                 archive, (directory / SIGNATURE_NAME).read_bytes(), device_ids))
    return built


class Publisher(Protocol):
    """Registers a built bundle (FetchBundle serves it) and announces it to devices."""

    def publish(self, built: BuiltBundle, version: str) -> hub_pb2.ModelUpdate: ...

    def fetch_uri(self) -> str: ...

    def announce(self, name: str, device_ids: Sequence[str]) -> BundleRecord | None: ...


class HubPublisher:
    """Records a bundle in the knowledge base (FetchBundle serves it from there) and announces it through every
    transport the hub runs: gRPC wakes its WatchUpdates streams, MQTT publishes retained notices.

    One per hub process. What it announces is always the newest recorded bundle of a name (by version number),
    read under that name's lock: a notice never goes back to an older bundle, whoever recorded it and in whatever
    order the announcements run; the same version is not announced twice; names do not wait for each other."""

    def __init__(self, kb: KnowledgeBase, transports: Sequence[HubTransport] = ()) -> None:
        self.kb = kb
        self.transports = tuple(transports)
        self._announced: dict[str, str] = {}  # bundle name -> the version this publisher last announced
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def fetch_uri(self) -> str:
        """Where devices fetch: the first transport that serves bundles ('' when none runs, e.g. `hgen-hub
        retrain` from the command line: a serving hub's devices fetch by name from the knowledge base)."""
        return next((t.fetch_uri for t in self.transports if t.fetch_uri), "")

    def publish(self, built: BuiltBundle, version: str) -> hub_pb2.ModelUpdate:
        return self.publish_file(built.archive, built.bundle_name, version, built.signature, built.device_ids)

    def publish_file(self, archive: Path, bundle_name: str, version: str, signature: bytes,
                     device_ids: Sequence[str] = ()) -> hub_pb2.ModelUpdate:
        """A packed bundle file: recorded first, so a device that looks before the announcement finds it."""
        record = bundle_record(archive, bundle_name, version, signature, self.fetch_uri())
        self.kb.add_bundle(record)
        self.announce(bundle_name, device_ids)
        log.info("published %s %s (%d devices)", bundle_name, version, len(device_ids))
        return bundle_notice(record)

    def announce(self, name: str, device_ids: Sequence[str]) -> BundleRecord | None:
        """Announce the newest recorded bundle called `name` through every transport, unless this publisher
        announced it (or a newer one) already; returns what it announced. A record made by a process that serves
        no bundles (the CLI) gets this hub's fetch address. Remembered once every transport took it, so one that
        refused (AnnounceError) is asked again by the next relay round."""
        with self._lock_of(name):
            record = self.kb.bundle(name)
            known = self._announced.get(name)
            if record is None or (known is not None and version_key(known) >= version_key(record.version)):
                return None
            if not record.fetch_uri:
                record = replace(record, fetch_uri=self.fetch_uri())
            notice = bundle_notice(record)
            for transport in self.transports:
                transport.announce(notice, device_ids)
            self._announced[name] = record.version
            return record

    def announce_recorded(self, routes: Mapping[str, Sequence[str]]) -> list[str]:
        """`announce` each bundle name in `routes` (name -> its devices): what `hgen-hub retrain/rollback/publish`
        or another hub on the same knowledge base recorded. gRPC streams look in the knowledge base themselves;
        MQTT devices learn only from a notice. Returns "name version" of each announced; at a hub's start that
        re-asserts every retained notice."""
        said = []
        for name, device_ids in routes.items():
            try:
                record = self.announce(name, device_ids)
            except AnnounceError as exc:  # the next round tries again
                log.error("a device was not told of the newest %s: %s", name, exc)
                continue
            if record is not None:
                said.append(f"{name} {record.version}")
        return said

    def _lock_of(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


def announce(publisher: Publisher, built: Sequence[BuiltBundle], version: str) -> None:
    """Tell each target's devices of a recorded version: one notice a transport could not send stops no other
    target (devices that look, WatchUpdates or a restart, find it; a serving hub's relay asks again)."""
    for bundle in built:
        try:
            publisher.announce(bundle.bundle_name, bundle.device_ids)
        except Exception as exc:  # noqa: BLE001 (recorded already)
            log.error("published %s %s, but a device was not told: %s", bundle.bundle_name, version, exc)


def prune_archives(kb: Any, keep_last: int) -> None:
    """After a publish: empty the knowledge base's copies of old versions' archives (`retrain.keep_bundle_archives`;
    one per target at every retrain, kept for ever, they grew the database by every version's bundles). A failure
    is logged, never undoes the publish."""
    try:
        pruned = kb.prune_bundle_archives(keep_last)
    except Exception as exc:  # noqa: BLE001 (published already; the next publish tries again)
        log.error("old bundle archive copies were not emptied: %s", exc)
        return
    if pruned.archives:
        log.info("emptied %d old bundle archive copies (%.1f MB) from the knowledge base", pruned.archives,
                 pruned.bytes_freed / 1e6)


def bundle_record(path: Path, name: str, version: str, signature: bytes, fetch_uri: str,
                  now: float | None = None) -> BundleRecord:
    """The knowledge base's record of a bundle archive: its digest, size, target and a copy of its bytes (any hub
    on the database serves it, `hgen.hub.bundle_files`)."""
    data = Path(path).read_bytes()
    return BundleRecord(name, version, hashlib.sha256(data).hexdigest(), len(data), signature, str(path),
                        time.time() if now is None else now, fetch_uri, bundle_target(str(path)), data)
