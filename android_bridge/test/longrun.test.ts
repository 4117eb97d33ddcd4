/**
 * What a phone left streaming for weeks must not do (review findings): settle a sample on the phone at its hub
 * deadline while the hub's reply may still be on its way (src/samples.ts: a sample past it is sent again without
 * its image, and the hub's reply settles it); retry for ever a hot swap that can never succeed, or keep the engine
 * of a bundle that failed its health check (src/updates.ts, src/model.ts); refund into this page's bucket the labour
 * an earlier page reserved; give up on a resend the outbox failed to read until the next reconnect.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { hgen } from "../gen/hub_pb.js";
import { BundleRefusedError, type Manifest } from "../src/bundle.js";
import type { Engine } from "../src/engine.js";
import { LabourBucket } from "../src/gate.js";
import { Ledger } from "../src/ledger.js";
import { Model } from "../src/model.js";
import type { OutboxEntry } from "../src/outbox.js";
import { Replies } from "../src/replies.js";
import { annotationRequest, forSending } from "../src/requests.js";
import { BACKOFF_MS, isFinal } from "../src/retry.js";
import { LATE_ASK_MS, type Link, Samples, type Shelf } from "../src/samples.js";
import { MAX_TRIES, Updater } from "../src/updates.js";

const pb = hgen.v1;
const DEVICE = { device_id: "phone-1", secret: "s", bundle_name: "b", public_key: "", mqtt_url: null,
  mqtt_topic_prefix: "p", labour_share: null, min_escalation_interval_s: 0 };
const WALL0 = 1_700_000_000_000;

class MemoryShelf implements Shelf {
  readonly entries = new Map<string, OutboxEntry>();
  failReads = 0; // the next reads that fail (IndexedDB's error)
  async put(e: OutboxEntry) { this.entries.set(e.sampleId, e); }
  async take(id: string) { const e = this.entries.get(id); this.entries.delete(id); return e; }
  async read(ids: string[]) {
    if (this.failReads > 0) {
      this.failReads -= 1;
      throw Object.assign(new Error("The transaction was aborted"), { name: "UnknownError" });
    }
    return ids.map((i) => this.entries.get(i)).filter((e): e is OutboxEntry => !!e);
  }
}

/** A link that acknowledges every send at once. */
class Acking implements Link {
  connected = true;
  readonly sent: Uint8Array[] = [];
  async send(payload: Uint8Array) { this.sent.push(payload); }
}

function entry(sampleId: string, labour = 9): OutboxEntry {
  const payload = annotationRequest(DEVICE, { sampleId, png: new Uint8Array(100).fill(7), width: 1, height: 1,
    channels: 4, probabilities: [0.5, 0.5], confidence: 0.5, bundleName: "b", version: "0.1.0", m: 3,
    deadlineS: 600 }, WALL0);
  return { sampleId, payload, logits: [0, 1], top1: 1, labour, version: "0.1.0", storedAt: WALL0 };
}

function harness(ledger = new Ledger(), shelf = new MemoryShelf(), wall = WALL0) {
  const clock = { mono: 0, wall };
  const refunds: number[] = [];
  const link: { current: Link | null } = { current: null };
  const samples = new Samples(shelf, ledger, () => link.current, { refund: (l) => refunds.push(l),
    settled: () => undefined }, 1e6, { mono: () => clock.mono, wall: () => clock.wall });
  return { shelf, clock, refunds, link, samples };
}

function replies(samples: Samples, settles: [number, number][]) {
  return new Replies(samples, () => ({ params: { temperature: 1, fusionLambda: 1 }, labels: ["x", "y"], m: 3 }),
    { settle: (r, a) => settles.push([r, a]) }, { fused: () => undefined, pending: () => undefined });
}

