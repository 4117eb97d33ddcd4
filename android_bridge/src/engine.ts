/**
 * onnxruntime-web (wasm, one thread by default) running the bundle's web model: float input of the manifest's
 * shape (batch 1), float logits out. Only ever given bytes that bundle.ts verified.
 */

import * as ort from "onnxruntime-web/wasm";

export const WASM_URL = "/device/static/ort-wasm-simd-threaded.wasm";

export interface Engine {
  run(input: Float32Array): Promise<Float32Array>;
  release(): Promise<void>;
}

export class OrtEngine implements Engine {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly shape: number[],
  ) {}

  static async open(model: Uint8Array, shape: number[], threads = 1): Promise<OrtEngine> {
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.wasmPaths = { wasm: WASM_URL };
    const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    return new OrtEngine(session, shape);
  }

  async run(input: Float32Array): Promise<Float32Array> {
    const feeds = { [this.session.inputNames[0]]: new ort.Tensor("float32", input, this.shape) };
    const outputs = await this.session.run(feeds);
    return outputs[this.session.outputNames[0]].data as Float32Array;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
