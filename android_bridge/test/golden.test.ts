/**
 * The phone's H-DNN and preprocessing against golden vectors written by the Python runtime
 * (`hgen.edge_agent.web_golden`): identical decisions, probabilities within 1e-5, model inputs within one grey
 * level, camera planes converted to the same RGB bytes, the familiarity check's statistics within 1e-9 (relative)
 * and its flags identical. Run by tests/integration/test_phone_golden.py, which writes the vectors and passes
 * their path in GOLDEN.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { type Familiarity, imageStats, unfamiliar } from "../src/familiarity.js";
import { Gate, LabourBucket } from "../src/gate.js";
import { PyRandom } from "../src/pyrandom.js";
import { dequantize, quantize } from "../src/quantize.js";
import * as hdnn from "../src/hdnn.js";
import { type InputSpec, preprocess } from "../src/preprocess.js";
import { isNewer } from "../src/versions.js";
import { ruleOf, yuvToRgba } from "../src/yuv.js";

const golden = JSON.parse(readFileSync(process.env.GOLDEN ?? "", "utf8"));
const TOLERANCE = 1e-5;

function close(actual: ArrayLike<number>, expected: number[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= TOLERANCE, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

test("H-CNN math matches the Python runtime", () => {
  assert.ok(golden.hdnn.length >= 10);
  for (const [n, c] of golden.hdnn.entries()) {
    const params = { temperature: c.temperature, fusionLambda: c.lambda };
    const estimator = { coef: c.estimator.coef, intercept: c.estimator.intercept };
    c.logits.forEach((logits: number[], row: number) => {
      const where = `case ${n} row ${row}`;
      const probs = hdnn.probabilities(logits, params);
      close(probs, c.probabilities[row], `${where} probabilities`);
      close([hdnn.confidence(logits, params)], [c.confidence[row]], `${where} confidence`);
      assert.equal(hdnn.needsHuman(hdnn.confidence(logits, params), c.tau), c.needs_human[row], `${where} gate`);
      assert.equal(hdnn.predict(logits), c.predict[row], `${where} predict`);
      const d = hdnn.difficulty(probs, estimator);
      close([d], [c.difficulty[row]], `${where} difficulty`);
      close([hdnn.labourPerSample(d, c.m)], [c.labour[row]], `${where} labour`);
      close(hdnn.fusedScores(logits, c.answers[row], params), c.fused_scores[row], `${where} fused scores`);
      assert.equal(hdnn.fuse(logits, c.answers[row], params), c.fused[row], `${where} fused`);
    });
  }
});

test("the gate's rate limit and labour bucket decide as the agent's", () => {
  assert.ok(golden.gate.length >= 5);
  for (const [n, c] of golden.gate.entries()) {
    const gate = new Gate(new LabourBucket(c.share, c.window), c.interval, c.audit_share, c.seed, c.unfamiliar_share);
    // a confident unfamiliar frame takes the unfamiliar draw, a confident familiar one the audit draw
    const decisions = c.unsure.map((underTau: boolean, i: number) => gate.decide(underTau, c.unfamiliar[i],
      c.labour[i], c.now[i]));
    assert.deepEqual(decisions, c.decisions, `gate case ${n}`);
  }
});

test("the familiarity check's statistics and flags match the Python runtime's", () => {
  const RELATIVE = 1e-9;
  assert.ok(golden.familiarity.length >= 3);
  let flagged = 0;
  let total = 0;
  for (const [n, c] of golden.familiarity.entries()) {
    const [h, w, channels] = c.shape;
    const raw = Buffer.from(c.images_b64, "base64");
    const images = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const size = h * w * channels;
    assert.equal(images.length, size * c.unfamiliar.length, `familiarity case ${n}: image count`);
    c.unfamiliar.forEach((expected: boolean, i: number) => {
      const where = `familiarity case ${n} (${c.shape}) image ${i} (${c.conditions[i]})`;
      const image = images.subarray(i * size, (i + 1) * size);
      const stats = imageStats(image, h, w, channels);
      for (const name of ["brightness", "contrast", "detail"] as const) {
        const want = c.stats[name][i];
        assert.ok(Math.abs(stats[name] - want) <= RELATIVE * Math.max(Math.abs(want), 1e-12),
          `${where} ${name}: ${stats[name]} vs ${want}`);
      }
      assert.equal(unfamiliar(c.familiarity as Familiarity, image, h, w, channels), expected, `${where}: unfamiliar`);
      flagged += expected ? 1 : 0;
      total += 1;
    });
  }
  assert.ok(flagged > 0 && flagged < total, `both verdicts are exercised (${flagged}/${total} unfamiliar)`);
  // bounds are familiar (exact here: a constant image has contrast and detail 0); no check, never unfamiliar
  const flat = new Float32Array(5 * 4 * 3).fill(0.5);
  const onBounds = { brightness: { low: 0.5, high: 0.5 }, contrast: { low: 0, high: 0 }, detail: { low: 0, high: 0 },
    quantile: 0.001 };
  assert.equal(unfamiliar(onBounds, flat, 5, 4, 3), false);
  assert.equal(unfamiliar({ ...onBounds, brightness: { low: 0, high: 0.25 } }, flat, 5, 4, 3), true);
  assert.equal(unfamiliar(null, flat, 5, 4, 3), false);
  assert.equal(unfamiliar(undefined, flat, 5, 4, 3), false);
  assert.throws(() => imageStats(flat, 2, 10, 3), hdnn.InvalidInputError);
  assert.throws(() => imageStats(flat, 5, 5, 3), hdnn.InvalidInputError);
});

test("bad input is refused with a typed error", () => {
  const params = { temperature: 1, fusionLambda: 0.1 };
  assert.throws(() => hdnn.probabilities([1], params), hdnn.InvalidInputError);
  assert.throws(() => hdnn.needsHuman(0.5, 1.5), hdnn.InvalidInputError);
  assert.throws(() => hdnn.fusedScores([1, 2], [2], params), hdnn.InvalidInputError);
});

test("preprocessing matches the Python agent's", () => {
  let exact = 0;
  let total = 0;
  for (const [n, c] of golden.preprocess.entries()) {
    const spec = c.input as InputSpec;
    const rgba = new Uint8Array(Buffer.from(c.rgba_b64, "base64"));
    const raw = Buffer.from(c.expected_b64, "base64");
    const expected = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const actual = preprocess({ width: c.frame_width, height: c.frame_height, channels: 4, data: rgba }, spec);
    assert.equal(actual.length, expected.length, `case ${n}: input size`);
    const level = Math.abs(spec.scale) * 1.0001;
    let perCase = 0;
    for (let i = 0; i < expected.length; i++) {
      const diff = Math.abs(actual[i] - expected[i]);
      assert.ok(diff <= level, `case ${n} (${c.frame_width}x${c.frame_height} -> ${spec.shape}) [${i}]: ${actual[i]} vs ${expected[i]}`);
      exact += diff === 0 ? 1 : 0;
      perCase += diff === 0 ? 1 : 0;
      total += 1;
    }
    console.log(`preprocess case ${n} ${c.frame_width}x${c.frame_height} -> ${spec.shape} ${spec.resize}: ${perCase}/${expected.length} identical`);
    // shrinking (OpenCV's area filter, whole or fractional ratios) is ported bit for bit
    if (c.frame_width * c.frame_height > spec.shape[1] * spec.shape[2]) assert.equal(perCase, expected.length, `case ${n}: shrinking`);
  }
  console.log(`preprocessing: ${exact}/${total} inputs bit-identical, the rest within one level`);
});

test("the audit draw is Python's random.Random(seed).random()", () => {
  assert.ok(golden.random.length >= 3);
  for (const c of golden.random) {
    const draws = new PyRandom(c.seed);
    c.values.forEach((value: number, i: number) => assert.equal(draws.random(), value, `seed ${c.seed} draw ${i}`));
  }
});

test("uint8 (de)quantisation gives the agent's int8 integers and floats", () => {
  assert.ok(golden.quantize.length >= 3);
  for (const [n, c] of golden.quantize.entries()) {
    const input = Float32Array.from(c.input);
    assert.deepEqual(Array.from(quantize(input, c.input_quant)), c.quantized, `quantize case ${n}`);
    assert.deepEqual(Array.from(dequantize(Uint8Array.from(c.output), c.output_quant)), c.dequantized, `dequantize case ${n}`);
  }
});

test("camera planes become the RGB the Python rule makes, byte for byte", () => {
  assert.ok(golden.yuv.length >= 8);
  for (const [n, c] of golden.yuv.entries()) {
    const data = new Uint8Array(Buffer.from(c.data_b64, "base64"));
    const rgba = yuvToRgba({ format: c.format, width: c.width, height: c.height, data, layout: c.layout,
      matrix: c.matrix, fullRange: c.full_range });
    const expected = Buffer.from(c.expected_b64, "base64");
    const rgb = rgba.data.filter((_, i) => i % 4 !== 3);
    assert.deepEqual(Buffer.from(rgb), expected, `yuv case ${n}: ${c.format} ${c.width}x${c.height} ${c.matrix} full=${c.full_range}`);
    assert.ok(rgba.data.every((v, i) => i % 4 !== 3 || v === 255), `yuv case ${n}: opaque`);
  }
  assert.equal(ruleOf(null), "bt601");
  assert.equal(ruleOf("bt709"), "bt709");
  assert.equal(ruleOf("bt2020-ncl"), null); // the browser converts what the rule does not cover
});

test("an update is newer in the order the agent uses", () => {
  assert.ok(golden.versions.length > 0);
  for (const c of golden.versions) {
    assert.equal(isNewer(c.candidate, c.running), c.newer, `${c.candidate} after ${c.running}`);
  }
});
