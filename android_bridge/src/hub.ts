/**
 * The phone's link to the hub: MQTT 5 over WebSockets to the hub's broker, the topics and protobuf messages of
 * every hgen device (docs/protocol.md): `<prefix>/<device>/samples` out (AnnotationRequest), `replies` and the
 * retained `updates` in, retained `status` out with the last will `online: false`. Clean start off and a session
 * expiry, so the broker keeps replies while the phone is away; the device's own id and secret log it in.
 */

import mqtt, { type MqttClient } from "mqtt";

import { hgen } from "../gen/hub_pb.js";
import { stamped } from "./agent.js";
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
    const will = pb.DeviceStatus.encode(stamped({ deviceId: device.device_id, online: false })).finish();
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
    // Samples in flight when the link drops are left to the page's outbox, not to mqtt.js: with a resumed session
    // it publishes them again, first thing, as they were (their first sent_at, which the hub reads as a clock that
    // far behind, and moves their deadline by); the outbox sends each again on connect, stamped anew (requests.ts).
    this.client.on("close", () => {
      for (const [id, message] of Object.entries(this.client.outgoing)) {
        if (message.cmd === "publish") this.client.removeOutgoingMessage(Number(id));
      }
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

  /** QoS 1: resolves on the broker's PUBACK; the caller keeps the sample in the outbox until its reply. Refused
   * while the link is down (mqtt.js would queue it and publish it later with its old sent_at): the outbox sends it
   * again on connect. */
  send(payload: Uint8Array): Promise<void> {
    if (!this.client.connected) return Promise.reject(new Error("not connected: sent again on connect"));
    return new Promise((resolve, reject) => {
      this.client.publish(this.topics.samples, payload as Buffer, { qos: 1 }, (error) => (error ? reject(error) : resolve()));
    });
  }

  status(status: hgen.v1.IDeviceStatus): void {
    if (this.client.connected) {
      this.client.publish(this.topics.status, pb.DeviceStatus.encode(stamped(status)).finish() as Buffer,
        { qos: 1, retain: true });
    }
  }

  end(): void {
    this.client.end(true);
  }

  /** For good (another tab took the device over): a clean MQTT DISCONNECT (so the broker publishes no last will
   * and the next page resumes the session), no reconnect. Publishes awaiting their acknowledgement are dropped
   * first: the outbox keeps every sample, and the next page sends them again. Resolves once the connection has
   * closed, or after `waitMs`. */
  stop(waitMs = 5_000): Promise<void> {
    for (const [id, message] of Object.entries(this.client.outgoing)) {
      if (message.cmd === "publish") this.client.removeOutgoingMessage(Number(id));
    }
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      this.client.end(!this.client.connected, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
