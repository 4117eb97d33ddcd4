/**
 * The phone's AnnotationRequest (one sample each, docs/protocol.md): made once at escalation and stored in the
 * outbox, and stamped again at every send. The hub moves a request's deadline by the device clock's offset, which it
 * reads as its own time minus `sent_at` (hub.validation.request_deadline): a stored request sent again later with
 * its first `sent_at` looked like a clock that far behind, and got its deadline pushed out by its age at each
 * resend. As the agent's `_request`, each send says when it was sent and keeps the ORIGINAL deadline.
 */

import { hgen } from "../gen/hub_pb.js";
import { type Provisioning } from "./provision.js";

const pb = hgen.v1;

function stamp(ms: number): { seconds: number; nanos: number } {
  const whole = Math.floor(ms);
  return { seconds: Math.floor(whole / 1000), nanos: (whole % 1000) * 1e6 };
}

/** One sample (the frame as PNG, the model's probabilities) in its own AnnotationRequest; `now` in ms. */
export function annotationRequest(device: Provisioning, sample: {
  sampleId: string; png: Uint8Array; width: number; height: number; channels: number; probabilities: ArrayLike<number>;
  confidence: number; bundleName: string; version: string; m: number; deadlineS: number;
}, now: number = Date.now()): Uint8Array {
  return pb.AnnotationRequest.encode({
    batchId: sample.sampleId, deviceId: device.device_id, annotatorsWanted: sample.m,
    deadline: stamp(now + sample.deadlineS * 1000), sentAt: stamp(now), // the hub reads the deadline against it
    samples: [{
      sampleId: sample.sampleId, deviceId: device.device_id, bundleName: sample.bundleName,
      bundleVersion: sample.version, capturedAt: stamp(now),
      image: { format: pb.ImageFormat.IMAGE_FORMAT_PNG, data: sample.png, height: sample.height, width: sample.width,
        channels: sample.channels },
      output: { classProbabilities: Array.from(sample.probabilities), confidence: sample.confidence,
        kind: pb.HdnnKind.HDNN_KIND_CNN },
    }],
  }).finish();
}

/** A stored request as sent now (`now` in ms): `sent_at` is now; the deadline, the capture time and the sample are
 * those stored at escalation. Also for the outbox entries stored before this stamping existed. */
export function forSending(stored: Uint8Array, now: number = Date.now()): Uint8Array {
  const request = pb.AnnotationRequest.decode(stored);
  request.sentAt = stamp(now);
  return pb.AnnotationRequest.encode(request).finish();
}
