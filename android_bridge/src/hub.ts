/**
 * The phone's link to the hub: MQTT 5 over WebSockets to the hub's broker, the topics and protobuf messages of
 * every hgen device (docs/protocol.md): `<prefix>/<device>/samples` out (AnnotationRequest), `replies` and the
 * retained `updates` in, retained `status` out with the last will `online: false`. Clean start off and a session
 * expiry, so the broker keeps replies while the phone is away; the device's own id and secret log it in.
 */

import mqtt, { type MqttClient } from "mqtt";

import { hgen } from "../gen/hub_pb.js";
import { type Provisioning } from "./provision.js";

const pb = hgen.v1;
export const SESSION_EXPIRY_S = 3600;

export interface HubEvents {
  onReply(reply: hgen.v1.SampleReply): void;
  onUpdate(update: hgen.v1.ModelUpdate): void;
  onConnect(): void;
  onOffline(): void;
}

export class HubLink {
  private readonly client: MqttClient;
  readonly topics: Record<"samples" | "replies" | "updates" | "status", string>;

  constructor(private readonly device: Provisioning, events: HubEvents) {
    const base = `${device.mqtt_topic_prefix}/${device.device_id}`;
    this.topics = { samples: `${base}/samples`, replies: `${base}/replies`, updates: `${base}/updates`,
      status: `${base}/status` };
    const will = pb.DeviceStatus.encode({ deviceId: device.device_id, online: false }).finish();
    this.client = mqtt.connect(device.mqtt_url ?? "", {
      protocolVersion: 5, clean: false, clientId: device.device_id, username: device.device_id,
      password: device.secret, reconnectPeriod: 1000, connectTimeout: 10_000, keepalive: 30,
      properties: { sessionExpiryInterval: SESSION_EXPIRY_S },
      will: { topic: this.topics.status, payload: will as Buffer, qos: 1, retain: true },
    });
    this.client.on("connect", () => {
      this.client.subscribe([this.topics.replies, this.topics.updates], { qos: 1 });
      events.onConnect();
    });
    this.client.on("offline", () => events.onOffline());
    this.client.on("message", (topic, payload) => {
      try {
        if (topic === this.topics.replies) events.onReply(pb.SampleReply.decode(payload));
        else if (topic === this.topics.updates) events.onUpdate(pb.ModelUpdate.decode(payload));
      } catch (error) {
        console.warn(`dropped a malformed message on ${topic}: ${error}`);
      }
    });
  }

  get connected(): boolean {
    return this.client.connected;
  }

  /** QoS 1: resolves on the broker's PUBACK; the caller keeps the sample in the outbox until its reply. */
  send(payload: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.publish(this.topics.samples, payload as Buffer, { qos: 1 }, (error) => (error ? reject(error) : resolve()));
    });
  }

  status(status: hgen.v1.IDeviceStatus): void {
    if (this.client.connected) {
      this.client.publish(this.topics.status, pb.DeviceStatus.encode(status).finish() as Buffer, { qos: 1, retain: true });
    }
  }

  end(): void {
    this.client.end(true);
  }
}

/** One sample (the frame as PNG, the model's probabilities) in its own AnnotationRequest. */
export function annotationRequest(device: Provisioning, sample: {
  sampleId: string; png: Uint8Array; width: number; height: number; channels: number; probabilities: ArrayLike<number>;
  confidence: number; bundleName: string; version: string; m: number; deadlineS: number;
}): Uint8Array {
  const now = Date.now();
  const stamp = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });
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

/** The class answers of a reply (people who answered; -1 never appears: declines carry no label). */
export function classAnswers(reply: hgen.v1.SampleReply): number[] {
  return (reply.answers as hgen.v1.Answer[]).filter((a) => a.label === "classId").map((a) => Number(a.classId));
}

export const STATUS = pb.ReplyStatus;
