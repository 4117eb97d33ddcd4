/// <reference lib="webworker" />
/**
 * Device mode's service worker: keeps the page (/device), its scripts and wasm, and the bundles as they pass
 * through it, so an installed phone opens with the hub unreachable. Every one of them is asked of the network
 * first, conditionally (the hub answers an unchanged file or bundle with 304, so an open downloads nothing
 * again) and taken from the cache only when the network fails: a hub upgrade reaches the phone at its next
 * open (the scripts were once kept cache-first for ever under a fixed cache name, so an installed phone never got
 * a new device.js). The page's files are kept in a cache named by the build (`__HGEN_BUILD__`, a hash of the
 * built files that build.mjs writes in): a new build's worker differs byte for byte, so the browser installs it,
 * and its activation deletes every older build's cache. Bundles are kept apart (the last one of each address, and
 * of the versioned addresses the newest version the page has run and the newest asked for: bundlecache.ts; the page
 * posts the newest version it has run, kept here under RAN_PATH): the page verifies every bundle it gets, from the
 * network or from this cache. Nothing is fetched ahead.
 */

import { staleBundles } from "./bundlecache.js";
import { RAN_MESSAGE } from "./provision.js";

declare const __HGEN_BUILD__: string;

const PREFIX = "hgen-device-";
const BUILD = typeof __HGEN_BUILD__ === "string" ? __HGEN_BUILD__ : "dev";
const APP_CACHE = `${PREFIX}app-${BUILD}`;
const BUNDLE_CACHE = `${PREFIX}bundles`;
const sw = self as unknown as ServiceWorkerGlobalScope;

sw.addEventListener("install", (event) => event.waitUntil(sw.skipWaiting()));

sw.addEventListener("activate", (event) => event.waitUntil((async () => {
  for (const name of await caches.keys()) {
    if (name.startsWith(PREFIX) && name !== APP_CACHE && name !== BUNDLE_CACHE) await caches.delete(name);
  }
  if (await caches.has(BUNDLE_CACHE)) await pruneBundles(await caches.open(BUNDLE_CACHE)); // an older worker's pile
  await sw.clients.claim();
})()));

/** A successful answer kept in `cache` for `request` (in the background: the page gets the answer at once); a
 * bundle's older versions go once the new one is kept. */
function keep(cache: string, request: Request, response: Response): void {
  if (response.ok) {
    const copy = response.clone();
    void caches.open(cache).then(async (store) => {
      await store.put(request, copy);
      if (cache === BUNDLE_CACHE) await pruneBundles(store);
    }).catch(() => undefined);
  }
}

/** Where the newest version run of each bundle is kept (in the bundle cache, under the bundle's name). */
const RAN_PATH = "/device/ran/";

/** Each bundle's newest version run, as the page told it. */
async function ranVersions(store: Cache, requests: readonly Request[]): Promise<Map<string, string>> {
  const ran = new Map<string, string>();
  for (const request of requests) {
    const path = new URL(request.url).pathname;
    if (!path.startsWith(RAN_PATH)) continue;
    const kept = await store.match(request);
    if (kept !== undefined) ran.set(decodeURIComponent(path.slice(RAN_PATH.length)), await kept.text());
  }
  return ran;
}

sw.addEventListener("message", (event) => {
  const data = event.data as { type?: unknown; bundle?: unknown; version?: unknown } | null;
  if (data?.type !== RAN_MESSAGE || typeof data.bundle !== "string" || typeof data.version !== "string") return;
  const { bundle, version } = data;
  event.waitUntil((async () => {
    const store = await caches.open(BUNDLE_CACHE);
    await store.put(new Request(new URL(RAN_PATH + encodeURIComponent(bundle), location.origin).href),
      new Response(version));
    await pruneBundles(store);
  })().catch(() => undefined));
});

async function pruneBundles(store: Cache): Promise<void> {
  const requests = await store.keys();
  const ran = await ranVersions(store, requests);
  const stale = new Set(staleBundles(requests.map((r) => new URL(r.url).pathname), ran));
  for (const request of requests) {
    if (stale.has(new URL(request.url).pathname)) await store.delete(request);
  }
}

/** The network's answer (kept in `cache` when it is a success), else what `cache` holds for the request. */
async function networkFirst(request: Request, cache: string, ignoreSearch = false): Promise<Response> {
  try {
    const response = await fetch(request);
    keep(cache, request, response);
    return response;
  } catch (error) {
    const kept = await caches.match(request, { cacheName: cache, ignoreSearch });
    if (kept !== undefined) return kept;
    throw error;
  }
}

/** As `networkFirst`, asking the hub whether the kept copy is still current (its ETag or Last-Modified): the hub
 * serves the page's files `no-store`, so the browser's HTTP cache keeps nothing, and without this every open would
 * download the wasm (15 MB) again; a 304 serves the kept copy. */
async function revalidated(request: Request, cache: string): Promise<Response> {
  const kept = await caches.match(request, { cacheName: cache });
  const etag = kept?.headers.get("ETag");
  const modified = kept?.headers.get("Last-Modified");
  if (kept === undefined || (!etag && !modified)) return networkFirst(request, cache);
  const headers = new Headers(request.headers);
  if (etag) headers.set("If-None-Match", etag);
  else if (modified) headers.set("If-Modified-Since", modified);
  let response: Response;
  try {
    response = await fetch(new Request(request.url, { headers, mode: "same-origin", credentials: "same-origin" }));
  } catch {
    return kept; // the hub is unreachable
  }
  if (response.status === 304) return kept;
  keep(cache, request, response);
  return response;
}

sw.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  if (url.pathname === "/device" && event.request.mode === "navigate") {
    event.respondWith(networkFirst(event.request, APP_CACHE, true)); // ?pacing=... : the same page
  } else if (url.pathname.startsWith("/device/static/")) {
    event.respondWith(revalidated(event.request, APP_CACHE));
  } else if (url.pathname.startsWith("/device/bundle/")) {
    event.respondWith(revalidated(event.request, BUNDLE_CACHE)); // the archive's SHA-256 is its ETag
  }
});
