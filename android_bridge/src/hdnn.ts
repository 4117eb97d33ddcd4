/**
 * The H-CNN on the phone: the same math as `hgen.runtime.hdnn.cnn`, `hgen.runtime.labour` and the agent's gate,
 * in float64 like numpy, so a phone and a Raspberry Pi running one bundle take the same decisions. Checked against
 * golden vectors the Python runtime writes (test/golden.test.ts).
 */

export const NO_ANSWER = -1;
export const MIN_OPERATIONS = 1;
export const MAX_OPERATIONS = 3;
export const MAX_PARTICIPANTS = 4;

export class InvalidInputError extends Error {
  override name = "InvalidInputError";
}

export interface FusionParams {
  temperature: number;
  fusionLambda: number;
}

export interface Estimator {
  coef: [number, number, number];
  intercept: number;
}

/** The default estimator of `hgen.runtime.labour.DifficultyEstimator` when a bundle stores none. */
export const DEFAULT_ESTIMATOR: Estimator = { coef: [0, 0, 0], intercept: -2 };

function checkLogits(logits: ArrayLike<number>): void {
  if (logits.length < 2) throw new InvalidInputError(`H-CNN outputs need >= 2 classes, got ${logits.length}`);
}

/** softmax(z / T), stable: numpy's order of operations (divide, subtract the max, exp, normalise). */
export function probabilities(logits: ArrayLike<number>, params: FusionParams): Float64Array {
  checkLogits(logits);
  if (!(params.temperature > 0)) throw new InvalidInputError(`temperature must be > 0, got ${params.temperature}`);
  const z = Float64Array.from(logits, (v) => v / params.temperature);
  let max = -Infinity;
  for (const v of z) max = Math.max(max, v);
  let sum = 0;
  for (let i = 0; i < z.length; i++) {
    z[i] = Math.exp(z[i] - max);
    sum += z[i];
  }
  for (let i = 0; i < z.length; i++) z[i] /= sum;
  return z;
}

/** First index of the largest value (numpy's argmax keeps the first of ties, and a NaN counts as the largest: the
 * first NaN's index, so a frame with a NaN logit names the class the agent's numpy names). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 0; i < values.length; i++) {
    if (Number.isNaN(values[i])) return i;
    if (values[i] > values[best]) best = i;
  }
  return best;
}

/** Whether every model output is finite: the agent's health check and probation (`np.isfinite(outputs).all()`).
 * A frame whose logits are not is invalid: its confidence is NaN, which the gate reads as confident. */
export function finite(logits: ArrayLike<number>): boolean {
  for (let i = 0; i < logits.length; i++) if (!Number.isFinite(logits[i])) return false;
  return true;
}

export function confidence(logits: ArrayLike<number>, params: FusionParams): number {
  const probs = probabilities(logits, params);
  return probs[argmax(probs)];
}

export function checkTau(tau: number): number {
  if (!(tau >= 0 && tau <= 1)) throw new InvalidInputError(`tau must be in [0, 1], got ${tau}`);
  return tau;
}

/** The gate: people are asked when the model is unsure (c < tau). */
export function needsHuman(conf: number, tau: number): boolean {
  return conf < checkTau(tau);
}

export function predict(logits: ArrayLike<number>): number {
  checkLogits(logits);
  return argmax(logits);
}

/** Margin (top-1 minus top-2), normalised entropy, top-1: the features the difficulty estimator reads. */
export function uncertaintyFeatures(probs: ArrayLike<number>): [number, number, number] {
  const sorted = Array.from(probs).sort((a, b) => a - b);
  const n = sorted.length;
  let entropy = 0;
  for (let i = 0; i < n; i++) entropy += probs[i] * Math.log(Math.min(1, Math.max(1e-12, probs[i])));
  return [sorted[n - 1] - sorted[n - 2], -entropy / Math.log(n), sorted[n - 1]];
}

/** Operations a person needs for the sample, in [1, 3] (paper Eq. 3's d). */
export function difficulty(probs: ArrayLike<number>, estimator: Estimator): number {
  const x = uncertaintyFeatures(probs);
  const z = x[0] * estimator.coef[0] + x[1] * estimator.coef[1] + x[2] * estimator.coef[2] + estimator.intercept;
  return MIN_OPERATIONS + (MAX_OPERATIONS - MIN_OPERATIONS) * (1 / (1 + Math.exp(-z)));
}

/** Eq. 3: L0 = d * m. */
export function labourPerSample(d: number, m: number): number {
  if (m < 1) throw new InvalidInputError(`the number of annotators m must be >= 1, got ${m}`);
  return d * m;
}

/** softmax(z / T) + lambda * votes; answers are class indices, -1 for none. */
export function fusedScores(logits: ArrayLike<number>, answers: ArrayLike<number>, params: FusionParams): Float64Array {
  const probs = probabilities(logits, params);
  const counts = new Float64Array(probs.length);
  for (const answer of Array.from(answers)) {
    if (!Number.isInteger(answer) || answer >= probs.length || answer < NO_ANSWER) {
      throw new InvalidInputError(`answers must be class indices in 0..${probs.length - 1} or ${NO_ANSWER}`);
    }
    if (answer >= 0) counts[answer] += 1;
  }
  return probs.map((p, i) => p + params.fusionLambda * counts[i]);
}

export function fuse(logits: ArrayLike<number>, answers: ArrayLike<number>, params: FusionParams): number {
  return argmax(fusedScores(logits, answers, params));
}

/** The estimator the compiler stored in the manifest's `confidence` table, else the default (as the agent does). */
export function estimatorFromManifest(table: Record<string, number>): Estimator {
  const keys = ["difficulty_coef_0", "difficulty_coef_1", "difficulty_coef_2"];
  if (!keys.every((k) => k in table) || !("difficulty_intercept" in table)) return DEFAULT_ESTIMATOR;
  return { coef: keys.map((k) => table[k]) as [number, number, number], intercept: table.difficulty_intercept };
}
