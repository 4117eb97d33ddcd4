/**
 * Which bundles the service worker keeps. It kept every answer of every bundle address, so each hot swap added a
 * whole bundle (`/device/bundle/<name>/<version>`) to the phone's storage for good. Per bundle name it keeps the
 * newest address (`/device/bundle/<name>`) and the newest version asked for by name: the version a swap brought, or
 * the newest one a reload asks for when the hub (or, offline, this cache) answers older (device.ts `loadBundle`).
 * An older version is never run again (versions.ts `loadRefusal` refuses it), so no rollback needs it.
 */

import { isNewer } from "./versions.js";

const VERSIONED = /^\/device\/bundle\/([^/]+)\/([^/]+)$/;

/** The versioned bundle addresses among `paths` (URL paths) to delete: all but the newest version of each name. */
export function staleBundles(paths: readonly string[]): string[] {
  const versioned = paths.flatMap((path) => {
    const match = VERSIONED.exec(path);
    return match === null ? [] : [{ path, name: decodeURIComponent(match[1]), version: decodeURIComponent(match[2]) }];
  });
  const newest = new Map<string, string>();
  for (const { name, version } of versioned) {
    const kept = newest.get(name);
    if (kept === undefined || isNewer(version, kept)) newest.set(name, version);
  }
  return versioned.filter(({ name, version }) => newest.get(name) !== version).map(({ path }) => path);
}
