/**
 * Device mode (/device): the phone is an hgen device. It loads the provisioned bundle (verified before parsing),
 * runs the H-DNN on every camera frame with onnxruntime-web, shows the model's answer, whether people were
 * asked and the fused answer. `window.hgenDevice` exposes the same state to tests and to the status telemetry.
 */

import { BundleRefusedError } from "./bundle.js";
import { Camera } from "./camera.js";
import { Model } from "./model.js";
import { type Raster } from "./preprocess.js";
import * as provision from "./provision.js";

export interface FrameRecord {
  n: number;
  presented: number;
  version: string;
  top1: number;
  label: string;
  confidence: number;
  toPeople: boolean;
  inferMs: number;
  input?: number[];
}

export interface DeviceState {
  status: string;
  error: string | null;
  version: string | null;
  frames: FrameRecord[];
  captured: number;
  dropped: number;
  firstOpenBytes: number;
}

const MAX_QUEUE = 64;
const params = new URLSearchParams(location.search);
const recordInputs = params.get("record") === "inputs";
const state: DeviceState = { status: "starting", error: null, version: null, frames: [], captured: 0, dropped: 0, firstOpenBytes: 0 };
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
  document.body.dataset.status = status;
}

class Pipeline {
  private queue: { frame: Raster; presented: number }[] = [];
  private running = false;

  constructor(public model: Model) {}

  offer(frame: Raster, presented: number): void {
    state.captured += 1;
    if (this.queue.length >= MAX_QUEUE) {
      state.dropped += 1;
      return;
    }
    this.queue.push({ frame, presented });
    if (!this.running) void this.drain();
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const next = this.queue.shift()!;
        await this.process(next.frame, next.presented);
      }
    } finally {
      this.running = false;
    }
  }

  private async process(frame: Raster, presented: number): Promise<void> {
    const model = this.model; // a swap takes effect at the next frame, never inside one
    const started = performance.now();
    const result = await model.infer(frame);
    const inferMs = performance.now() - started;
    const label = model.manifest.labels[result.top1];
    const record: FrameRecord = { n: state.frames.length, presented, version: model.version, top1: result.top1, label,
      confidence: result.confidence, toPeople: result.toPeople, inferMs };
    if (recordInputs) record.input = Array.from(result.input);
    state.frames.push(record);
    show("answer", `${label} (${(result.confidence * 100).toFixed(1)} %)`);
    show("asked", result.toPeople ? "asked people" : "model answer");
    show("frames", `${state.frames.length} frames, ${state.dropped} dropped, model ${model.version}`);
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
  try {
    model = await Model.fetch(`/device/bundle/${encodeURIComponent(device.bundle_name)}`,
      { Authorization: `Bearer ${provision.bearer(device)}` }, provision.fromBase64(device.public_key));
  } catch (error) {
    const refused = error instanceof BundleRefusedError;
    setStatus(refused ? "bundle refused" : "bundle failed", String(error instanceof Error ? error.message : error));
    return;
  }
  state.version = model.version;
  state.firstOpenBytes = performance.getEntriesByType("resource")
    .reduce((sum, entry) => sum + ((entry as PerformanceResourceTiming).transferSize || 0), 0);
  show("model", `${model.manifest.model.name} ${model.version} (tau ${model.manifest.tau.toFixed(3)})`);
  const pipeline = new Pipeline(model);
  const camera = new Camera(document.getElementById("camera") as HTMLVideoElement);
  await camera.start({ width: Number(params.get("width") ?? 640), height: Number(params.get("height") ?? 480) });
  try {
    await navigator.wakeLock?.request("screen");
  } catch {
    // a wake lock is a convenience: streaming goes on without it (e.g. the page is not visible)
  }
  setStatus("streaming");
  camera.each((frame, presented) => pipeline.offer(frame, presented));
}

void main().catch((error) => setStatus("failed", String(error instanceof Error ? error.message : error)));
