/**
 * What the single-use onboarding link gave this phone (device id, its secret, the bundle to run, the pinned
 * bundle-signing key, the broker's WebSocket URL), kept in localStorage so device mode survives reloads.
 */

import { isNewer } from "./versions.js";

export const STORAGE_KEY = "hgen.device.v1";

export interface Provisioning {
  device_id: string;
  secret: string;
  bundle_name: string;
  public_key: string; // base64 of the 32 raw Ed25519 bytes
  mqtt_url: string | null;
  mqtt_topic_prefix: string;
  labour_share: number | null;
  min_escalation_interval_s: number;
  audit_share?: number; // absent in links made before audits: none
  audit_seed?: number;
  unfamiliar_share?: number; // absent in links made before the draw: every unfamiliar frame is asked
  // the largest message the hub and its broker take (the hub's mqtt.max_payload_bytes); absent (the hub does not
  // send it yet): requests.ts MAX_PAYLOAD_BYTES
  max_payload_bytes?: number;
}

export function bearer(p: Provisioning): string {
  return `${p.device_id}:${p.secret}`;
}

export function fromBase64(value: string): Uint8Array {
  return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
}

export function load(): Provisioning | null {
  const raw = localStorage.getItem(STORAGE_KEY);
  return raw === null ? null : (JSON.parse(raw) as Provisioning);
}

/** A new onboarding: its provisioning, and no remembered bundle version (the operator's link starts afresh). */
export function save(p: Provisioning): void {
  localStorage.setItem(STORAGE_KEY, JSON.stringify(p));
  localStorage.removeItem(HIGHEST_KEY);
}

/** The newest bundle version this phone has run (hot swaps included), per provisioned bundle name: a bundle older
 * than it is refused on load (versions.ts `loadRefusal`). A new onboarding starts afresh (`save`). */
export const HIGHEST_KEY = "hgen.device.highest.v1";

/** What is remembered, per bundle name; {} when nothing is, or the record is damaged (it starts afresh). */
function remembered(): Record<string, unknown> {
  try {
    const known: unknown = JSON.parse(localStorage.getItem(HIGHEST_KEY) ?? "{}");
    return typeof known === "object" && known !== null ? known as Record<string, unknown> : {};
  } catch {
    return {};
  }
}

export function highestVersion(bundleName: string): string | null {
  const version = remembered()[bundleName];
  return typeof version === "string" ? version : null;
}

/** Remember `version` as run, if newer than what is remembered (`isNewer`: the order of versions.ts), and tell the
 * service worker the newest version run: it keeps that bundle's copy (a newer one refused never replaces it). */
export function rememberVersion(bundleName: string, version: string): void {
  const known = remembered();
  const highest = known[bundleName];
  if (typeof highest !== "string" || isNewer(version, highest)) {
    localStorage.setItem(HIGHEST_KEY, JSON.stringify({ ...known, [bundleName]: version }));
  }
  const newest = highestVersion(bundleName) ?? version;
  if (typeof navigator !== "undefined" && "serviceWorker" in navigator) {
    void navigator.serviceWorker.ready.then((registration) => registration.active?.postMessage(
      { type: RAN_MESSAGE, bundle: bundleName, version: newest })).catch(() => undefined);
  }
}

/** The page's message to the service worker: `{type, bundle, version}`, the newest version of `bundle` run. */
export const RAN_MESSAGE = "hgen-bundle-ran";
