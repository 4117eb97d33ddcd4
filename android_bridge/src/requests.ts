/**
 * The phone's AnnotationRequest (one sample each, docs/protocol.md): made once at escalation and stored in the
 * outbox, and stamped again at every send. The hub moves a request's deadline by the device clock's offset, which it
 * reads as its own time minus `sent_at` (hub.validation.request_deadline): a stored request sent again later with
 * its first `sent_at` looked like a clock that far behind, and got its deadline pushed out by its age at each
 * resend. As the agent's `_request`, each send says when it was sent, and its deadline is `sent_at` plus what is
 * left of the sample's deadline: the first absolute deadline, resent after the phone's clock was set (NTP, the
 * user), was hours away or long past for the hub.
 */

import { hgen } from "../gen/hub_pb.js";
import { leftOf } from "./ledger.js";
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

function ms(at: hgen.v1.AnnotationRequest["sentAt"]): number {
  return Number(at?.seconds ?? 0) * 1000 + Math.floor(Number(at?.nanos ?? 0) / 1e6);
}

/** A stored request as sent now (`now` in ms): `sent_at` is now, its deadline `leftS` seconds later; the capture
 * time and the sample are those stored at escalation. `leftS`: what is left of the sample's deadline (the page
 * follows it on the monotonic clock, ledger.ts); without it, read from the request itself (its deadline's span
 * after its capture time, begun then), held to [0, that span] whatever the wall clock did meanwhile. With nothing
 * left, the image's data is cleared and the deadline is `sent_at`: the hub answers with the reply it holds, else
 * EXPIRED, and stores no image (the agent's `_sample`). */
export function forSending(stored: Uint8Array, now: number = Date.now(), leftS?: number): Uint8Array {
  const request = pb.AnnotationRequest.decode(stored);
  const captured = ms(request.samples[0]?.capturedAt ?? request.sentAt);
  const left = leftS ?? leftOf(Math.max(0, (ms(request.deadline) - captured) / 1000), captured, now);
  request.sentAt = stamp(now);
  request.deadline = stamp(now + Math.max(0, left) * 1000);
  if (!(left > 0)) { // past its deadline: nobody will look at it, so its image stays home (the agent's `_sample`)
    for (const sample of request.samples) if (sample.image) sample.image.data = new Uint8Array(0);
  }
  return pb.AnnotationRequest.encode(request).finish();
}

/** When the hub's provisioning does not say how large one message may be: 1 MiB, EMQX's default packet cap and an
 * eighth of the hub's default `mqtt.max_payload_bytes` (Mosquitto sets none). A 640x480 frame's PNG is ~100-600 KB;
 * only a noisy one (up to 1.2 MB) is halved (`fitted`). */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

/** The request for a sample made by `build(scale)` (its image scaled by `scale`), halved until the whole message
 * fits in `maxBytes` (at most `halvings` times): a message over the broker's or the hub's cap is refused there,
 * unanswered, and waits out its deadline. Null when even the smallest image does not fit. */
export async function fitted(build: (scale: number) => Promise<Uint8Array>, maxBytes: number,
  halvings = 3): Promise<{ payload: Uint8Array; scale: number } | null> {
  for (let scale = 1, n = 0; n <= halvings; n++, scale /= 2) {
    const payload = await build(scale);
    if (payload.byteLength <= maxBytes) return { payload, scale };
  }
  return null;
}
