/**
 * onnxruntime-web (wasm, one thread by default) running the bundle's web model: float input of the manifest's
 * shape (batch 1), float logits out. Only ever given bytes that bundle.ts verified.
 */

import * as ort from "onnxruntime-web/wasm";

import type { WebEntry } from "./bundle.js";
import { dequantize, type Quant, quantize } from "./quantize.js";

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

/** LiteRT.js (wasm, XNNPack on the CPU): the second engine, for a bundle's `.tflite` web model (fixed batch 1),
 * float or uint8 in and out (an int8 bundle: the page quantises the input and dequantises the logits). */
export class LiteRtEngine implements Engine {
  private constructor(
    private readonly model: import("@litertjs/core").CompiledModel,
    private readonly shape: number[],
    private readonly io: { input: Quant; output: Quant } | null,
  ) {}

  static async open(model: Uint8Array, shape: number[], entry: WebEntry): Promise<LiteRtEngine> {
    const litert = await import("@litertjs/core");
    if (!litertLoaded) {
      await litert.loadLiteRt(LITERT_WASM_DIR);
      litertLoaded = true;
    }
    let io = null;
    if (entry.io_dtype === "uint8") {
      if (!entry.input_quantization || !entry.output_quantization) throw new Error("uint8 web model without quantization");
      io = { input: entry.input_quantization, output: entry.output_quantization };
    }
    return new LiteRtEngine(await litert.loadAndCompile(model, { accelerator: "wasm" }), shape, io);
  }

  async run(input: Float32Array): Promise<Float32Array> {
    const { Tensor } = await import("@litertjs/core");
    const tensor = this.io ? new Tensor(quantize(input, this.io.input), this.shape) : new Tensor(input, this.shape);
    try {
      const outputs = await this.model.run(tensor);
      const raw = outputs[0].toTypedArray();
      const data = this.io ? dequantize(raw, this.io.output) : Float32Array.from(raw as Float32Array);
      outputs.forEach((output) => output.delete());
      return data;
    } finally {
      tensor.delete();
    }
  }

  async release(): Promise<void> {
    this.model.delete();
  }
}

export const LITERT_WASM_DIR = "/device/static/";
let litertLoaded = false;

/** The engine for a web model: onnxruntime-web for ONNX, LiteRT.js for `.tflite`. */
export async function openEngine(entry: WebEntry, model: Uint8Array, shape: number[]): Promise<Engine> {
  if (entry.runtime === "onnxruntime-web") return OrtEngine.open(model, shape);
  if (entry.runtime === "litert-js") return LiteRtEngine.open(model, shape, entry);
  throw new Error(`no browser engine '${entry.runtime}'`);
}
