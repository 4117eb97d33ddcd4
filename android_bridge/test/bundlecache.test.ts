/**
 * The service worker keeps, per bundle name, the newest address and the newest version asked for by name
 * (src/bundlecache.ts): it once kept every version a hot swap ever fetched.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { staleBundles } from "../src/bundlecache.js";

test("only the newest versioned copy of each bundle stays", () => {
  const kept = ["/device/bundle/lenet", "/device/bundle/lenet/0.1.0", "/device/bundle/lenet/0.10.0",
    "/device/bundle/lenet/0.9.0", "/device/bundle/other/1.0.0", "/device/bundle/other", "/device/static/device.js",
    "/device/bundle/a%2Fb/0.1.0", "/device/bundle/a%2Fb/0.2.0"];
  const ran = new Map([["lenet", "0.10.0"], ["other", "1.0.0"], ["a/b", "0.2.0"]]);
  assert.deepEqual(staleBundles(kept, ran).sort(), ["/device/bundle/a%2Fb/0.1.0", "/device/bundle/lenet/0.1.0",
    "/device/bundle/lenet/0.9.0"]);
  assert.deepEqual(staleBundles(["/device/bundle/lenet", "/device/bundle/lenet/0.2.0"], ran), []);
});

test("a newer version the page refused never takes the place of the one it runs", () => {
  const kept = ["/device/bundle/lenet/0.1.0", "/device/bundle/lenet/0.2.0", "/device/bundle/lenet/0.3.0",
    "/device/bundle/lenet/0.4.0"];
  // 0.2.0 runs; 0.3.0 and 0.4.0 were fetched by swaps that failed
  assert.deepEqual(staleBundles(kept, new Map([["lenet", "0.2.0"]])).sort(),
    ["/device/bundle/lenet/0.1.0", "/device/bundle/lenet/0.3.0"]);
  assert.deepEqual(staleBundles(kept, new Map()), [], "what runs not known yet: nothing deleted");
});
