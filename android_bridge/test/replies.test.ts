/**
 * Replies on the phone (src/replies.ts), as the agent's `hgen.edge_agent.replies`: fused with the parameters and
 * classes of the model that made the sample, labour held to what m people can spend, answers of classes the model
 * lacks dropped, a bad reply never wedging its sample, copies of one reply fused once, the pending count read from
 * the outbox. Pure: an in-memory outbox stands for IndexedDB.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { hgen } from "../gen/hub_pb.js";
import { Gate, LabourBucket, reportedLabour } from "../src/gate.js";
import * as hdnn from "../src/hdnn.js";
import type { OutboxEntry } from "../src/outbox.js";
import { classAnswers, type FusedRecord, type Fusion, fuseReply, fusionOf, Replies } from "../src/replies.js";

const pb = hgen.v1;
const LABELS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
// the review's bundles: 0.1.0 (T 1, lambda 0.4) made the sample; 0.2.0 (T 0.5, lambda 0.05) runs when it is answered
const V1: Fusion = { params: { temperature: 1, fusionLambda: 0.4 }, labels: LABELS, m: 3 };
const V2: Fusion = { params: { temperature: 0.5, fusionLambda: 0.05 }, labels: LABELS.map((l) => `v2-${l}`), m: 3 };
// top-1 is 5 with a clear margin: three votes for 6 win with lambda 0.4, not with 0.05 at T 0.5
const LOGITS = [0, 0, 0, 0, 0, 3, 1.5, 0, 0, 0];

function entry(sampleId: string, own: Fusion | null = V1): OutboxEntry {
  const base: OutboxEntry = { sampleId, payload: new Uint8Array(), logits: LOGITS, top1: 5, labour: 4.5,
    version: "0.1.0", storedAt: 0 };
  return own === null ? base : { ...base, temperature: own.params.temperature, fusionLambda: own.params.fusionLambda,
    labels: own.labels, m: own.m };
}

function reply(sampleId: string, classes: number[], labour = 3, status = pb.ReplyStatus.REPLY_STATUS_ANSWERED) {
  return pb.SampleReply.decode(pb.SampleReply.encode({ sampleId, deviceId: "phone", replyId: `r-${sampleId}`,
    status, labour, answers: classes.map((classId, i) => ({ sampleId, classId, annotatorId: `a${i}` })) }).finish());
}

/** The outbox in memory; `take` waits a turn between its read and its delete, as IndexedDB answers later. */
class MemoryStore {
  readonly entries = new Map<string, OutboxEntry>();
  constructor(...stored: OutboxEntry[]) {
    for (const e of stored) this.entries.set(e.sampleId, e);
  }
  async take(sampleId: string): Promise<OutboxEntry | undefined> {
    await new Promise((resolve) => setTimeout(resolve, 1));
    const found = this.entries.get(sampleId);
    this.entries.delete(sampleId);
    return found;
  }
  async count(): Promise<number> {
    await new Promise((resolve) => setTimeout(resolve, 1));
    return this.entries.size;
  }
}

function harness(store: MemoryStore, running: Fusion = V2) {
  const fused: { record: FusedRecord; labels: string[] }[] = [];
  const pending: number[] = [];
  const settled: [number, number][] = [];
  const bucket = { settle: (estimate: number, actual: number) => settled.push([estimate, actual]) };
  const replies = new Replies(store, () => running, bucket, {
    fused: (record, labels) => fused.push({ record, labels }),
    pending: (n) => pending.push(n),
  });
  return { replies, fused, pending, settled };
}

test("a reply is fused with the parameters and classes of the model that made the sample, not the running one", async () => {
  assert.equal(hdnn.fuse(LOGITS, [6, 6, 6], V1.params), 6, "the fixture: 0.1.0's parameters let people win");
  assert.equal(hdnn.fuse(LOGITS, [6, 6, 6], V2.params), 5, "the fixture: 0.2.0's do not");
  const { replies, fused } = harness(new MemoryStore(entry("made-by-v1")), V2);
  await replies.handle(reply("made-by-v1", [6, 6, 6]));
  assert.equal(fused.length, 1);
  assert.equal(fused[0].record.fused, 6);
  assert.deepEqual(fused[0].labels, LABELS, "named with the sample's model's classes");
  assert.equal(fused[0].record.version, "0.1.0");
});

test("an outbox entry stored without its model's parameters falls back to the running model", () => {
  assert.deepEqual(fusionOf(entry("old", null), V2), V2);
  assert.deepEqual(fusionOf(entry("new", V1), V2), V1);
  assert.equal(fuseReply(entry("old", null), reply("old", [6, 6, 6]), fusionOf(entry("old", null), V2)).fused, 5);
});

