/**
 * What the single-use onboarding link gave this phone (device id, its secret, the bundle to run, the pinned
 * bundle-signing key, the broker's WebSocket URL), kept in localStorage so device mode survives reloads.
 */

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

export function save(p: Provisioning): void {
  localStorage.setItem(STORAGE_KEY, JSON.stringify(p));
}
