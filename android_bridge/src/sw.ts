/// <reference lib="webworker" />
/**
 * Device mode's service worker: keeps the script and the wasm (cache first) and the last bundle (network first,
 * the cache when the hub is unreachable) as they pass through it, so an installed phone opens without
 * downloading them again. Nothing is fetched ahead (the first open downloads each file once, not twice). The
 * page still verifies every bundle it gets, from the network or from this cache.
 */

const CACHE = "hgen-device-v1";
const sw = self as unknown as ServiceWorkerGlobalScope;

sw.addEventListener("install", (event) => event.waitUntil(sw.skipWaiting()));

sw.addEventListener("activate", (event) => event.waitUntil(sw.clients.claim()));

sw.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  if (url.pathname.startsWith("/device/static/")) {
    event.respondWith(caches.match(event.request).then((hit) => hit ?? fetch(event.request).then((response) => {
      const copy = response.clone();
      if (response.ok) void caches.open(CACHE).then((cache) => cache.put(event.request, copy));
      return response;
    })));
  } else if (url.pathname.startsWith("/device/bundle/")) {
    event.respondWith(fetch(event.request).then((response) => {
      const copy = response.clone();
      if (response.ok) void caches.open(CACHE).then((cache) => cache.put(event.request, copy));
      return response;
    }).catch(async () => (await caches.match(event.request)) ?? Response.error()));
  }
});