test("a sample past its hub deadline stays until the hub's reply settles it, and is resent without its image", async () => {
  const { shelf, clock, refunds, link, samples } = harness();
  await samples.add(entry("a", 1000), 600);
  await samples.add(entry("b", 10), 600);
  clock.mono += 600_001; // offline through the deadline: people answered "a" meanwhile, its reply at the broker
  clock.wall += 600_001;
  await samples.tick(); // the page's timer, the link down: nothing settled
  assert.deepEqual(refunds, []);
  assert.equal(await samples.count(), 2);
  const up = new Acking();
  link.current = up;
  await samples.resend(); // the reconnect
  assert.equal(up.sent.length, 2, "both asked again");
  for (const payload of up.sent) {
    const request = pb.AnnotationRequest.decode(payload);
    assert.equal(request.samples[0].image!.data!.length, 0, "without its image");
    assert.equal(Number(request.deadline!.seconds), Number(request.sentAt!.seconds), "deadline = sent_at");
    assert.equal(request.samples[0].image!.width, 1, "the rest of the sample as stored");
  }
  assert.equal(samples.late, 2);
  const settles: [number, number][] = [];
  const r = replies(samples, settles);
  await r.handle(pb.SampleReply.create({ sampleId: "a", status: pb.ReplyStatus.REPLY_STATUS_ANSWERED, labour: 6,
    answers: [{ classId: 0 }, { classId: 0 }, { classId: 0 }] }));
  await r.handle(pb.SampleReply.create({ sampleId: "b", status: pb.ReplyStatus.REPLY_STATUS_EXPIRED, labour: 0 }));
  assert.equal(r.unknown, 0, "the queued ANSWERED reply finds its sample");
  assert.deepEqual(settles, [[1000, 6], [10, 0]], "people's labour charged; the EXPIRED one's refunded");
  assert.deepEqual(refunds, [], "nothing refunded on the phone");
});

test("a sample with time left is sent with its image and what is left of its deadline", () => {
  const request = pb.AnnotationRequest.decode(forSending(entry("a").payload, WALL0 + 100_000, 500));
  assert.equal(request.samples[0].image!.data!.length, 100);
  assert.equal(Number(request.deadline!.seconds) - Number(request.sentAt!.seconds), 500);
});

test("while connected, a sample long past its deadline (its reply lost) is asked again, at most every minute", async () => {
  const { clock, link, samples } = harness();
  const up = new Acking();
  link.current = up;
  await samples.add(entry("a"), 600);
  assert.equal(up.sent.length, 1);
  clock.mono += 600_000 + LATE_ASK_MS - 1;
  await samples.tick();
  assert.equal(up.sent.length, 1, "the hub's EXPIRED reply has a minute to come");
  clock.mono += 1;
  await samples.tick();
  assert.equal(up.sent.length, 2);
  assert.equal(pb.AnnotationRequest.decode(up.sent[1]).samples[0].image!.data!.length, 0);
  clock.mono += LATE_ASK_MS - 1;
  await samples.tick();
  assert.equal(up.sent.length, 2);
  clock.mono += 1;
  await samples.tick();
  assert.equal(up.sent.length, 3);
});

test("a resend the outbox failed to read is started again by the timer while connected", async () => {
  const { shelf, link, samples } = harness();
  for (const id of ["a", "b"]) await samples.add(entry(id), 600);
  const up = new Acking();
  link.current = up;
  shelf.failReads = 1;
  await assert.rejects(samples.resend(), /aborted/);
  assert.equal(up.sent.length, 0);
  up.connected = false;
  await samples.tick();
  assert.equal(up.sent.length, 0, "not while the link is down");
  up.connected = true;
  await samples.tick();
  assert.equal(up.sent.length, 2, "resent without a reconnect");
  await samples.tick();
  assert.equal(up.sent.length, 2, "once");
});

