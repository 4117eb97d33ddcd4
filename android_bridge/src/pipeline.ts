/**
 * The page's frame pipeline: each camera frame through the model, the H-DNN gate and, when people are asked, into
 * the outbox (samples.ts) and to the hub. Frames are answered one at a time; a frame that fails is counted and
 * shown, and the next one goes on (one failure once stopped the page for good, "failed", while frames kept coming).
 */

import { unsure } from "./familiarity.js";
import { Gate, toPeople } from "./gate.js";
import type { HubLink } from "./hub.js";
import type { Inference, Model } from "./model.js";
import type { OutboxEntry } from "./outbox.js";
import type { Raster } from "./preprocess.js";
import * as provision from "./provision.js";
import { keepRecent } from "./recent.js";
import { type FusedRecord, Replies, STATUS } from "./replies.js";
import { annotationRequest, fitted } from "./requests.js";
import type { Samples } from "./samples.js";
import { describe, type FrameRecord, options, setProblem, show, state } from "./state.js";
import type { hgen } from "../gen/hub_pb.js";

const MAX_QUEUE = 64;
const MAX_QUEUE_BYTES = 512 * 1024 * 1024; // minutes of a 640x480 camera, hours of a test's 56x56 video
export const DEADLINE_S = 600;
const STATUS_EVERY_FRAMES = 100;

/** The frame as people see it: PNG (RGBA), its sides times `scale` (1: as captured; less when the request must
 * shrink to fit one message). */
async function png(frame: Raster, scale = 1): Promise<{ data: Uint8Array; width: number; height: number }> {
  const full = new OffscreenCanvas(frame.width, frame.height);
  const pixels = new ImageData(new Uint8ClampedArray(frame.data), frame.width, frame.height);
  full.getContext("2d")!.putImageData(pixels, 0, 0);
  let canvas = full;
  if (scale < 1) {
    const side = (n: number) => Math.max(1, Math.round(n * scale));
    canvas = new OffscreenCanvas(side(frame.width), side(frame.height));
    const context = canvas.getContext("2d")!;
    context.imageSmoothingQuality = "high";
    context.drawImage(full, 0, 0, canvas.width, canvas.height);
  }
  const data = new Uint8Array(await (await canvas.convertToBlob({ type: "image/png" })).arrayBuffer());
  return { data, width: canvas.width, height: canvas.height };
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

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
}

/** A fused (or settled) sample into the page's window and totals. */
export function recordFused(record: FusedRecord, labels: string[]): void {
  keepRecent(state.fused, record, options.keep);
  state.totals.fused += 1;
  const people = record.answers.map((a) => labels[a] ?? String(a)).join(", ") || "none";
  show("fused", `${labels[record.fused] ?? record.fused} (people: ${people})`);
}

export class Pipeline {
  private queue: { frame: Raster; presented: number; captured: number }[] = [];
  private queuedBytes = 0;
  private running = false;
  private halted = false;
  private draining: Promise<void> = Promise.resolve();
  private retired: Model[] = [];
  private readonly replies: Replies;

  constructor(public model: Model, readonly device: provision.Provisioning, readonly gate: Gate,
    readonly samples: Samples, public link: HubLink | null) {
    this.replies = new Replies(samples, () => ({ params: this.model.params, labels: this.model.manifest.labels,
      m: this.model.m }), gate.bucket, {
      fused: recordFused,
      pending: () => this.counted(),
    });
  }

  offer(frame: Raster, presented: number): void {
    if (this.halted) return;
    state.captured += 1;
    const full = options.pacing === "all" ? this.queuedBytes + frame.data.byteLength > MAX_QUEUE_BYTES
      : this.queue.length >= MAX_QUEUE;
    if (full) {
      state.dropped += 1;
      return;
    }
    this.queue.push({ frame, presented, captured: state.captured });
    this.queuedBytes += frame.data.byteLength;
    if (!this.running) this.draining = this.drain();
  }

