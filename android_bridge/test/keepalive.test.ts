/**
 * What keeps a phone going unattended: a camera that stops is reported and started again (after a back-off, or at
 * once when the page is visible again), src/keepalive.ts; a hot swap that fails is tried again with a back-off while
 * the announced version is newer than the running one, src/updates.ts. The tests hold the timers.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import type { CameraEvents } from "../src/camera.js";
import { CameraKeeper, STEADY_MS } from "../src/keepalive.js";
import type { Raster } from "../src/preprocess.js";
import { BACKOFF_MS } from "../src/retry.js";
import { Updater } from "../src/updates.js";
import { Timers } from "./timers.js";

const FRAME = { width: 1, height: 1, data: new Uint8ClampedArray(4) } as unknown as Raster;

class FakeCamera {
  starts = 0;
  refuse = 0; // the next starts that fail (the camera busy)
  events: CameraEvents | null = null;
  async start(): Promise<void> {
    this.starts += 1;
    if (this.refuse > 0) {
      this.refuse -= 1;
      throw Object.assign(new Error("Could not start video source"), { name: "NotReadableError" });
    }
  }
  each(events: CameraEvents): void {
    this.events = events;
  }
  stop(): void {}
}

test("a camera that ends is reported, and started again with a back-off until it streams", async () => {
  const camera = new FakeCamera();
  const timers = new Timers();
  const states: (string | null)[] = [];
  const clock = { ms: 0 };
  const keeper = new CameraKeeper(camera, { frame: () => undefined, state: (s) => states.push(s) }, timers.schedule,
    () => clock.ms);
  await keeper.start();
  camera.events!.ended("the camera track ended");
  assert.deepEqual(states, ["the camera track ended"]);
  assert.deepEqual(timers.pending, [BACKOFF_MS[0]]);
  camera.refuse = 1;
  await timers.runNext();
  assert.equal(camera.starts, 2);
  assert.match(String(states.at(-1)), /^the camera track ended; starting it again failed \(NotReadableError\)$/);
  assert.deepEqual(timers.pending, [BACKOFF_MS[1]], "waits longer after a failure");
  await timers.runNext();
  assert.equal(camera.starts, 3);
  assert.equal(states.at(-1), null, "streaming again");
  assert.equal(keeper.restarts, 1);
  camera.events!.frame(FRAME, 0);
  clock.ms += STEADY_MS - 1;
  camera.events!.frame(FRAME, 1);
  camera.events!.ended("the camera's frame stream ended");
  assert.deepEqual(timers.pending, [BACKOFF_MS[2]], "a stream that ran under a minute: the back-off goes on");
  await timers.runNext();
  camera.events!.frame(FRAME, 2);
  clock.ms += STEADY_MS;
  camera.events!.frame(FRAME, 3);
  camera.events!.ended("the camera's frame stream ended");
  assert.deepEqual(timers.pending, [BACKOFF_MS[0]], "a stream that ran a minute starts the back-off afresh");
});

test("a camera whose stream ends just after each restart is restarted less and less often", async () => {
  const camera = new FakeCamera();
  const timers = new Timers();
  const keeper = new CameraKeeper(camera, { frame: () => undefined, state: () => undefined }, timers.schedule, () => 0);
  await keeper.start();
  const waits: number[] = [];
  for (let i = 0; i < BACKOFF_MS.length; i++) {
    camera.events!.frame(FRAME, i); // a frame or two, then it ends
    camera.events!.ended("the camera track ended");
    waits.push(...timers.pending);
    await timers.runNext();
  }
  assert.deepEqual(waits, BACKOFF_MS);
  assert.equal(keeper.restarts, BACKOFF_MS.length);
});

test("a stopped camera starts again at once when the page becomes visible", async () => {
  const camera = new FakeCamera();
  const timers = new Timers();
  const keeper = new CameraKeeper(camera, { frame: () => undefined, state: () => undefined }, timers.schedule);
  await keeper.start();
  keeper.visible();
  assert.equal(camera.starts, 1, "a running camera is left alone");
  camera.events!.muted(true);
  assert.match(String(keeper.stopped), /muted/);
  assert.deepEqual(timers.pending, [], "a muted camera unmutes by itself");
  camera.events!.muted(false);
  assert.equal(keeper.stopped, null);
  camera.events!.ended("the camera track ended");
  keeper.visible();
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.equal(camera.starts, 2);
  assert.deepEqual(timers.pending, [], "the back-off is cancelled");
  assert.equal(keeper.stopped, null);
});

test("a failed hot swap is tried again with a back-off while the announced version is newer", async () => {
  let running = "0.1.0";
  const tried: string[] = [];
  const failed: [string, number | null][] = [];
  let fail = 2;
  const timers = new Timers();
  const updater = new Updater({
    running: () => running,
    install: async (version) => {
      tried.push(version);
      if (fail-- > 0) throw new Error("HTTP 503");
      running = version;
    },
    failed: (version, _error, retryMs) => failed.push([version, retryMs]),
    installed: () => undefined,
  }, timers.schedule);
  updater.announce("0.2.0");
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.deepEqual(failed, [["0.2.0", BACKOFF_MS[0]]]);
  await timers.runNext();
  assert.deepEqual(failed.at(-1), ["0.2.0", BACKOFF_MS[1]]);
  await timers.runNext();
  assert.deepEqual(tried, ["0.2.0", "0.2.0", "0.2.0"]);
  assert.equal(running, "0.2.0");
  assert.deepEqual(timers.pending, []);
  updater.announce("0.2.0"); // the retained notice again (a reconnect): nothing to do
  updater.announce("0.1.5");
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.equal(tried.length, 3);
});

test("a newer notice replaces a version waiting to be retried, at once", async () => {
  let running = "0.1.0";
  const tried: string[] = [];
  const timers = new Timers();
  const updater = new Updater({
    running: () => running,
    install: async (version) => {
      tried.push(version);
      if (version === "0.2.0") throw new Error("refused");
      running = version;
    },
    failed: () => undefined,
    installed: () => undefined,
  }, timers.schedule);
  updater.announce("0.2.0");
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.equal(timers.pending.length, 1);
  updater.announce("0.3.0");
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.deepEqual(tried, ["0.2.0", "0.3.0"]);
  assert.equal(running, "0.3.0");
  assert.deepEqual(timers.pending, [], "the older retry is cancelled");
});

test("a camera stopped for good (another tab took the device over) is never started again", async () => {
  const camera = new FakeCamera();
  const timers = new Timers();
  const keeper = new CameraKeeper(camera, { frame: () => undefined, state: () => undefined }, timers.schedule);
  await keeper.start();
  camera.events!.ended("the camera track ended");
  assert.deepEqual(timers.pending, [BACKOFF_MS[0]]);
  let stops = 0;
  camera.stop = () => {
    stops += 1;
  };
  keeper.stop();
  assert.equal(stops, 1);
  assert.deepEqual(timers.pending, [], "the restart waiting is cancelled");
  keeper.visible();
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.equal(camera.starts, 1, "not started again when the page becomes visible");
});

test("a camera stopped while a restart is starting it is stopped again once it has started", async () => {
  const camera = new FakeCamera();
  const timers = new Timers();
  const keeper = new CameraKeeper(camera, { frame: () => undefined, state: () => undefined }, timers.schedule);
  await keeper.start();
  camera.events!.ended("the camera track ended");
  let opened: () => void = () => undefined;
  camera.start = () => new Promise<void>((resolve) => {
    camera.starts += 1;
    opened = resolve;
  });
  let stops = 0;
  camera.stop = () => {
    stops += 1;
  };
  keeper.visible(); // the restart: getUserMedia under way
  keeper.stop();
  opened();
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.equal(camera.starts, 2);
  assert.equal(stops, 2, "the stream the restart opened is stopped too");
  assert.deepEqual(timers.pending, []);
});

test("a stopped updater retries nothing, and waits for the swap under way", async () => {
  const timers = new Timers();
  let finish: () => void = () => undefined;
  const failed: string[] = [];
  let installs = 0;
  const updater = new Updater({
    running: () => "0.1.0",
    install: () => new Promise<void>((_resolve, reject) => {
      installs += 1;
      finish = () => reject(new Error("HTTP 503"));
    }),
    failed: (version) => failed.push(version),
    installed: () => undefined,
  }, timers.schedule);
  updater.announce("0.2.0");
  let stopped = false;
  const stopping = updater.stop().then(() => {
    stopped = true;
  });
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.equal(stopped, false, "the download under way is awaited");
  finish();
  await stopping;
  assert.deepEqual(failed, [], "nothing reported, nothing retried");
  assert.deepEqual(timers.pending, []);
  updater.announce("0.3.0");
  for (let i = 0; i < 20; i++) await Promise.resolve();
  assert.equal(installs, 1);
});