test("samples stored by an earlier page are settled with nothing reserved by this one", async () => {
  const bucket = new LabourBucket(0.01, 1000);
  const shelf = new MemoryShelf();
  const ledger = new Ledger({ maxSamples: 3, maxBytes: 1e9 });
  const listed = [];
  for (let i = 0; i < 3; i++) {
    const e = { ...entry(`old${i}`, 3_000), seq: i + 1, size: 10, deadlineS: 600 };
    shelf.entries.set(e.sampleId, e);
    listed.push({ sampleId: e.sampleId, seq: i + 1, size: 10, storedAt: WALL0, deadlineS: 600 });
  }
  ledger.load(listed, 0, WALL0 + 700_000);
  const samples = new Samples(shelf, ledger, () => null, { refund: (l) => bucket.settle(l, 0), settled: () => undefined },
    1e6, { mono: () => 0, wall: () => WALL0 + 700_000 });
  const full = bucket.tokens;
  await samples.add(entry("new", 5), 600); // the caps drop old0
  assert.equal(bucket.tokens, full, "old0's labour was never reserved here");
  const settles: [number, number][] = [];
  await replies(samples, settles).handle(pb.SampleReply.create({ sampleId: "old1",
    status: pb.ReplyStatus.REPLY_STATUS_ANSWERED, labour: 4, answers: [{ classId: 0 }] }));
  assert.deepEqual(settles, [[0, 4]], "people's labour charged, nothing refunded");
  await replies(samples, settles).handle(pb.SampleReply.create({ sampleId: "new",
    status: pb.ReplyStatus.REPLY_STATUS_EXPIRED, labour: 0 }));
  assert.deepEqual(settles.at(-1), [5, 0], "this page's own sample refunds what it reserved");
});

/** Timers the test runs by hand. */
function manualTimers() {
  const pending: (() => void)[] = [];
  return { pending, schedule: (fn: () => void) => { pending.push(fn); return () => undefined; } };
}
const flush = async () => { for (let i = 0; i < 20; i++) await Promise.resolve(); };

test("a hot swap refused (or failing its health check) is not tried again, nor on its next notice", async () => {
  for (const refusal of [new BundleRefusedError("signed as other 0.2.0"),
    Object.assign(new Error("bundle 0.2.0 fails the health check"), { final: true })]) {
    let tries = 0;
    const failed: (number | null)[] = [];
    const timers = manualTimers();
    const u = new Updater({ running: () => "0.1.0", install: async () => { tries++; throw refusal; },
      failed: (_v, _e, retryMs) => failed.push(retryMs), installed: () => undefined }, timers.schedule);
    u.announce("0.2.0");
    await flush();
    u.announce("0.2.0"); // the retained notice again, at the next connection
    await flush();
    assert.equal(tries, 1);
    assert.deepEqual(failed, [null]);
    assert.equal(timers.pending.length, 0);
  }
});

test("a hot swap failing on the network is tried MAX_TRIES times, then again on its next notice", async () => {
  let tries = 0;
  const failed: (number | null)[] = [];
  const timers = manualTimers();
  const u = new Updater({ running: () => "0.1.0", install: async () => { tries++; throw new TypeError("Failed to fetch"); },
    failed: (_v, _e, retryMs) => failed.push(retryMs), installed: () => undefined }, timers.schedule);
  u.announce("0.2.0");
  await flush();
  for (let n = 0; n < 100 && timers.pending.length > 0; n++) { // bounded: the old code retried for ever
    timers.pending.shift()!();
    await flush();
  }
  assert.equal(tries, MAX_TRIES);
  assert.equal(failed.at(-1), null);
  assert.equal(failed[0], BACKOFF_MS[0]);
  u.announce("0.2.0");
  await flush();
  assert.equal(tries, MAX_TRIES + 1);
});

test("a bundle failing its health check releases the engine just opened, and is final", async () => {
  let released = 0;
  const engine: Engine = { run: async () => new Float32Array([Number.NaN, 0]), release: async () => { released++; } };
  const manifest = { model: { name: "m", version: "0.2.0" }, temperature: 1, lambda: 1, confidence: {}, tau: 0.5,
    input: { shape: [1, 2, 2, 1] }, labels: ["x", "y"] } as unknown as Manifest;
  const error = await Model.ready(manifest, engine, 0).then(() => null, (e: unknown) => e);
  assert.match(String(error), /health check/);
  assert.ok(isFinal(error));
  assert.equal(released, 1);
  const good: Engine = { run: async () => new Float32Array([1, 0]), release: async () => { released++; } };
  assert.equal((await Model.ready(manifest, good, 0)).version, "0.2.0");
  assert.equal(released, 1);
});
