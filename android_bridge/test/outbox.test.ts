/**
 * The outbox's policy (src/ledger.ts, src/samples.ts) over an in-memory shelf standing for IndexedDB: held to its
 * caps (oldest dropped first, each drop counted and its labour given back), a store the browser refuses (its quota)
 * costs that sample only, counted and refunded, samples past their hub deadline settled on the phone, and a resend
 * that reads a page of images at a time, waits for that page's acknowledgements, stops when the link drops, and
 * never runs twice at once. Each request sent says what is left of its deadline.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { hgen } from "../gen/hub_pb.js";
import { Ledger, leftOf, type Limits } from "../src/ledger.js";
import type { OutboxEntry } from "../src/outbox.js";
import type { Provisioning } from "../src/provision.js";
import { annotationRequest } from "../src/requests.js";
import { type Link, RESEND_PAGE, Samples, type Shelf } from "../src/samples.js";

const pb = hgen.v1;
const DEVICE: Provisioning = { device_id: "phone-1", secret: "s", bundle_name: "b", public_key: "", mqtt_url: null,
  mqtt_topic_prefix: "hgen/devices", labour_share: null, min_escalation_interval_s: 0 };
const WALL0 = 1_700_000_000_000;

/** IndexedDB in memory; `full` makes puts fail as a browser over its quota does. */
class MemoryShelf implements Shelf {
  readonly entries = new Map<string, OutboxEntry>();
  readonly reads: string[][] = [];
  full = false;
  async put(entry: OutboxEntry): Promise<void> {
    if (this.full) throw Object.assign(new Error("The quota has been exceeded."), { name: "QuotaExceededError" });
    this.entries.set(entry.sampleId, entry);
  }
  async take(sampleId: string): Promise<OutboxEntry | undefined> {
    const entry = this.entries.get(sampleId);
    this.entries.delete(sampleId);
    return entry;
  }
  async read(sampleIds: string[]): Promise<OutboxEntry[]> {
    this.reads.push(sampleIds);
    return sampleIds.map((id) => this.entries.get(id)).filter((e): e is OutboxEntry => e !== undefined);
  }
}

/** A link whose acknowledgements the test gives (`ack`), or that drops (`drop`: every send in flight rejects). */
class ManualLink implements Link {
  connected = true;
  readonly sent: Uint8Array[] = [];
  private waiting: { resolve: () => void; reject: (e: Error) => void }[] = [];
  send(payload: Uint8Array): Promise<void> {
    this.sent.push(payload);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }
  get inFlight(): number {
    return this.waiting.length;
  }
  ack(): void {
    for (const w of this.waiting.splice(0)) w.resolve();
  }
  drop(): void {
    this.connected = false;
    for (const w of this.waiting.splice(0)) w.reject(new Error("Message removed"));
  }
}

function entry(sampleId: string, imageBytes = 100, labour = 9, now = WALL0): OutboxEntry {
  const payload = annotationRequest(DEVICE, { sampleId, png: new Uint8Array(imageBytes), width: 1, height: 1,
    channels: 4, probabilities: [0.5, 0.5], confidence: 0.5, bundleName: "b", version: "0.1.0", m: 3,
    deadlineS: 600 }, now);
  return { sampleId, payload, logits: [0, 1], top1: 1, labour, version: "0.1.0", storedAt: now };
}

function harness(limits: Limits = { maxSamples: 100, maxBytes: 1e9 }, maxPayload = 1e6) {
  const shelf = new MemoryShelf();
  const clock = { monoMs: 0, wallMs: WALL0 };
  const refunds: number[] = [];
  const settled: [string, string][] = [];
  const link: { current: ManualLink | null } = { current: null };
  const samples = new Samples(shelf, new Ledger(limits), () => link.current, {
    refund: (labour) => refunds.push(labour),
    settled: (e, why) => settled.push([e.sampleId, why]),
  }, maxPayload, { mono: () => clock.monoMs, wall: () => clock.wallMs });
  return { shelf, clock, refunds, settled, link, samples };
}

