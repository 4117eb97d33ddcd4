/**
 * Camera frame -> model input, in code (never by canvas smoothing), following `hgen.runtime.preprocess` step by
 * step: alpha composited on black, grey with Pillow's fixed-point luma or RGB, fit into the input (`stretch` or
 * `letterbox`) with OpenCV's choice of filter (area when shrinking, bilinear when enlarging), then
 * `x * scale + offset` in float32. The canvas only copies the video frame 1:1 into RGBA bytes.
 */

import { InvalidInputError } from "./hdnn.js";

export interface InputSpec {
  shape: number[];
  dtype: "float32";
  layout: "NHWC" | "NC";
  scale: number;
  offset: number;
  resize: "stretch" | "letterbox";
  pad_value: number;
}

/** Pixels, row-major, `channels` bytes each. */
export interface Raster {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

const f32 = Math.fround;

/** RGBA -> RGB with transparent pixels on black, rounded as the compiler does (float32 math). */
export function compositeOnBlack(rgba: Raster): Raster {
  const n = rgba.width * rgba.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const alpha = f32(f32(rgba.data[i * 4 + 3]) / f32(255));
    for (let c = 0; c < 3; c++) {
      const v = f32(f32(f32(rgba.data[i * 4 + c]) * alpha) + f32(0.5));
      out[i * 3 + c] = Math.min(255, Math.max(0, Math.trunc(v)));
    }
  }
  return { width: rgba.width, height: rgba.height, channels: 3, data: out };
}

/** ITU-R 601-2 luma in 16-bit fixed point, as Pillow's convert("L"). */
export function grey(rgb: Raster): Raster {
  const n = rgb.width * rgb.height;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const sum = rgb.data[i * 3] * 19595 + rgb.data[i * 3 + 1] * 38470 + rgb.data[i * 3 + 2] * 7471 + 0x8000;
    out[i] = Math.floor(sum / 65536);
  }
  return { width: rgb.width, height: rgb.height, channels: 1, data: out };
}

/** A browser frame (RGBA) -> the channels the model wants (1 = grey, 3 = RGB). */
export function frameChannels(rgba: Raster, channels: number): Raster {
  if (rgba.channels !== 4 || rgba.data.length !== rgba.width * rgba.height * 4 || rgba.width * rgba.height === 0) {
    throw new InvalidInputError(`frame is not RGBA of ${rgba.width}x${rgba.height}`);
  }
  const rgb = compositeOnBlack(rgba);
  if (channels === 1) return grey(rgb);
  if (channels === 3) return rgb;
  throw new InvalidInputError(`the model wants ${channels} channels; frames can become 1 (grey) or 3 (RGB)`);
}

export interface Placement {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function placement(width: number, height: number, outW: number, outH: number, resize: string): Placement {
  if (resize === "stretch") return { left: 0, top: 0, width: outW, height: outH };
  const scale = Math.min(outW / width, outH / height);
  const w = Math.max(1, Math.min(outW, roundHalfEven(width * scale)));
  const h = Math.max(1, Math.min(outH, roundHalfEven(height * scale)));
  return { left: Math.floor((outW - w) / 2), top: Math.floor((outH - h) / 2), width: w, height: h };
}

/** OpenCV's area-filter table along one axis: (output index, source index, float32 weight) in OpenCV's order,
 * from the same double arithmetic (`computeResizeAreaTab`), so the sums below round as OpenCV's do. */
function areaTaps(src: number, dst: number): { d: number; s: number; w: number }[] {
  const scale = 1 / (dst / src); // OpenCV keeps 1 / inv_scale, which can differ from src / dst in the last bit
  const taps = [];
  for (let d = 0; d < dst; d++) {
    const fs1 = d * scale;
    const fs2 = fs1 + scale;
    const cell = Math.min(scale, src - fs1);
    const s2 = Math.min(Math.floor(fs2), src - 1);
    const s1 = Math.min(Math.ceil(fs1), s2);
    if (s1 - fs1 > 1e-3) taps.push({ d, s: s1 - 1, w: f32((s1 - fs1) / cell) });
    for (let s = s1; s < s2; s++) taps.push({ d, s, w: f32(1 / cell) });
    if (fs2 - s2 > 1e-3) taps.push({ d, s: s2, w: f32(Math.min(fs2 - s2, 1, cell) / cell) });
  }
  return taps;
}

/** float -> uint8 as OpenCV's saturate_cast: round half to even, clamp. */
function saturateRound(x: number): number {
  let r = Math.round(x);
  if (r - x === 0.5 && r % 2 !== 0) r -= 1;
  return Math.min(255, Math.max(0, r));
}

/** Whole-number shrinking: the integer block mean, rounded half up (OpenCV's fast INTER_AREA path). */
function resizeAreaInteger(img: Raster, outW: number, outH: number): Raster {
  const fx = img.width / outW;
  const fy = img.height / outH;
  const area = fx * fy;
  const c = img.channels;
  const out = new Uint8Array(outW * outH * c);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      for (let ch = 0; ch < c; ch++) {
        let sum = 0;
        for (let j = 0; j < fy; j++) {
          for (let i = 0; i < fx; i++) sum += img.data[((y * fy + j) * img.width + x * fx + i) * c + ch];
        }
        out[(y * outW + x) * c + ch] = Math.floor((sum + Math.floor(area / 2)) / area);
      }
    }
  }
  return { width: outW, height: outH, channels: c, data: out };
}