  /** For good (another tab took the device over): no frame is taken any more; resolves once the frame under way
   * is done (its sample stored), the frames waiting dropped. */
  async halt(): Promise<void> {
    this.halted = true;
    this.queue = [];
    this.queuedBytes = 0;
    await this.draining;
  }

  /** After `halt` and the link's end: resolves once the replies and resends under way have ended, every model's
   * engine released. */
  async close(): Promise<void> {
    await this.replies.idle();
    await this.samples.idle();
    for (const model of [...this.retired.splice(0), this.model]) await model.engine.release();
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
        try {
          for (const old of this.retired.splice(0)) await old.engine.release();
          await this.process(next.frame, next.presented, next.captured);
          setProblem("frame", null);
        } catch (error) {
          state.failed += 1;
          setProblem("frame", `a frame failed: ${describe(error)}`);
          console.error(`frame ${next.captured} failed: ${describe(error)}`);
        }
      }
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
    const n = state.totals.frames;
    let decision: FrameRecord["decision"] = !result.valid ? "invalid"
      : this.link === null ? (isUnsure ? "no_hub" : "confident")
        : this.gate.decide(result.toPeople, result.unfamiliar, reserved, performance.now() / 1000);
    if (!result.valid) {
      state.invalid += 1;
      console.warn(`frame ${n}: the model's outputs are not all finite: invalid`);
    }
    const inferMs = performance.now() - started;
    let sampleId: string | null = null;
    if (toPeople(decision)) {
      const stored = await this.escalate(model, frame, result, reserved);
      if (stored.outcome === "stored") sampleId = stored.sampleId;
      else decision = stored.outcome; // the model's answer stands, its labour given back (samples.ts)
    }
    const label = model.manifest.labels[result.top1];
    const record: FrameRecord = { n, presented, captured, version: model.version,
      top1: result.top1, label, confidence: result.confidence, toPeople: result.toPeople,
      unfamiliar: result.unfamiliar, decision, sampleId, inferMs, runMs: result.runMs, doneAt: performance.now() };
    if (options.recordInputs) record.input = signature(result.input, model.manifest.input.shape);
    if (options.fullEvery > 0 && n % options.fullEvery === 0) record.fullInput = Array.from(result.input);
    const swapped = state.swaps.find((swap) => swap.atFrame < 0 && swap.to === model.version);
    if (swapped !== undefined) swapped.atFrame = n; // a frame in flight at the swap ends on the old model
    keepRecent(state.frames, record, options.keep);
    state.totals.frames += 1;
    show("answer", result.valid ? `${label} (${(result.confidence * 100).toFixed(1)} %)` : "invalid (outputs not finite)");
    show("asked", sampleId ? (decision === "audit" ? "asked people (audit)" : "asked people") : decision === "confident" ? "model answer" : `model answer (${decision})`);
    this.counted();
    if (state.totals.frames % STATUS_EVERY_FRAMES === 0) this.report();
  }

  /** Stored first, then sent: the outbox keeps it until its reply (or its deadline), across reloads and
   * reconnects; with it, the fusion parameters and classes of the model that made it (its reply is fused with
   * them, whatever runs then). The image is halved until the request fits one message. */
  private async escalate(model: Model, frame: Raster, result: Inference,
    reserved: number): Promise<{ sampleId: string; outcome: "stored" | "no_storage" | "oversize" }> {
    const sampleId = crypto.randomUUID();
    let entry: OutboxEntry;
    let scale = 1;
    try {
      const request = await fitted(async (s) => {
        const image = await png(frame, s);
        return annotationRequest(this.device, { sampleId, png: image.data, width: image.width, height: image.height,
          channels: 4, probabilities: result.probabilities, confidence: result.confidence,
          bundleName: this.device.bundle_name, version: model.version, m: model.m, deadlineS: DEADLINE_S });
      }, this.samples.maxPayloadBytes);
      if (request === null) {
        this.samples.tooLarge(reserved); // counted, its labour back
        return { sampleId, outcome: "oversize" };
      }
      scale = request.scale;
      entry = this.entryOf(sampleId, request.payload, model, result, reserved);
    } catch (error) {
      this.gate.bucket.settle(reserved, 0); // never stored: its labour back
      throw error;
    }
    if (scale < 1) state.outbox.downscaled += 1;
    const outcome = await this.samples.add(entry, DEADLINE_S);
    setProblem("storage", this.samples.storageError === null ? null
      : `samples not stored (${this.samples.storageError}): the model's answers stand`);
    if (outcome === "stored") {
      keepRecent(state.stored, sampleId, options.keep);
      state.totals.stored += 1;
    }
    return { sampleId, outcome };
  }

  private entryOf(sampleId: string, payload: Uint8Array, model: Model, result: Inference,
    reserved: number): OutboxEntry {
    return { sampleId, payload, logits: Array.from(result.logits), top1: result.top1, labour: reserved,
      version: model.version, storedAt: Date.now(), temperature: model.params.temperature,
      fusionLambda: model.params.fusionLambda, labels: [...model.manifest.labels], m: model.m };
  }

  /** A timer calls it (frames may not come): a failed resend started again, late samples asked again without
   * their image (samples.ts `tick`). */
  async tick(): Promise<void> {
    await this.samples.tick();
    this.counted();
  }

  /** Each resend stamps sent_at anew, with what is left of each deadline (samples.ts). */
  async resend(): Promise<void> {
    await this.samples.resend();
    this.counted();
  }

  /** One at a time, each sample fused once (replies.ts); never rejects. */
  async reply(reply: hgen.v1.SampleReply): Promise<void> {
    await this.replies.handle(reply);
    state.replies = { duplicates: this.replies.duplicates, unknown: this.replies.unknown,
      failures: this.replies.failures };
  }

  /** A stored sample settled on the phone (the caps dropped it): the model's answer. */
  settled(entry: OutboxEntry, _why: "dropped"): void {
    recordFused({ sampleId: entry.sampleId, status: STATUS.REPLY_STATUS_EXPIRED, logits: entry.logits, answers: [],
      modelTop1: entry.top1, fused: entry.top1, version: entry.version, error: "dropped to make room in the outbox" },
    entry.labels ?? this.model.manifest.labels);
  }

  /** The outbox's counts into the page's state and text. */
  counted(): void {
    const samples = this.samples;
    Object.assign(state.outbox, { samples: samples.ledger.count, bytes: samples.ledger.bytes,
      noStorage: samples.noStorage, droppedOldest: samples.droppedOldest, droppedOversize: samples.droppedOversize,
      late: samples.late });
    state.pending = samples.ledger.count;
    show("frames", `${state.totals.frames} frames, ${state.dropped} dropped, ${state.pending} waiting for people`);
    const lost = samples.noStorage + samples.droppedOldest + samples.droppedOversize;
    show("outbox", `${state.pending} samples, ${(samples.ledger.bytes / 1e6).toFixed(1)} MB`
      + (lost ? `; ${lost} not kept (storage ${samples.noStorage}, room ${samples.droppedOldest}, size `
        + `${samples.droppedOversize})` : "") + (samples.late ? `; ${samples.late} sent past their deadline` : ""));
  }

  report(): void {
    const outbox = state.outbox;
    this.link?.status({ deviceId: this.device.device_id, online: true, bundleName: this.device.bundle_name,
      bundleVersion: this.model.version, at: { seconds: Math.floor(Date.now() / 1000), nanos: 0 },
      inferenceMsP50: median(state.frames.slice(-STATUS_EVERY_FRAMES).map((f) => f.inferMs)), battery: -1,
      pendingSamples: state.pending, metrics: { dropped_frames: state.dropped, frames: state.totals.frames,
        frames_invalid: state.invalid, frames_failed: state.failed, outbox_bytes: outbox.bytes,
        outbox_dropped: outbox.droppedOldest + outbox.droppedOversize, outbox_no_storage: outbox.noStorage,
        outbox_late: outbox.late, camera_restarts: state.cameraRestarts } });
  }
}
