/**
 * The page's side of a uint8-I/O model (LiteRT.js running an int8 bundle): float input to uint8 and uint8 logits
 * to float with the manifest's parameters, step by step as the agent's engines (`hgen.runtime.engines.base
 * .QuantParams`) in float32: q = clip(round-half-even(x / scale) + zero_point), real = (q - zero_point) * scale.
 * The uint8 zero point is the int8 one + 128, so the model sees exactly the agent's integers, shifted.
 */

export interface Quant {
  scale: number;
  zero_point: number;
}

/** numpy's np.round: halves go to the even neighbour. */
export function roundHalfEven(value: number): number {
  const rounded = Math.round(value);
  return Math.abs(value % 1) === 0.5 && rounded % 2 !== 0 ? rounded - 1 : rounded;
}

export function quantize(input: Float32Array, quant: Quant): Uint8Array<ArrayBuffer> {
  const scale = Math.fround(quant.scale);
  const out = new Uint8Array(input.length);
  for (let i = 0; i < input.length; i++) {
    const q = roundHalfEven(Math.fround(input[i] / scale)) + quant.zero_point;
    out[i] = q < 0 ? 0 : q > 255 ? 255 : q;
  }
  return out;
}

export function dequantize(output: ArrayLike<number>, quant: Quant): Float32Array {
  const scale = Math.fround(quant.scale);
  const out = new Float32Array(output.length);
  for (let i = 0; i < output.length; i++) out[i] = Math.fround(Math.fround(output[i] - quant.zero_point) * scale);
  return out;
}
