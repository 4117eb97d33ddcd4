/**
 * Device mode (/device): the phone is an hgen device. It loads the provisioned bundle (verified before parsing),
 * runs the H-DNN on every camera frame with onnxruntime-web, shows the model's answer, whether people were
 * asked and the fused answer. `window.hgenDevice` exposes the same state to tests and to the status telemetry.
 */

import { BundleRefusedError, type Manifest } from "./bundle.js";
import { Camera } from "./camera.js";
import { unsure } from "./familiarity.js";
import { type Decision, Gate, LabourBucket, toPeople } from "./gate.js";
import { HubLink } from "./hub.js";
import { type Inference, Model } from "./model.js";
import { Outbox } from "./outbox.js";
import { type Raster } from "./preprocess.js";
import * as provision from "./provision.js";
import { type FusedRecord, Replies } from "./replies.js";
import { annotationRequest, forSending } from "./requests.js";
import { isNewer, loadRefusal } from "./versions.js";
import type { hgen } from "../gen/hub_pb.js";

export interface FrameRecord {
  n: number;
  presented: number;
  captured: number; // its place among the frames the page captured (1, 2, ...): a gap is a dropped frame
  version: string;
  top1: number;
  label: string;
  confidence: number;
  toPeople: boolean; // c < tau
  unfamiliar: boolean; // outside the training images' input statistics: asked like a frame under tau
  decision: Decision | "no_hub" | "invalid"; // invalid: a logit not finite (neither gated, escalated nor fused)
  sampleId: string | null;
  inferMs: number; // the whole frame: preprocessing, engine, H-DNN math, gate
  runMs: number; // the engine alone
  doneAt: number; // performance.now() when the frame's answer was shown
  input?: number[];
  fullInput?: number[]; // with ?full=N, every Nth frame's whole model input (benchmarks replay it on the agent)
}

export type { FusedRecord } from "./replies.js";

export interface DeviceState {
  status: string;
  error: string | null;
  version: string | null;
  frames: FrameRecord[];
  fused: FusedRecord[];
  stored: string[];
  captured: number;
  dropped: number;
  invalid: number; // frames whose logits were not all finite
  replies: { duplicates: number; unknown: number; failures: number };
  firstOpenBytes: number;
  connected: boolean;
  pending: number;
  swaps: { from: string; to: string; atFrame: number }[];
  engine: string;
  pacing: Pacing;
  capture: Record<string, number>; // frames per capture path ("planes I420 bt601 limited", "canvas (...)")
}

/** live (real phones): a frame arriving while MAX_QUEUE wait is dropped (and counted), so answers follow the
 * camera; all (`?pacing=all`, tests): every captured frame is answered, in order, however far behind, as the agent's
 * `pacing: all`; waiting pixels are bounded by MAX_QUEUE_BYTES (a frame over it is dropped and counted). */
type Pacing = "live" | "all";
const MAX_QUEUE = 64;
const MAX_QUEUE_BYTES = 512 * 1024 * 1024; // minutes of a 640x480 camera, hours of a test's 56x56 video
const params = new URLSearchParams(location.search);
const pacing: Pacing = params.get("pacing") === "all" ? "all" : "live"; // live by default
const recordInputs = params.get("record") === "inputs";
const fullEvery = Math.max(0, Math.floor(Number(params.get("full") ?? 0)) || 0);
const runtime = params.get("engine") === "litert-js" ? "litert-js" : "onnxruntime-web"; // onnxruntime-web by default
const DEADLINE_S = 600;
const STATUS_EVERY_FRAMES = 100;
const state: DeviceState = { status: "starting", error: null, version: null, frames: [], fused: [], stored: [],
  captured: 0, dropped: 0, invalid: 0, replies: { duplicates: 0, unknown: 0, failures: 0 }, firstOpenBytes: 0,
  connected: false, pending: 0, swaps: [], engine: runtime, pacing, capture: {} };
(window as unknown as { hgenDevice: DeviceState }).hgenDevice = state;

function show(id: string, text: string): void {
  const element = document.getElementById(id);
  if (element !== null) element.textContent = text;
}

function setStatus(status: string, error: string | null = null): void {
  state.status = status;
  state.error = error;
  show("status", status);
  show("error", error ?? "");
  const shown = document.getElementById("error");
  if (shown !== null) shown.hidden = error === null;
  document.body.dataset.status = status;
}

/** What tests keep of a model input to match it to a video frame: all of a small input; of a large one (both
 * sides multiples of 16), the 16x16 block means of its first channel (`hgen.hub.testing.phone.input_signature`). */
