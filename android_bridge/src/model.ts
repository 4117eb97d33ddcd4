/**
 * One verified bundle ready to run: its manifest, engine and H-DNN parameters. A hot swap replaces the whole
 * object between two frames, as the Python agent's `Model`.
 */

import { verifyArchive, type Manifest, type WebEntry } from "./bundle.js";
import { type Engine, openEngine } from "./engine.js";
import { unfamiliar } from "./familiarity.js";
import * as hdnn from "./hdnn.js";
import { preprocess, type Raster } from "./preprocess.js";
import { final } from "./retry.js";

export const DEFAULT_M = 3;

export interface Inference {
  logits: Float32Array;
  probabilities: Float64Array;
  top1: number;
  confidence: number;
  toPeople: boolean; // the runtime's gate alone: c < tau
  unfamiliar: boolean; // the input is unlike the training images (familiarity.ts): people are asked whatever c
  difficulty: number;
  labour: number;
  valid: boolean; // every logit finite (else the frame is invalid: neither escalated nor fused, as hdnn.finite says)
  input: Float32Array;
  runMs: number; // the engine alone (wasm), without preprocessing and the H-DNN math
}

export class Model {
  readonly params: hdnn.FusionParams;
  readonly estimator: hdnn.Estimator;
  readonly m: number;

  constructor(
    readonly manifest: Manifest,
    readonly engine: Engine,
    readonly downloadedBytes: number,
  ) {
    this.params = { temperature: manifest.temperature, fusionLambda: manifest.lambda };
    this.estimator = hdnn.estimatorFromManifest(manifest.confidence);
    this.m = Math.round(manifest.confidence.m ?? DEFAULT_M);
    hdnn.checkTau(manifest.tau);
  }

  get version(): string {
    return this.manifest.model.version;
  }

  /** Download, verify (signature, then hashes) and open; nothing is parsed before the checks pass. `accept` sees
   * the verified manifest before an engine opens the model, and throws (BundleRefusedError) to refuse it: the
   * model name and version the caller expects. A failure past the download (and an HTTP 4xx but 408/429: the
   * version missing) is marked `final` (retry.ts): trying again cannot mend it. */
  static async fetch(url: string, headers: Record<string, string>, pinnedKey: Uint8Array,
    runtime: WebEntry["runtime"] = "onnxruntime-web", accept: (manifest: Manifest) => void = () => undefined): Promise<Model> {
    const response = await fetch(url, { headers, cache: "no-store" });
    if (!response.ok) {
      const error = new Error(`bundle download failed: HTTP ${response.status} ${await response.text()}`);
      throw response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429
        ? final(error) : error;
    }
    const archive = new Uint8Array(await response.arrayBuffer());
    let verified: Awaited<ReturnType<typeof verifyArchive>>;
    let engine: Engine;
    try {
      verified = await verifyArchive(archive, pinnedKey, runtime);
      accept(verified.manifest);
      engine = await openEngine(verified.web, verified.model, verified.manifest.input.shape);
    } catch (error) {
      throw final(error);
    }
    return Model.ready(verified.manifest, engine, verified.bytes);
  }

  /** The model on an engine just opened, once it passes the health check; the engine is released when it does
   * not (or the manifest's numbers are refused), and the error is `final`. */
  static async ready(manifest: Manifest, engine: Engine, downloadedBytes: number): Promise<Model> {
    try {
      const model = new Model(manifest, engine, downloadedBytes);
      await model.healthCheck();
      return model;
    } catch (error) {
      await engine.release().catch(() => undefined);
      throw final(error);
    }
  }

  /** A zero input must give finite logits of the manifest's width (the agent's health check). */
  async healthCheck(): Promise<void> {
    const size = this.manifest.input.shape.reduce((a, b) => a * b, 1);
    const logits = await this.engine.run(new Float32Array(size));
    const finite = hdnn.finite(logits);
    if (logits.length !== this.manifest.labels.length || !finite) {
      throw new Error(`bundle ${this.version} fails the health check (logits ${logits.length}, finite ${finite})`);
    }
  }

  async infer(frame: Raster, tau: number = this.manifest.tau): Promise<Inference> {
    const input = preprocess(frame, this.manifest.input);
    const started = performance.now();
    const logits = await this.engine.run(input);
    const runMs = performance.now() - started;
    const probabilities = hdnn.probabilities(logits, this.params);
    const top1 = hdnn.predict(logits);
    const confidence = probabilities[hdnn.argmax(probabilities)];
    const difficulty = hdnn.difficulty(probabilities, this.estimator);
    return { logits, probabilities, top1, confidence, toPeople: hdnn.needsHuman(confidence, tau),
      unfamiliar: this.isUnfamiliar(input), difficulty, labour: hdnn.labourPerSample(difficulty, this.m),
      valid: hdnn.finite(logits), input, runMs };
  }

  /** The familiarity check on the input the model ran on (NHWC [1, h, w, c]); false without one in the manifest. */
  isUnfamiliar(input: Float32Array): boolean {
    const [, h, w, c] = this.manifest.input.shape;
    return unfamiliar(this.manifest.familiarity, input, h, w, c);
  }
}
