/**
 * A stored request is stamped again at each send (src/requests.ts), as the agent's `_request`: `sent_at` is the
 * time of the send, the deadline and the sample those of the escalation. The hub moves a deadline by its clock
 * minus `sent_at`: with the first `sent_at` kept, each resend read the sample's age as clock skew and pushed its
 * deadline out by it.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { type google, hgen } from "../gen/hub_pb.js";
import type { Provisioning } from "../src/provision.js";
import { annotationRequest, forSending } from "../src/requests.js";

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
  for (const later of [120_000, 1_800_000]) { // resent 2 and 30 minutes later, after reconnects
    const resent = pb.AnnotationRequest.decode(forSending(stored, escalated + later));
    assert.equal(seconds(resent.sentAt), (escalated + later) / 1000, "sent_at: the send");
    assert.equal(seconds(resent.deadline), escalated / 1000 + 600, "the original deadline");
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