function signature(input: Float32Array, shape: number[]): number[] {
  const [, height, width, channels] = shape;
  if (input.length <= 4096 || height % 16 !== 0 || width % 16 !== 0) return Array.from(input);
  const out = new Array<number>(256).fill(0);
  const bh = height / 16;
  const bw = width / 16;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) out[Math.floor(y / bh) * 16 + Math.floor(x / bw)] += input[(y * width + x) * channels];
  }
  return out.map((v) => v / (bh * bw));
}

async function png(frame: Raster): Promise<Uint8Array> {
  const canvas = new OffscreenCanvas(frame.width, frame.height);
  const context = canvas.getContext("2d")!;
  context.putImageData(new ImageData(new Uint8ClampedArray(frame.data), frame.width, frame.height), 0, 0);
  return new Uint8Array(await (await canvas.convertToBlob({ type: "image/png" })).arrayBuffer());
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
}

class Pipeline {
  private queue: { frame: Raster; presented: number; captured: number }[] = [];
  private queuedBytes = 0;
  private running = false;
  private retired: Model[] = [];
  private readonly replies: Replies;

  constructor(public model: Model, readonly device: provision.Provisioning, readonly gate: Gate,
    readonly outbox: Outbox, public link: HubLink | null) {
    this.replies = new Replies(outbox, () => ({ params: this.model.params, labels: this.model.manifest.labels,
      m: this.model.m }), gate.bucket, {
      fused: (record, labels) => {
        state.fused.push(record);
        const people = record.answers.map((a) => labels[a] ?? String(a)).join(", ") || "none";
        show("fused", `${labels[record.fused] ?? record.fused} (people: ${people})`);
      },
      pending: (count) => {
        state.pending = count;
      },
    });
  }

  offer(frame: Raster, presented: number): void {
    state.captured += 1;
    const full = pacing === "all" ? this.queuedBytes + frame.data.byteLength > MAX_QUEUE_BYTES
      : this.queue.length >= MAX_QUEUE;
    if (full) {
      state.dropped += 1;
      return;
    }
    this.queue.push({ frame, presented, captured: state.captured });
    this.queuedBytes += frame.data.byteLength;
    if (!this.running) void this.drain();
  }

