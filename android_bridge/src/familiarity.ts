/**
 * The familiarity check on the phone, as `hgen.runtime.familiarity`: a model is often certain and wrong on frames
 * unlike its training images (noise, low light, blur), so a frame whose brightness, contrast or detail falls
 * outside the ranges the bundle's manifest stores goes to people like a frame under tau. The statistics are taken
 * in float64 on the model input, as numpy does; checked against golden vectors (test/golden.test.ts).
 */

import { InvalidInputError } from "./hdnn.js";

export interface StatRange {
  low: number;
  high: number;
}

/** The manifest's `familiarity`: the training images' range of each statistic, bounds included. */
export interface Familiarity {
  brightness: StatRange;
  contrast: StatRange;
  detail: StatRange;
  quantile: number;
}

export interface ImageStats {
  brightness: number; // mean of all values
  contrast: number; // their population standard deviation
  detail: number; // mean absolute 4-neighbour Laplacian of the grey image (channel mean), interior pixels
}

/** The three statistics of one NHWC model input (h x w x c values, h, w >= 3), as `image_stats`. */
export function imageStats(input: ArrayLike<number>, h: number, w: number, c: number): ImageStats {
  if (h < 3 || w < 3 || c < 1 || input.length !== h * w * c) {
    throw new InvalidInputError(
      `the familiarity check needs an image [h>=3, w>=3, c], got ${input.length} values for ${h}x${w}x${c}`);
  }
  const n = input.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += input[i];
  const brightness = sum / n;
  let squares = 0;
  for (let i = 0; i < n; i++) squares += (input[i] - brightness) ** 2;
  const grey = new Float64Array(h * w);
  for (let p = 0; p < h * w; p++) {
    let channels = 0;
    for (let k = 0; k < c; k++) channels += input[p * c + k];
    grey[p] = channels / c;
  }
  let laplacian = 0;
  for (let i = 1; i < h - 1; i++) {
    for (let j = 1; j < w - 1; j++) {
      const p = i * w + j;
      laplacian += Math.abs(4 * grey[p] - grey[p - w] - grey[p + w] - grey[p - 1] - grey[p + 1]);
    }
  }
  return { brightness, contrast: Math.sqrt(squares / n), detail: laplacian / ((h - 2) * (w - 2)) };
}

function outside(value: number, range: StatRange): boolean {
  return value < range.low || value > range.high;
}

/** Whether any statistic of the input is outside its range; never for a bundle without the check. */
export function unfamiliar(familiarity: Familiarity | null | undefined, input: ArrayLike<number>, h: number, w: number,
  c: number): boolean {
  if (familiarity === null || familiarity === undefined) return false;
  const stats = imageStats(input, h, w, c);
  return outside(stats.brightness, familiarity.brightness) || outside(stats.contrast, familiarity.contrast)
    || outside(stats.detail, familiarity.detail);
}

/** Whether people would be needed for the frame: under tau, or unfamiliar (the page without a hub link shows it as
 * `no_hub`). With a hub the gate decides (gate.ts): a confident unfamiliar frame goes to people when drawn. */
export function unsure(underTau: boolean, isUnfamiliar: boolean): boolean {
  return underTau || isUnfamiliar;
}
