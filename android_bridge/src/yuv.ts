/**
 * A camera frame's own YUV planes -> RGBA with the integer rule of `hgen.runtime.yuv` (its docstring states it),
 * so the phone and the Python agent make the same pixels of the same frame instead of each trusting its decoder:
 *
 *   y' = Y - 16 (limited range) or Y (full);  u = U - 128;  v = V - 128
 *   R = clamp((cy*y' + crv*v + 2^15) >> 16);  G = clamp((cy*y' - cgu*u - cgv*v + 2^15) >> 16);
 *   B = clamp((cy*y' + cbu*u + 2^15) >> 16)
 *
 * with 16-bit fixed-point BT.601 or BT.709 coefficients and 4:2:0 chroma taken from each 2x2 block's sample.
 * Every intermediate fits in 32 bits, so `>>` is exact. Checked against golden vectors the Python rule writes.
 */

import { InvalidInputError } from "./hdnn.js";
import { type Raster } from "./preprocess.js";

export type Matrix = "bt601" | "bt709";

/** [cy, crv, cgu, cgv, cbu], round(65536 x coefficient): the same integers as hgen.runtime.yuv.COEFFICIENTS. */
const COEFFICIENTS: Record<string, readonly number[]> = {
  "bt601/limited": [76309, 104597, 25675, 53279, 132201],
  "bt601/full": [65536, 91881, 22553, 46802, 116130],
  "bt709/limited": [76309, 117489, 13975, 34925, 138438],
  "bt709/full": [65536, 103206, 12276, 30679, 121609],
};

/** One plane in a buffer: where it starts and the bytes from one row to the next. */
export interface PlaneLayout {
  offset: number;
  stride: number;
}

/** What a frame gives: 4:2:0 planes as I420 (Y, U, V) or NV12 (Y, interleaved UV), and its colour space. */
export interface YuvFrame {
  format: "I420" | "NV12";
  width: number;
  height: number;
  data: Uint8Array;
  layout: PlaneLayout[];
  matrix: Matrix;
  fullRange: boolean;
}

const clamp = (x: number) => (x < 0 ? 0 : x > 255 ? 255 : x);

/** 4:2:0 planes -> RGBA (alpha 255), pixel for pixel as the Python rule. */
export function yuvToRgba(frame: YuvFrame): Raster {
  const { width, height, data, layout } = frame;
  const c = COEFFICIENTS[`${frame.matrix}/${frame.fullRange ? "full" : "limited"}`];
  const planes = frame.format === "I420" ? 3 : frame.format === "NV12" ? 2 : 0;
  if (c === undefined || planes === 0 || layout.length !== planes || width <= 0 || height <= 0) {
    throw new InvalidInputError(`no YUV rule for ${frame.format} ${frame.matrix} with ${layout.length} planes`);
  }
  const [cy, crv, cgu, cgv, cbu] = c;
  const black = frame.fullRange ? 0 : 16;
  const out = new Uint8Array(width * height * 4);
  const [yp, up] = layout;
  // I420: U and V planes; NV12: one plane, U at even bytes and V after it
  const vp = planes === 3 ? layout[2] : { offset: up.offset + 1, stride: up.stride };
  const step = planes === 3 ? 1 : 2;
  for (let row = 0; row < height; row++) {
    const yRow = yp.offset + row * yp.stride;
    const uRow = up.offset + (row >> 1) * up.stride;
    const vRow = vp.offset + (row >> 1) * vp.stride;
    for (let col = 0; col < width; col++) {
      const luma = cy * (data[yRow + col] - black) + 32768;
      const u = data[uRow + (col >> 1) * step] - 128;
      const v = data[vRow + (col >> 1) * step] - 128;
      const at = (row * width + col) * 4;
      out[at] = clamp((luma + crv * v) >> 16);
      out[at + 1] = clamp((luma - cgu * u - cgv * v) >> 16);
      out[at + 2] = clamp((luma + cbu * u) >> 16);
      out[at + 3] = 255;
    }
  }
  return { width, height, channels: 4, data: out };
}

/** WebCodecs' colour space -> the rule's: BT.709 when the frame says so, BT.601 when it says BT.601 or nothing
 * (what y4m files and most decoders assume); null for a matrix the rule does not cover (e.g. BT.2020). */
export function ruleOf(matrix: string | null | undefined): Matrix | null {
  if (matrix === "bt709") return "bt709";
  if (matrix === null || matrix === undefined || matrix === "smpte170m" || matrix === "bt470bg") return "bt601";
  return null;
}