  /** Hot swap: the next frame runs on `model`; the old engine is released after the frame in flight. */
  swap(model: Model): void {
    state.swaps.push({ from: this.model.version, to: model.version, atFrame: -1 }); // set by its first frame
    this.retired.push(this.model);
    this.model = model;
    state.version = model.version;
    provision.rememberVersion(this.device.bundle_name, model.version);
    show("model", `${model.manifest.model.name} ${model.version} (tau ${model.manifest.tau.toFixed(3)})`);
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const next = this.queue.shift()!;
        this.queuedBytes -= next.frame.data.byteLength;
        for (const old of this.retired.splice(0)) await old.engine.release();
        await this.process(next.frame, next.presented, next.captured);
      }
    } catch (error) {
      setStatus("failed", String(error instanceof Error ? error.message : error));
    } finally {
      this.running = false;
    }
  }

  private async process(frame: Raster, presented: number, captured: number): Promise<void> {
    const model = this.model; // a swap takes effect at the next frame, never inside one
    const started = performance.now();
    const result = await model.infer(frame);
    const isUnsure = unsure(result.toPeople, result.unfamiliar); // under tau, or unlike the training images
    const reserved = this.gate.bucket.reserve(result.labour, model.m); // the most m people can spend
    // without a hub link (no phones.mqtt_websocket_url) the model's answer stands: nothing waits forever; a frame
    // whose logits are not finite is invalid (its confidence is NaN): reported, never asked nor fused
    const decision = !result.valid ? "invalid" : this.link === null ? (isUnsure ? "no_hub" : "confident")
      : this.gate.decide(result.toPeople, result.unfamiliar, reserved, performance.now() / 1000);
    if (!result.valid) {
      state.invalid += 1;
      console.warn(`frame ${state.frames.length}: the model's outputs are not all finite: invalid`);
    }
    const inferMs = performance.now() - started;
    const sampleId = toPeople(decision) ? await this.escalate(model, frame, result, reserved) : null;
    const label = model.manifest.labels[result.top1];
    const record: FrameRecord = { n: state.frames.length, presented, captured, version: model.version,
      top1: result.top1, label, confidence: result.confidence, toPeople: result.toPeople,
      unfamiliar: result.unfamiliar, decision, sampleId, inferMs, runMs: result.runMs, doneAt: performance.now() };
    if (recordInputs) record.input = signature(result.input, model.manifest.input.shape);
    if (fullEvery > 0 && record.n % fullEvery === 0) record.fullInput = Array.from(result.input);
    const swapped = state.swaps.find((swap) => swap.atFrame < 0 && swap.to === model.version);
    if (swapped !== undefined) swapped.atFrame = state.frames.length; // a frame in flight at the swap ends on the old model
    state.frames.push(record);
    show("answer", result.valid ? `${label} (${(result.confidence * 100).toFixed(1)} %)` : "invalid (outputs not finite)");
    show("asked", sampleId ? (decision === "audit" ? "asked people (audit)" : "asked people") : decision === "confident" ? "model answer" : `model answer (${decision})`);
    show("frames", `${state.frames.length} frames, ${state.dropped} dropped, ${state.pending} waiting for people`);
    if (state.frames.length % STATUS_EVERY_FRAMES === 0) this.report();
  }

  /** Stored first, then sent: the outbox keeps it until its reply, across reloads and reconnects; with it, the
   * fusion parameters and classes of the model that made it (its reply is fused with them, whatever runs then). */
  private async escalate(model: Model, frame: Raster, result: Inference, reserved: number): Promise<string> {
    const sampleId = crypto.randomUUID();
    const payload = annotationRequest(this.device, { sampleId, png: await png(frame), width: frame.width,
      height: frame.height, channels: 4, probabilities: result.probabilities, confidence: result.confidence,
      bundleName: this.device.bundle_name, version: model.version, m: model.m, deadlineS: DEADLINE_S });
    state.pending = await this.outbox.put({ sampleId, payload, logits: Array.from(result.logits), top1: result.top1,
      labour: reserved, version: model.version, storedAt: Date.now(), temperature: model.params.temperature,
      fusionLambda: model.params.fusionLambda, labels: [...model.manifest.labels], m: model.m });
    state.stored.push(sampleId);
    this.link?.send(payload).catch(() => undefined); // sent_at is fresh; not connected: sent again on connect
    return sampleId;
  }

  /** Each resend stamps sent_at anew and keeps the stored deadline (requests.ts). */
  async resend(): Promise<void> {
    const entries = await this.outbox.all();
    for (const entry of entries) this.link?.send(forSending(entry.payload)).catch(() => undefined);
    state.pending = await this.outbox.count(); // counted after the snapshot: a sample stored meanwhile is in it
  }

  /** One at a time, each sample fused once (replies.ts); never rejects. */
  async reply(reply: hgen.v1.SampleReply): Promise<void> {
    await this.replies.handle(reply);
    state.replies = { duplicates: this.replies.duplicates, unknown: this.replies.unknown,
      failures: this.replies.failures };
  }

  report(): void {
    this.link?.status({ deviceId: this.device.device_id, online: true, bundleName: this.device.bundle_name,
      bundleVersion: this.model.version, at: { seconds: Math.floor(Date.now() / 1000), nanos: 0 },
      inferenceMsP50: median(state.frames.slice(-STATUS_EVERY_FRAMES).map((f) => f.inferMs)), battery: -1,
      pendingSamples: state.pending, metrics: { dropped_frames: state.dropped, frames: state.frames.length,
        frames_invalid: state.invalid } });
  }
}

/** Opened from the single-use link: keep what it gave and continue as the plain /device page. */
function adoptProvisioning(): boolean {
  const element = document.getElementById("provisioning");
  if (element === null) return false;
  provision.save(JSON.parse(element.dataset.json ?? "{}") as provision.Provisioning);
  location.replace("/device");
  return true;
}

