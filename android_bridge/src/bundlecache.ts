/**
 * Which bundles the service worker keeps. It kept every answer of every bundle address, so each hot swap added a
 * whole bundle (`/device/bundle/<name>/<version>`) to the phone's storage for good. Per bundle name it keeps the
 * newest address (`/device/bundle/<name>`), the newest version the page has run (it tells the worker:
 * provision.ts `rememberVersion`) and the newest version asked for by name (a swap under way, not yet run). A
 * version older than the newest run is never run again (versions.ts `loadRefusal` refuses it), so no rollback needs
 * it; but a newer version the page refused (a failed swap) must not take the place of the one it runs, which an
 * offline reload needs. Until the worker knows what a bundle's page has run, it deletes none of its versions.
 */

import { isNewer } from "./versions.js";

const VERSIONED = /^\/device\/bundle\/([^/]+)\/([^/]+)$/;

/** The versioned bundle addresses among `paths` (URL paths) to delete: of each name whose newest version run is
 * known (`ran`: name -> version), all but that one and the newest. */
export function staleBundles(paths: readonly string[], ran: ReadonlyMap<string, string>): string[] {
  const versioned = paths.flatMap((path) => {
    const match = VERSIONED.exec(path);
    return match === null ? [] : [{ path, name: decodeURIComponent(match[1]), version: decodeURIComponent(match[2]) }];
  });
  const newest = new Map<string, string>();
  for (const { name, version } of versioned) {
    const kept = newest.get(name);
    if (kept === undefined || isNewer(version, kept)) newest.set(name, version);
  }
  return versioned.filter(({ name, version }) => ran.has(name) && ran.get(name) !== version
    && newest.get(name) !== version).map(({ path }) => path);
}
