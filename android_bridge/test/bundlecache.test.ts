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
  assert.deepEqual(staleBundles(kept).sort(), ["/device/bundle/a%2Fb/0.1.0", "/device/bundle/lenet/0.1.0",
    "/device/bundle/lenet/0.9.0"]);
  assert.deepEqual(staleBundles(["/device/bundle/lenet", "/device/bundle/lenet/0.2.0"]), []);
});
