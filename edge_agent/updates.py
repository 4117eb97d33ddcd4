"""Model updates on the agent: an update notice -> download, verify, health-check and stage the bundle (or reject it
and keep running); `swap_to` for a bundle already on disk; swap and rollback events.

A mixin of `Agent`, split out so each file holds one responsibility.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from hgen.edge_agent.errors import DownloadError, StagedPendingError, StoppedError, SwapError
from hgen.edge_agent.model import Model
from hgen.edge_agent.store import durable_replace
from hgen.protos import hub_pb2
from hgen.runtime.bundle import BundleError
from hgen.runtime.bundle.manifest import MODEL_NAME, SEMVER, version_key

if TYPE_CHECKING:
    from hgen.edge_agent.agent import Agent

log = logging.getLogger("hgen.edge_agent.agent")
RETRY_FIRST_S = 30.0  # a failed download's first retry; doubles per failure of the same version
RETRY_MAX_S = 900.0


def notice_refusal(notice: hub_pb2.ModelUpdate) -> str:
    """Why a notice is not followed at all ('' to follow it): its bundle name and version name the download's file,
    so a name with a path in it wrote, then deleted, files outside the bundle store before any signature was
    checked. (The bundle name may carry a target, lenet5-rpi4: the signed manifest's model name is checked.)"""
    if not re.fullmatch(MODEL_NAME, notice.bundle_name) or not re.fullmatch(SEMVER, notice.version):
        return f"the notice names an invalid bundle {notice.bundle_name[:80]!r} {notice.version[:40]!r}"
    return ""


class ModelUpdates:
    """Update notices and swaps, for `Agent`."""

    def _on_update(self: Agent, notice: hub_pb2.ModelUpdate) -> None:
        """An update notice (gRPC WatchUpdates or the retained MQTT topic): download, verify, check, stage. Only a
        newer version of the running model is followed: a notice is not signed, and whoever can send one (a
        plaintext link) could otherwise push an older signed version, or another model signed with the same key."""
        version = notice.version
        with self._lock:
            if version == self.slot.active.version or version in self._seen_versions:
                return
            self._seen_versions.add(version)
            active_version = self.slot.active.version
        refused = notice_refusal(notice)
        if refused:
            self._reject(version, refused, None)
        elif version_key(version) <= version_key(active_version):
            log.info("update notice %s %s ignored: not newer than the running %s", notice.bundle_name, version,
                     active_version)
        else:
            threading.Thread(target=self._apply_update, args=(notice,), name="agent-swap", daemon=True).start()

    def _apply_update(self: Agent, notice: hub_pb2.ModelUpdate) -> None:
        with self._swap_lock:
            store = self.config.bundle.store_dir
            store.mkdir(parents=True, exist_ok=True)
            dest = store / f"{notice.bundle_name}-{notice.version}.hgb"  # both checked by notice_refusal
            try:
                assert self.transport is not None
                partial = self.transport.fetch_bundle(notice, dest.with_suffix(".part"))
                durable_replace(partial, dest)
                self.swap_to(dest, expect=(self.slot.active.name, notice.version))
            except StoppedError as exc:
                log.info("update %s: %s", notice.version, exc)
            except (DownloadError, OSError) as exc:  # broke off or arrived damaged: try again, later
                self._reject(notice.version, str(exc), dest)
                self._retry_later(notice)
            except (SwapError, BundleError) as exc:
                self._reject(notice.version, str(exc), dest)
            except Exception as exc:  # e.g. an engine that cannot open the model: reject, keep running
                log.exception("update %s failed", notice.version)
                self._reject(notice.version, f"{type(exc).__name__}: {exc}", dest)
            finally:
                dest.with_suffix(".part").unlink(missing_ok=True)  # a download that failed leaves nothing behind

    def _retry_later(self: Agent, notice: hub_pb2.ModelUpdate) -> None:
        """Follow the notice again after a back-off (RETRY_FIRST_S, doubling up to RETRY_MAX_S), or sooner when
        the hub sends it again (a reconnect re-sends it): a download that broke off once must not leave the
        device on the old model until it restarts."""
        with self._lock:
            self._seen_versions.discard(notice.version)
            failures = self._download_failures[notice.version] = self._download_failures.get(notice.version, 0) + 1
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
        log.warning("update %s: download will be tried again in %.0f s, or when the hub sends it again",
                    notice.version, delay)

        def again() -> None:
            if not self._stop.wait(delay):
                self._on_update(notice)

        threading.Thread(target=again, name="agent-update-retry", daemon=True).start()

    def swap_to(self: Agent, path: Path, *, tau: float | None = None,
                expect: tuple[str, str] | None = None, keep_staged: bool = False) -> Model:
        """Verify, load and health-check the bundle at `path`, then stage it for the next frame (with `tau`, e.g. a
        variant's tau for a labour level, else the configured or the bundle's). `expect`: the (model name, version)
        its signed manifest must carry (for a notice: the running model's name, the announced version), so an
        older signed bundle or another model signed with the same key is not run in its place. `keep_staged`:
        raise StagedPendingError rather than replace a candidate staged and not yet running (an update).

        Raises SwapError / BundleError when it is refused; the running model stays. If the pipeline is not
        running (source ended), the switch happens here.
        """
        tau = self.config.gate.tau if tau is None else tau
        with self._swap_lock:  # the bundle store does not prune while a bundle is being loaded and staged
            if keep_staged and self.slot.staged:  # staging happens only under this lock: no race with `stage`
                raise StagedPendingError(f"a staged bundle has not run yet; {Path(path).name} is not loaded")
            candidate = self.slot.prepare(Path(path), self.config.bundle, tau=tau,
                                          m=self.config.batching.annotators)
            if expect is not None and (candidate.name, candidate.version) != expect:
                candidate.close()
                raise SwapError(f"the bundle is signed as {candidate.name} {candidate.version}, not as "
                                f"{expect[0]} {expect[1]} (the running model, the announced version)")
            if not self.slot.stage(candidate):
                raise StoppedError(f"the agent stopped while {candidate.version} was loaded; it was not staged")
        if self._finished.is_set():
            self.slot.maybe_switch()
        return candidate

    def _reject(self: Agent, version: str, reason: str, download: Path | None) -> None:
        log.error("model update %s rejected: %s", version, reason)
        if download is not None:
            download.unlink(missing_ok=True)  # a refused bundle is never run: it does not stay on the card
        self.telemetry.inc("swaps_rejected")
        self.telemetry.problem("swap", f"update {version} rejected: {reason}")
        with self._changed:
            self._changed.notify_all()

    def _on_swap_event(self: Agent, kind: str, detail: str) -> None:
        self.store.record_soon()  # the bundle now running is the one the next start resumes
        if kind == "swap":
            log.info("now running %s %s (%s)", self.slot.active.name, self.slot.active.version, detail or "swapped")
            self.telemetry.inc("swaps")
            self.telemetry.problem("swap", "")
            if self.transport is not None and self.config.hub.watch_updates:
                self.transport.watch(self.slot.active.name, self.slot.active.version)
        elif kind == "replaced":
            self._on_replaced(*detail.split(" -> ", 1))
        else:
            self.telemetry.inc("rollbacks")
            self.telemetry.problem("swap", detail)
        with self._changed:
            self._changed.notify_all()

    def _on_replaced(self: Agent, replaced: str, by: str) -> None:
        """A staged update replaced before it ran by something not newer: count and report it, and forget its
        version so the hub's re-sent notice is followed again (a newer update superseding it is just logged)."""
        with self._lock:
            lost = replaced in self._seen_versions and version_key(replaced) >= version_key(by)
            if lost:
                self._seen_versions.discard(replaced)
        if not lost:
            log.info("staged %s replaced by %s before it ran", replaced, by)
            return
        log.warning("update %s was staged but replaced by %s before it ran; its notice will be followed again",
                    replaced, by)
        self.telemetry.inc("updates_replaced")
        self.telemetry.problem("swap", f"update {replaced} was replaced by {by} before it ran; waiting for the "
                                       "hub to send it again")