async function main(): Promise<void> {
  if (adoptProvisioning()) return;
  if ("serviceWorker" in navigator) void navigator.serviceWorker.register("/device/sw.js", { scope: "/device" }).catch(() => undefined);
  const device = provision.load();
  if (device === null) {
    setStatus("not provisioned", "Open the single-use link from the hub's operator page to make this phone a device.");
    return;
  }
  show("device", device.device_id);
  setStatus("verifying bundle");
  let model: Model;
  let refusedOlder: string | null; // the hub's answer was older than the newest version run: refused, that one runs
  try {
    ({ model, refusedOlder } = await loadBundle(device));
  } catch (error) {
    const refused = error instanceof BundleRefusedError;
    setStatus(refused ? "bundle refused" : "bundle failed", String(error instanceof Error ? error.message : error));
    return;
  }
  state.version = model.version;
  provision.rememberVersion(device.bundle_name, model.version);
  state.firstOpenBytes = [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
    .reduce((sum, entry) => sum + ((entry as PerformanceResourceTiming).transferSize || 0), 0);
  show("model", `${model.manifest.model.name} ${model.version} (tau ${model.manifest.tau.toFixed(3)}, ${runtime})`);
  const outbox = await Outbox.open();
  state.pending = await outbox.count();
  const gate = new Gate(new LabourBucket(device.labour_share), device.min_escalation_interval_s,
    device.audit_share ?? 0, device.audit_seed ?? 0, device.unfamiliar_share ?? 1);
  const pipeline = new Pipeline(model, device, gate, outbox, null);
  if (device.mqtt_url) pipeline.link = connect(device, pipeline);
  else show("link", "no hub link configured (phones.mqtt_websocket_url): the model answers alone");
  const camera = new Camera(document.getElementById("camera") as HTMLVideoElement, params.get("capture") === "canvas");
  await camera.start({ width: Number(params.get("width") ?? 640), height: Number(params.get("height") ?? 480) });
  try {
    await navigator.wakeLock?.request("screen");
  } catch {
    // a wake lock is a convenience: streaming goes on without it (e.g. the page is not visible)
  }
  setStatus("streaming", refusedOlder === null ? null : `${refusedOlder}: refused; running ${model.version}`);
  camera.each((frame, presented) => {
    state.capture[camera.path] = (state.capture[camera.path] ?? 0) + 1;
    pipeline.offer(frame, presented);
  });
}

function connect(device: provision.Provisioning, pipeline: Pipeline): HubLink {
  let swapping: Promise<void> = Promise.resolve();
  return new HubLink(device, {
    onConnect: () => {
      state.connected = true;
      show("link", "connected");
      void pipeline.resend();
    },
    onOffline: () => {
      state.connected = false;
      show("link", "offline (samples wait in the outbox)");
    },
    onReply: (reply) => void pipeline.reply(reply), // queued: one at a time, errors logged (replies.ts)
    onUpdate: (update) => {
      swapping = swapping.then(() => hotSwap(device, pipeline, update));
    },
  });
}

/** Where the hub serves a bundle: `/device/bundle/<name>` (its newest), or one version of it. */
function bundleUrl(name: string, version?: string): string {
  const base = `/device/bundle/${encodeURIComponent(name)}`;
  return version === undefined ? base : `${base}/${encodeURIComponent(version)}`;
}

/** The provisioned bundle, as the hub serves it (`/device/bundle/<name>`): signed with the pinned key, of the
 * provisioned model, and not older than the newest version this phone has run (localStorage). When the hub (or the
 * service worker's copy, offline) gives an older one, the newest version run is asked for by name; if that fails
 * too the older one is refused, and the page says why. */
async function loadBundle(device: provision.Provisioning): Promise<{ model: Model; refusedOlder: string | null }> {
  const headers = { Authorization: `Bearer ${provision.bearer(device)}` };
  const key = provision.fromBase64(device.public_key);
  const highest = provision.highestVersion(device.bundle_name);
  const seen: { older: string | null } = { older: null }; // the first answer was older than `highest`
  const check = (manifest: Manifest) => {
    const refusal = loadRefusal(manifest, device.bundle_name, highest);
    if (refusal?.older) seen.older = refusal.message;
    if (refusal !== null) throw new BundleRefusedError(refusal.message);
  };
  try {
    return { model: await Model.fetch(bundleUrl(device.bundle_name), headers, key, runtime, check), refusedOlder: null };
  } catch (error) {
    const older = seen.older;
    if (older === null || highest === null) throw error;
    console.warn(`${older}: refused; asking for ${highest}`);
    try {
      return { model: await Model.fetch(bundleUrl(device.bundle_name, highest), headers, key, runtime, check),
        refusedOlder: older };
    } catch (again) {
      throw new BundleRefusedError(`${older}; ${highest} itself: ${again instanceof Error ? again.message : again}. `
        + "Publish a newer version, or onboard the phone again to run an older one");
    }
  }
}

/** Download, verify and open the new version beside the running one, then switch between two frames. */
async function hotSwap(device: provision.Provisioning, pipeline: Pipeline, update: hgen.v1.ModelUpdate): Promise<void> {
  if (update.bundleName !== device.bundle_name || !isNewer(update.version, pipeline.model.version)) return;
  try {
    const running = pipeline.model.manifest.model.name;
    const next = await Model.fetch(bundleUrl(update.bundleName, update.version),
      { Authorization: `Bearer ${provision.bearer(device)}` }, provision.fromBase64(device.public_key), runtime,
      (manifest) => { // an older signed bundle, or another model signed with the same key
        if (manifest.model.name !== running || manifest.model.version !== update.version) {
          throw new BundleRefusedError(`the bundle is signed as ${manifest.model.name} ${manifest.model.version}, not as ${running} ${update.version}`);
        }
      });
    pipeline.swap(next);
  } catch (error) {
    setStatus(state.status, `update ${update.version} refused: ${error instanceof Error ? error.message : error}`);
  }
}

void main().catch((error) => setStatus("failed", String(error instanceof Error ? error.message : error)));
