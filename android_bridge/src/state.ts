/**
 * The page's device state, `window.hgenDevice` (tests and the status telemetry read it), the page's options (URL
 * parameters) and what the page shows. Per-sample lists (frames, stored, fused) keep a recent window (recent.ts);
 * `totals` count the whole session. The error line is every current problem (the bundle, a frame, the outbox's
 * storage, the camera, an update), each cleared by its own recovery.
 */

import type { Decision } from "./gate.js";
import type { FusedRecord } from "./replies.js";
import { windowSize } from "./recent.js";

export interface FrameRecord {
  n: number; // its place among the frames answered this session (0, 1, ...)
  presented: number;
  captured: number; // its place among the frames the page captured (1, 2, ...): a gap is a dropped frame
  version: string;
  top1: number;
  label: string;
  confidence: number;
  toPeople: boolean; // c < tau
  unfamiliar: boolean; // outside the training images' input statistics: asked like a frame under tau
  // invalid: a logit not finite (neither gated, escalated nor fused); no_storage: the browser refused to store its
  // sample, oversize: its sample too large for one message (the model's answer stands for both)
  decision: Decision | "no_hub" | "invalid" | "no_storage" | "oversize";
  sampleId: string | null;
  inferMs: number; // the whole frame: preprocessing, engine, H-DNN math, gate
  runMs: number; // the engine alone
  doneAt: number; // performance.now() when the frame's answer was shown
  input?: number[];
  fullInput?: number[]; // with ?full=N, every Nth frame's whole model input (benchmarks replay it on the agent)
}

export type { FusedRecord } from "./replies.js";

export interface OutboxState {
  samples: number;
  bytes: number;
  noStorage: number; // samples the browser refused to store (its quota): their frames keep the model's answer
  droppedOldest: number; // stored samples dropped to make room (the caps)
  droppedOversize: number; // samples too large to store or send
  late: number; // sent again past their hub deadline, without their image (the hub's reply settles them)
  downscaled: number; // samples whose image was halved to fit one message
  maxSamples: number;
  maxBytes: number;
  maxPayloadBytes: number;
}

export interface DeviceState {
  status: string;
  error: string | null;
  problems: Record<string, string>; // what `error` joins
  version: string | null;
  frames: FrameRecord[]; // the recent window (?keep=)
  fused: FusedRecord[]; // the recent window
  stored: string[]; // sample ids stored, the recent window
  totals: { frames: number; stored: number; fused: number }; // the whole session
  captured: number;
  dropped: number;
  invalid: number; // frames whose logits were not all finite
  failed: number; // frames whose processing threw (shown; the stream goes on)
  replies: { duplicates: number; unknown: number; failures: number };
  outbox: OutboxState;
  firstOpenBytes: number;
  connected: boolean;
  pending: number;
  swaps: { from: string; to: string; atFrame: number }[];
  updateFailures: number;
  engine: string;
  pacing: Pacing;
  capture: Record<string, number>; // frames per capture path ("planes I420 bt601 limited", "canvas (...)")
  camera: string; // "streaming", or why it stopped
  cameraRestarts: number;
  wakeLock: string;
  storage: string; // whether the browser keeps the outbox under storage pressure (navigator.storage.persist)
  // tablock.ts: "running" (this page runs the device), "another tab" (another tab or window does: nothing started
  // here), "taken over" (another one took it: this one stopped), "unguarded" (no Web Locks API), "not asked"
  tab: string;
}

/** live (real phones): a frame arriving while MAX_QUEUE wait is dropped (and counted), so answers follow the
 * camera; all (`?pacing=all`, tests): every captured frame is answered, in order, however far behind, as the agent's
 * `pacing: all`; waiting pixels are bounded by MAX_QUEUE_BYTES (a frame over it is dropped and counted). */
export type Pacing = "live" | "all";

const params = new URLSearchParams(location.search);
export const options = {
  pacing: (params.get("pacing") === "all" ? "all" : "live") as Pacing, // live by default
  recordInputs: params.get("record") === "inputs",
  fullEvery: Math.max(0, Math.floor(Number(params.get("full") ?? 0)) || 0),
  runtime: params.get("engine") === "litert-js" ? "litert-js" : "onnxruntime-web", // onnxruntime-web by default
  keep: windowSize(params.get("keep")), // records kept per list: ?keep=all for every one
  canvasOnly: params.get("capture") === "canvas",
  width: Number(params.get("width") ?? 640),
  height: Number(params.get("height") ?? 480),
} as const;

export const state: DeviceState = { status: "starting", error: null, problems: {}, version: null, frames: [],
  fused: [], stored: [], totals: { frames: 0, stored: 0, fused: 0 }, captured: 0, dropped: 0, invalid: 0, failed: 0,
  replies: { duplicates: 0, unknown: 0, failures: 0 },
  outbox: { samples: 0, bytes: 0, noStorage: 0, droppedOldest: 0, droppedOversize: 0, late: 0, downscaled: 0,
    maxSamples: 0, maxBytes: 0, maxPayloadBytes: 0 },
  firstOpenBytes: 0, connected: false, pending: 0, swaps: [], updateFailures: 0, engine: options.runtime,
  pacing: options.pacing, capture: {}, camera: "not started", cameraRestarts: 0, wakeLock: "not asked",
  storage: "not asked", tab: "not asked" };
(window as unknown as { hgenDevice: DeviceState }).hgenDevice = state;

export function show(id: string, text: string): void {
  const element = document.getElementById(id);
  if (element !== null) element.textContent = text;
}

/** A row of the page's list that the hub's template may lack (the template is the hub's): added once. */
export function ensureRow(id: string, title: string): void {
  if (document.getElementById(id) !== null) return;
  const list = document.querySelector("main dl");
  if (list === null) return;
  const term = document.createElement("dt");
  term.textContent = title;
  const value = document.createElement("dd");
  value.id = id;
  value.textContent = "-";
  list.append(term, value);
}

/** The notice at the top of the page (another tab or window runs this device, or took it over), with its one
 * button; null removes it. */
export function notice(text: string | null, button?: { label: string; press: () => void }): void {
  document.getElementById("tab-notice")?.remove();
  if (text === null) return;
  const box = document.createElement("section");
  box.id = "tab-notice";
  box.className = "card message";
  box.setAttribute("role", "alert");
  const line = document.createElement("p");
  line.textContent = text;
  box.append(line);
  if (button !== undefined) {
    const press = document.createElement("button");
    press.id = "take-over-button";
    press.type = "button";
    press.textContent = button.label;
    press.addEventListener("click", button.press, { once: true });
    box.append(press);
  }
  const status = document.getElementById("status")?.closest("p");
  if (status) status.after(box);
  else (document.querySelector("main") ?? document.body).prepend(box);
}

/** One problem (`key`) shown, or cleared with null; the error line shows all of them. */
export function setProblem(key: string, message: string | null): void {
  if (message === null) delete state.problems[key];
  else state.problems[key] = message;
  const all = Object.values(state.problems);
  state.error = all.length ? all.join("; ") : null;
  show("error", state.error ?? "");
  const shown = document.getElementById("error");
  if (shown !== null) shown.hidden = state.error === null;
}

/** The status, and the error that goes with it (null clears it; other problems stay). */
export function setStatus(status: string, error: string | null = null): void {
  state.status = status;
  show("status", status);
  document.body.dataset.status = status;
  setProblem("status", error);
}

export function describe(error: unknown): string {
  return String(error instanceof Error ? error.message : error);
}