/** Shrinking: each output pixel is the mean of the source area it covers (OpenCV INTER_AREA). A fractional ratio
 * follows OpenCV's float32 accumulation step by step (each row's weighted sum, then the rows'), bit for bit. */
export function resizeArea(img: Raster, outW: number, outH: number): Raster {
  if (img.width % outW === 0 && img.height % outH === 0) return resizeAreaInteger(img, outW, outH);
  const xs = areaTaps(img.width, outW);
  const ys = areaTaps(img.height, outH);
  const c = img.channels;
  const out = new Uint8Array(outW * outH * c);
  const buf = new Float32Array(outW * c);
  const sum = new Float32Array(outW * c);
  const store = (dy: number) => {
    for (let i = 0; i < sum.length; i++) out[dy * outW * c + i] = saturateRound(sum[i]);
  };
  let current = ys[0].d;
  for (const { d: dy, s: sy, w: beta } of ys) {
    buf.fill(0);
    const row = sy * img.width * c;
    for (const { d: dx, s: sx, w: alpha } of xs) {
      for (let ch = 0; ch < c; ch++) buf[dx * c + ch] = f32(buf[dx * c + ch] + f32(img.data[row + sx * c + ch] * alpha));
    }
    if (dy !== current) {
      store(current);
      sum.fill(0);
      current = dy;
    }
    for (let i = 0; i < sum.length; i++) sum[i] = f32(sum[i] + f32(beta * buf[i]));
  }
  store(current);
  return { width: outW, height: outH, channels: c, data: out };
}

const COEF_BITS = 11;
const COEF_SCALE = 1 << COEF_BITS;

/** OpenCV's bilinear taps for uint8: half-pixel centres, clamped at the border, 11-bit fixed-point weights. */
function linearTaps(src: number, dst: number): { index: number; w0: number; w1: number }[] {
  const scale = src / dst;
  const taps = [];
  for (let d = 0; d < dst; d++) {
    let f = (d + 0.5) * scale - 0.5;
    let s = Math.floor(f);
    f -= s;
    if (s < 0) {
      f = 0;
      s = 0;
    }
    if (s >= src - 1) {
      f = 0;
      s = src - 1;
    }
    const w0 = Math.round((1 - f) * COEF_SCALE);
    taps.push({ index: s, w0, w1: COEF_SCALE - w0 });
  }
  return taps;
}

/** Enlarging: OpenCV INTER_LINEAR's fixed-point bilinear filter. */
export function resizeLinear(img: Raster, outW: number, outH: number): Raster {
  const xs = linearTaps(img.width, outW);
  const ys = linearTaps(img.height, outH);
  const c = img.channels;
  const out = new Uint8Array(outW * outH * c);
  const at = (x: number, y: number, ch: number) => img.data[(y * img.width + Math.min(x, img.width - 1)) * c + ch];
  for (let y = 0; y < outH; y++) {
    const ty = ys[y];
    const y1 = Math.min(ty.index + 1, img.height - 1);
    for (let x = 0; x < outW; x++) {
      const tx = xs[x];
      for (let ch = 0; ch < c; ch++) {
        const top = at(tx.index, ty.index, ch) * tx.w0 + at(tx.index + 1, ty.index, ch) * tx.w1;
        const bottom = at(tx.index, y1, ch) * tx.w0 + at(tx.index + 1, y1, ch) * tx.w1;
        // OpenCV's vectorised vertical pass: 16-bit products, each shifted, then rounded by 2 bits
        const sum = ((ty.w0 * (top >> 4)) >> 16) + ((ty.w1 * (bottom >> 4)) >> 16);
        out[(y * outW + x) * c + ch] = Math.min(255, (sum + 2) >> 2);
      }
    }
  }
  return { width: outW, height: outH, channels: c, data: out };
}

/** Fit into (outH, outW): area filter when the image shrinks, bilinear otherwise; letterbox pads. */
export function fit(img: Raster, outH: number, outW: number, resize: string, padValue: number): Raster {
  const box = placement(img.width, img.height, outW, outH, resize);
  let resized = img;
  if (box.width !== img.width || box.height !== img.height) {
    const shrink = box.width * box.height < img.width * img.height;
    resized = shrink ? resizeArea(img, box.width, box.height) : resizeLinear(img, box.width, box.height);
  }
  if (resize === "stretch") return resized;
  const c = img.channels;
  const out = new Uint8Array(outW * outH * c).fill(padValue);
  for (let y = 0; y < box.height; y++) {
    out.set(resized.data.subarray(y * box.width * c, (y + 1) * box.width * c), ((box.top + y) * outW + box.left) * c);
  }
  return { width: outW, height: outH, channels: c, data: out };
}

/** uint8 -> float32 model input: x * scale + offset, each step rounded to float32 as numpy does. */
export function normalise(img: Raster, scale: number, offset: number): Float32Array {
  const s = f32(scale);
  const o = f32(offset);
  return Float32Array.from(img.data, (v) => f32(f32(v * s) + o));
}

/** A browser frame (RGBA) -> the model's NHWC float32 input of batch 1. */
export function preprocess(rgba: Raster, spec: InputSpec): Float32Array {
  if (spec.layout !== "NHWC" || spec.shape.length !== 4 || spec.shape[0] !== 1) {
    throw new InvalidInputError(`cannot feed camera frames to a model with input ${spec.layout} ${spec.shape}`);
  }
  const [, height, width, channels] = spec.shape;
  let image = frameChannels(rgba, channels);
  if (image.width !== width || image.height !== height) image = fit(image, height, width, spec.resize, spec.pad_value);
  return normalise(image, spec.scale, spec.offset);
}