test("a reply's labour is held as the agent's reported_labour", () => {
  assert.equal(reportedLabour(1e12, 4.5, 3), 9, "capped at m x MAX_OPERATIONS");
  assert.equal(reportedLabour(NaN, 4.5, 3), 4.5, "NaN: the estimate");
  assert.equal(reportedLabour(Infinity, 4.5, 3), 4.5);
  assert.equal(reportedLabour(-1, 4.5, 3), 4.5);
  assert.equal(reportedLabour(2, 4.5, 3), 2);
  assert.equal(reportedLabour(10, 4.5, 0), 3, "m below 1 counts as 1");
  assert.equal(reportedLabour(10, 4.5, NaN), 3);
  // the review's repro: after a hostile reply the gate goes on asking people as without it
  for (const hostile of [1e12, NaN]) {
    const baseline = new Gate(new LabourBucket(0.1), 0);
    const gate = new Gate(new LabourBucket(0.1), 0);
    for (const g of [baseline, gate]) g.decide(true, false, 2, 0);
    gate.bucket.settle(2, reportedLabour(hostile, 2, 3));
    baseline.bucket.settle(2, 2);
    let asked = 0;
    let expected = 0;
    for (let i = 1; i <= 1000; i++) {
      if (gate.decide(true, false, 2, i) === "escalate") asked++;
      if (baseline.decide(true, false, 2, i) === "escalate") expected++;
    }
    assert.ok(Number.isFinite(gate.bucket.tokens), `labour ${hostile}: tokens ${gate.bucket.tokens}`);
    assert.ok(asked > 0 && asked < 1000 && Math.abs(asked - expected) <= 5, `labour ${hostile}: ${asked} vs ${expected}`);
  }
});

test("the settled labour goes through reportedLabour with the sample's m", async () => {
  const { replies, settled } = harness(new MemoryStore(entry("a"), entry("b")));
  await replies.handle(reply("a", [1], 1e12));
  await replies.handle(reply("b", [1], NaN));
  assert.deepEqual(settled, [[4.5, 9], [4.5, 4.5]]);
});

test("answers naming a class the model does not have are dropped, the rest fused", async () => {
  assert.deepEqual(classAnswers(reply("x", [99, 2, 2, 10, 9]), 10), [2, 2, 9]);
  const { replies, fused, pending } = harness(new MemoryStore(entry("b"), entry("c")));
  await replies.handle(reply("b", [99, 2, 2]));
  assert.equal(fused.length, 1);
  assert.deepEqual(fused[0].record.answers, [2, 2]);
  assert.equal(fused[0].record.fused, hdnn.fuse(LOGITS, [2, 2], V1.params));
  assert.deepEqual(pending, [1], "the sample left the outbox");
});

test("a reply that cannot be fused is logged, its sample leaves the outbox, the next reply is handled", async () => {
  const broken = { ...entry("broken"), temperature: 0 }; // hdnn.probabilities throws on T = 0
  const store = new MemoryStore(broken, entry("next"));
  const { replies, fused } = harness(store);
  await replies.handle(reply("broken", [6]));
  await replies.handle(reply("next", [6, 6, 6]));
  assert.equal(replies.failures, 1);
  assert.equal(store.entries.size, 0, "not wedged in the outbox, resent for ever");
  assert.equal(fused[0].record.fused, 5, "the model's answer stands");
  assert.match(fused[0].record.error ?? "", /temperature/);
  assert.equal(fused[1].record.fused, 6);
  // a store failing is caught too: handle() never rejects
  const failing = { take: async () => { throw new Error("IndexedDB is gone"); }, count: async () => 0 };
  const lonely = new Replies(failing, () => V1, { settle: () => undefined }, { fused: () => undefined, pending: () => undefined });
  await lonely.handle(reply("z", [1]));
  assert.equal(lonely.failures, 1);
});

test("copies of one reply arriving together are fused once; the pending count is read from the outbox", async () => {
  const ids = ["s1", "s2", "s3", "s4", "s5"];
  const store = new MemoryStore(...ids.map((id) => entry(id)), entry("unanswered"));
  const { replies, fused, pending, settled } = harness(store);
  const all: Promise<void>[] = [];
  for (const id of ids) for (let copy = 0; copy < 3; copy++) all.push(replies.handle(reply(id, [1, 1, 1])));
  await Promise.all(all);
  assert.deepEqual(fused.map((f) => f.record.sampleId), ids, "each sample once, in order");
  assert.equal(settled.length, ids.length, "labour settled once per sample");
  assert.equal(replies.duplicates, 10);
  assert.deepEqual(pending, [5, 4, 3, 2, 1]);
  // a copy after the recent ids are forgotten finds nothing in the outbox: still not fused again
  await replies.handle(reply("s1", [1, 1, 1]));
  assert.equal(fused.length, ids.length);
});

test("the recent ids are bounded", async () => {
  const ids = Array.from({ length: 20 }, (_, i) => `k${i}`);
  const store = new MemoryStore(...ids.map((id) => entry(id)));
  const replies = new Replies(store, () => V1, { settle: () => undefined },
    { fused: () => undefined, pending: () => undefined }, 5);
  for (const id of ids) await replies.handle(reply(id, [1]));
  await replies.handle(reply("k19", [1]));
  await replies.handle(reply("k0", [1]));
  assert.equal(replies.duplicates, 1, "k19 is recent");
  assert.equal(replies.unknown, 1, "k0 was forgotten, and is not in the outbox either");
});

test("the bucket reserves what m people can spend at most, or the learned estimate above it", () => {
  const bucket = new LabourBucket(0.1, 100);
  assert.equal(bucket.reserve(4, 3), 9); // a class sample: m x MAX_OPERATIONS, so a late reply never overspends
  for (let i = 0; i < 200; i++) bucket.settle(bucket.reserve(30, 3), 45); // people spend 1.5 x the estimate
  assert.ok(Math.abs(bucket.reserve(30, 3) - 45) < 2.5, String(bucket.reserve(30, 3)));
  for (let i = 0; i < 200; i++) bucket.settle(bucket.reserve(30, 3), 20);
  assert.equal(bucket.reserve(30, 3), 30);
  bucket.settle(30, 0); // nobody answered: says nothing of the ratio
  assert.equal(bucket.scale, 1);
});
