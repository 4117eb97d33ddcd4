/**
 * A stored request is stamped again at each send (src/requests.ts), as the agent's `_request`: `sent_at` is the
 * time of the send, the deadline what is left of the sample's (never more than it was, never negative, whatever
 * the phone's clock did), the sample that of the escalation. The hub moves a deadline by its clock minus
 * `sent_at`: with the first `sent_at` kept, each resend read the sample's age as clock skew and pushed its deadline
 * out by it; with the first absolute deadline kept, a clock set since made it hours away or long past. A request
 * too large for one message is made again with its image halved (`fitted`).
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { type google, hgen } from "../gen/hub_pb.js";
import type { Provisioning } from "../src/provision.js";
import { annotationRequest, fitted, forSending, MAX_PAYLOAD_BYTES } from "../src/requests.js";

const pb = hgen.v1;
const DEVICE: Provisioning = { device_id: "phone-1", secret: "s", bundle_name: "lenet5-digits", public_key: "",
  mqtt_url: null, mqtt_topic_prefix: "hgen/devices", labour_share: null, min_escalation_interval_s: 0 };

function seconds(stamp: google.protobuf.ITimestamp | null | undefined): number {
  return Number(stamp?.seconds ?? NaN) + Number(stamp?.nanos ?? 0) / 1e9;
}

/** The hub's `request_deadline` (hub/validation.py): the device's deadline moved by its clock's offset. */
function hubDeadline(request: hgen.v1.AnnotationRequest, hubNow: number): number {
  return seconds(request.deadline) + (hubNow - seconds(request.sentAt));
}

test("a resent request says when it was sent and keeps its deadline", () => {
  const escalated = 1_700_000_000_000; // ms
  const stored = annotationRequest(DEVICE, { sampleId: "s-1", png: new Uint8Array([1, 2, 3]), width: 2, height: 2,
    channels: 4, probabilities: [0.25, 0.75], confidence: 0.75, bundleName: "lenet5-digits", version: "0.1.0", m: 3,
    deadlineS: 600 }, escalated);
  const first = pb.AnnotationRequest.decode(forSending(stored, escalated));
  assert.equal(seconds(first.sentAt), escalated / 1000);
  assert.equal(seconds(first.deadline), escalated / 1000 + 600);
  for (const later of [120_000, 540_000]) { // resent 2 and 9 minutes later, after reconnects
    const resent = pb.AnnotationRequest.decode(forSending(stored, escalated + later));
    assert.equal(seconds(resent.sentAt), (escalated + later) / 1000, "sent_at: the send");
    assert.equal(seconds(resent.deadline), escalated / 1000 + 600, "the same deadline: what is left of it");
    assert.equal(seconds(resent.samples[0].capturedAt), escalated / 1000, "captured when escalated");
    assert.equal(resent.samples[0].sampleId, "s-1");
    assert.deepEqual(Array.from(resent.samples[0].image!.data!), [1, 2, 3]);
    assert.equal(resent.annotatorsWanted, 3);
    // a hub with the phone's clock reads no offset: the deadline stays where it was, at every resend
    assert.equal(hubDeadline(resent, (escalated + later) / 1000), escalated / 1000 + 600);
    // the stored bytes as they were (the old resend) made the hub add the sample's age to its deadline
    const old = pb.AnnotationRequest.decode(stored);
    assert.equal(hubDeadline(old, (escalated + later) / 1000), escalated / 1000 + 600 + later / 1000);
  }
});

test("a resent request's deadline is what is left of it, whatever the phone's clock did", () => {
  const made = Date.UTC(2026, 0, 1);
  const stored = annotationRequest(DEVICE, { sampleId: "s", png: new Uint8Array(), width: 1, height: 1, channels: 4,
    probabilities: [1], confidence: 1, bundleName: "b", version: "1", m: 3, deadlineS: 600 }, made);
  const left = (at: number, leftS?: number) => {
    const sent = pb.AnnotationRequest.decode(forSending(stored, at, leftS));
    return seconds(sent.deadline) - seconds(sent.sentAt);
  };
  assert.equal(left(made + 1000), 599, "resent a second later");
  assert.equal(left(made + 1_800_000), 0, "past its deadline: nothing left");
  assert.equal(left(made + 3_600_000 + 1000), 0, "the clock set forward an hour");
  assert.equal(left(made - 86_400_000 + 1000), 600, "the clock set back a day: never more than the deadline");
  assert.equal(left(made - 86_400_000 + 1000, 123), 123, "the page's own count (monotonic) when it has one");
});

test("a request over the message cap is made again with its image halved, or refused", async () => {
  const scales: number[] = [];
  const build = async (scale: number) => {
    scales.push(scale);
    return new Uint8Array(Math.round(4_000_000 * scale * scale)); // a PNG shrinks with the area
  };
  assert.deepEqual(await fitted(build, MAX_PAYLOAD_BYTES).then((r) => r?.scale), 0.5);
  assert.deepEqual(scales, [1, 0.5]);
  assert.equal(await fitted(build, 10), null, "not even an eighth fits");
  assert.ok(MAX_PAYLOAD_BYTES <= 8 * 1024 * 1024, "never above the hub's default cap");
});
