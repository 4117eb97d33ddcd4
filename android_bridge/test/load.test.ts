/**
 * Loading a bundle on the phone: the provisioned model and no version older than the newest one run
 * (src/versions.ts `loadRefusal`, src/provision.ts), the archive's decompressed size capped before its signature
 * is checked (src/bundle.ts), and a frame whose logits are not finite (src/hdnn.ts): numpy's argmax, and invalid.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { gzipSync } from "node:zlib";

import { BundleRefusedError, gunzip, MAX_ARCHIVE_BYTES, verifyArchive } from "../src/bundle.js";
import * as hdnn from "../src/hdnn.js";
import * as provision from "../src/provision.js";
import { loadRefusal } from "../src/versions.js";

/** localStorage for node. */
class MemoryStorage {
  private readonly items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}
(globalThis as unknown as { localStorage: MemoryStorage }).localStorage = new MemoryStorage();

test("a bundle on load must be the provisioned model, and not older than the newest version run", () => {
  const manifest = (name: string, version: string, target = "x86_64") => ({ model: { name, version }, target });
  assert.equal(loadRefusal(manifest("lenet5-digits", "0.1.0"), "lenet5-digits", null), null);
  assert.equal(loadRefusal(manifest("lenet5-digits", "0.2.0"), "lenet5-digits", "0.2.0"), null);
  assert.equal(loadRefusal(manifest("lenet5-digits", "0.10.0"), "lenet5-digits", "0.9.0"), null,
    "the agent's order, not text");
  // the hub names a retrained bundle for another target <model>-<target> (hgen.hub.retrain.publish.bundle_name_for)
  assert.equal(loadRefusal(manifest("lenet5", "0.3.0", "rpi4"), "lenet5-rpi4", null), null);
  assert.notEqual(loadRefusal(manifest("lenet5", "0.3.0", "x86_64"), "lenet5-rpi4", null), null);
  const other = loadRefusal(manifest("other-model", "0.0.1"), "lenet5-digits", null);
  assert.ok(other !== null && !other.older && /other-model 0\.0\.1.*runs lenet5-digits/.test(other.message), other?.message);
  const older = loadRefusal(manifest("lenet5-digits", "0.1.0"), "lenet5-digits", "0.2.0");
  assert.ok(older !== null && older.older && /0\.1\.0, older than 0\.2\.0/.test(older.message), older?.message);
});

test("the newest version run is remembered per bundle, never lowered, and forgotten by a new onboarding", () => {
  assert.equal(provision.highestVersion("lenet5-digits"), null);
  provision.rememberVersion("lenet5-digits", "0.1.0");
  provision.rememberVersion("lenet5-digits", "0.2.0");
  provision.rememberVersion("lenet5-digits", "0.1.5");
  provision.rememberVersion("other", "1.0.0");
  assert.equal(provision.highestVersion("lenet5-digits"), "0.2.0");
  assert.equal(provision.highestVersion("other"), "1.0.0");
  localStorage.setItem(provision.HIGHEST_KEY, "{damaged");
  assert.equal(provision.highestVersion("lenet5-digits"), null);
  provision.rememberVersion("lenet5-digits", "0.3.0");
  assert.equal(provision.highestVersion("lenet5-digits"), "0.3.0");
  provision.save({ device_id: "d", secret: "s", bundle_name: "lenet5-digits", public_key: "", mqtt_url: null,
    mqtt_topic_prefix: "p", labour_share: null, min_escalation_interval_s: 0 });
  assert.equal(provision.highestVersion("lenet5-digits"), null);
});

test("an archive that decompresses past the limit is refused before its signature is checked", async () => {
  assert.equal(MAX_ARCHIVE_BYTES, 256 * 1024 * 1024);
  const bomb = gzipSync(Buffer.alloc(4 * 1024 * 1024)); // 4 MB of zeros, a few KB compressed
  assert.ok(bomb.length < 16 * 1024);
  await assert.rejects(gunzip(bomb, 1024 * 1024), (error: unknown) =>
    error instanceof BundleRefusedError && /decompresses to more than 1048576 bytes/.test(error.message));
  await assert.rejects(verifyArchive(bomb, new Uint8Array(32), "onnxruntime-web", 1024 * 1024),
    (error: unknown) => error instanceof BundleRefusedError && /before its signature is checked/.test(error.message));
  assert.equal((await gunzip(bomb, 4 * 1024 * 1024)).length, 4 * 1024 * 1024, "at the limit: accepted");
  await assert.rejects(gunzip(bomb.subarray(0, bomb.length - 20)), /truncated or corrupt/);
});

test("non-finite logits: numpy's argmax (the first NaN), and the frame is invalid", () => {
  const params = { temperature: 1, fusionLambda: 0.4 };
  // the agent's numpy on the review's cases (/tmp/phonereview/math_py_output.txt)
  assert.equal(hdnn.predict([0, 1, NaN]), 2);
  assert.equal(hdnn.predict([NaN, 1, 0]), 0);
  assert.equal(hdnn.predict([0, Infinity, 1]), 1);
  assert.equal(hdnn.predict([2, 2, 1]), 0);
  assert.ok(Number.isNaN(hdnn.confidence([0, 1, NaN], params)));
  assert.equal(hdnn.fuse([0, 1, NaN], [0], params), 0);
  for (const logits of [[0, 1, NaN], [NaN, 1, 0], [0, Infinity, 1], [0, -Infinity, 1]]) {
    assert.equal(hdnn.finite(logits), false, String(logits));
  }
  assert.equal(hdnn.finite(new Float32Array([0, 1e30, -1e30])), true);
});
