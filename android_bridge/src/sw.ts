/// <reference lib="webworker" />
/**
 * Device mode's service worker: keeps the page, its script and the wasm (cache first) and the last bundle
 * (network first, the cache when the hub is unreachable) so an installed phone opens without downloading them
 * again. The page still verifies every bundle it gets, from the network or from this cache.
 */

const CACHE = "hgen-device-v1";
const sw = self as unknown as ServiceWorkerGlobalScope;

sw.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(["/device/static/device.js",
    "/device/static/ort-wasm-simd-threaded.wasm"])).then(() => sw.skipWaiting()));
});

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