/** Lets pending promise callbacks run (no timers: the harness's clock is the test's). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

test("the outbox is held to its count: the oldest go first, each counted and its labour given back", async () => {
  const { shelf, refunds, settled, samples } = harness({ maxSamples: 3, maxBytes: 1e9 });
  for (let i = 0; i < 5; i++) assert.equal(await samples.add(entry(`s${i}`, 100, 10 + i), 600), "stored");
  assert.deepEqual([...shelf.entries.keys()], ["s2", "s3", "s4"]);
  assert.equal(await samples.count(), 3);
  assert.equal(samples.droppedOldest, 2);
  assert.deepEqual(refunds, [10, 11], "the dropped samples' reserved labour");
  assert.deepEqual(settled, [["s0", "dropped"], ["s1", "dropped"]]);
});

test("the outbox is held to its bytes, counted from the samples it holds", async () => {
  const one = entry("a", 1000).payload.byteLength + 16; // sizeOf: the request and 2 logits
  const { shelf, samples } = harness({ maxSamples: 100, maxBytes: 3 * one });
  for (const id of ["a", "b", "c", "d"]) await samples.add(entry(id, 1000), 600);
  assert.deepEqual([...shelf.entries.keys()], ["b", "c", "d"]);
  assert.equal(samples.ledger.bytes, 3 * one);
  await samples.take("c");
  assert.equal(samples.ledger.bytes, 2 * one, "a reply's take gives its bytes back");
});

test("a sample larger than one message, or than the outbox, is refused before it is stored", async () => {
  const { shelf, refunds, samples } = harness({ maxSamples: 100, maxBytes: 5000 }, 2000);
  assert.equal(await samples.add(entry("big", 3000, 7), 600), "oversize", "over the message cap");
  const cap = harness({ maxSamples: 100, maxBytes: 500 });
  assert.equal(await cap.samples.add(entry("huge", 1000, 7), 600), "oversize", "over the outbox cap");
  assert.equal(shelf.entries.size + cap.shelf.entries.size, 0);
  assert.deepEqual(refunds, [7]);
  assert.equal(samples.droppedOversize + cap.samples.droppedOversize, 2);
});

test("a store the browser refuses (its quota) costs that sample only: counted, refunded, named, then recovered", async () => {
  const { shelf, refunds, samples, link } = harness();
  link.current = new ManualLink();
  shelf.full = true;
  assert.equal(await samples.add(entry("a", 100, 9), 600), "no_storage");
  assert.equal(await samples.add(entry("b", 100, 9), 600), "no_storage");
  assert.equal(samples.noStorage, 2);
  assert.deepEqual(refunds, [9, 9], "the frames' reserved labour given back");
  assert.match(samples.storageError ?? "", /^QuotaExceededError/);
  assert.equal(link.current.sent.length, 0, "nothing sent that is not stored");
  assert.equal(await samples.count(), 0);
  shelf.full = false;
  assert.equal(await samples.add(entry("c"), 600), "stored");
  assert.equal(samples.storageError, null, "the next stored sample clears it");
  assert.equal(link.current.sent.length, 1, "stored, then sent");
});

test("samples past their hub deadline stay (monotonic clock) and are resent without their image", async () => {
  const { clock, refunds, settled, samples, link } = harness();
  await samples.add(entry("old", 100, 5), 600);
  clock.monoMs += 300_000;
  await samples.add(entry("new", 100, 6), 600);
  clock.wallMs -= 86_400_000; // the wall clock set back a day: no deadline moves
  clock.monoMs += 300_001;
  await samples.tick(); // no link: nothing settled on the phone (the hub's reply may be on its way)
  assert.deepEqual(settled, []);
  assert.deepEqual(refunds, []);
  link.current = new ManualLink();
  const resent = samples.resend();
  await settle();
  link.current.ack();
  await resent;
  assert.equal(link.current.sent.length, 2);
  const [old, fresh] = link.current.sent.map((p) => pb.AnnotationRequest.decode(p));
  assert.equal(old.samples[0].sampleId, "old");
  assert.equal(old.samples[0].image!.data!.length, 0, "past its deadline: without its image");
  assert.equal(Number(old.deadline!.seconds), Number(old.sentAt!.seconds), "its deadline is sent_at");
  assert.equal(fresh.samples[0].sampleId, "new");
  assert.equal(fresh.samples[0].image!.data!.length, 100);
  const left = Number(fresh.deadline!.seconds) - Number(fresh.sentAt!.seconds);
  assert.ok(Math.abs(left - 300) <= 1, `sent with what is left of its deadline: ${left} s`);
  assert.equal(samples.late, 1);
});

test("a reopened outbox reads what is left of each deadline from the wall clock, held to [0, deadline]", () => {
  assert.equal(leftOf(600, WALL0, WALL0 + 100_000), 500);
  assert.equal(leftOf(600, WALL0, WALL0 + 3_600_000), 0, "the clock set forward an hour");
  assert.equal(leftOf(600, WALL0, WALL0 - 86_400_000), 600, "set back a day: not a day more");
  const ledger = new Ledger();
  ledger.load([{ sampleId: "b", seq: 2, size: 10, storedAt: WALL0, deadlineS: 600 },
    { sampleId: "a", seq: 1, size: 5, storedAt: WALL0 - 700_000, deadlineS: 600 }], 50_000, WALL0 + 100_000);
  assert.deepEqual(ledger.ids(), ["a", "b"], "in line");
  assert.equal(ledger.bytes, 15);
  assert.deepEqual(ledger.due(50_000), ["a"]);
  assert.equal(ledger.leftS("b", 50_000), 500);
  assert.equal(ledger.nextSeq(), 3, "new samples after the stored ones");
});

test("a resend reads one page of images at a time and waits for its acknowledgements before the next", async () => {
  const { shelf, samples, link } = harness();
  for (let i = 0; i < 70; i++) await samples.add(entry(`s${String(i).padStart(2, "0")}`), 600);
  const manual = new ManualLink();
  link.current = manual;
  const done = samples.resend();
  await settle();
  assert.equal(shelf.reads.length, 1);
  assert.equal(shelf.reads[0].length, RESEND_PAGE);
  assert.equal(manual.inFlight, RESEND_PAGE);
  await settle();
  assert.equal(shelf.reads.length, 1, "the next page waits for the acknowledgements");
  manual.ack();
  await settle();
  assert.equal(shelf.reads.length, 2);
  manual.ack();
  await settle();
  manual.ack();
  await done;
  assert.deepEqual(shelf.reads.map((r) => r.length), [32, 32, 6]);
  assert.equal(manual.sent.length, 70);
  assert.equal(pb.AnnotationRequest.decode(manual.sent[0]).samples[0].sampleId, "s00", "oldest first");
});

test("a resend stops when the link drops, and one started meanwhile takes over (one at a time)", async () => {
  const { shelf, samples, link } = harness();
  for (let i = 0; i < 100; i++) await samples.add(entry(`s${i}`), 600);
  const manual = new ManualLink();
  link.current = manual;
  const first = samples.resend();
  await settle();
  manual.drop(); // the page's sends reject; no more pages read
  await first;
  assert.equal(shelf.reads.length, 1);
  manual.connected = true; // reconnected: a new resend; another reconnect asks again before it ends
  const second = samples.resend();
  await settle();
  assert.equal(shelf.reads.length, 2, "the second reads its first page");
  const third = samples.resend();
  await settle();
  assert.equal(shelf.reads.length, 2, "the third waits for the second");
  manual.ack();
  await second;
  assert.equal(shelf.reads.length, 2, "the second stopped: the third takes over");
  for (let page = 0; page < 4; page++) {
    await settle();
    manual.ack();
  }
  await third;
  assert.deepEqual(shelf.reads.slice(2).map((r) => r.length), [32, 32, 32, 4], "the third reads all, a page at a time");
});
