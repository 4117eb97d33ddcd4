/**
 * The labour bucket (src/gate.ts) is held to its capacity: refunds of a backlog (every sample EXPIRED when the hub
 * came back) once lifted it to ~100 windows of labour, and the labour limit was off until they were spent.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { LabourBucket } from "../src/gate.js";

test("refunds never lift the bucket above its capacity", () => {
  const bucket = new LabourBucket(0.01); // capacity: 1000 frames of refill
  let held = 0;
  for (let frame = 0; frame < 100_000; frame++) { // the hub away: escalations as the tokens allow
    bucket.frame();
    if (bucket.take(9)) held += 1;
  }
  for (let i = 0; i < held; i++) bucket.settle(9, 0); // all given back when it returns
  assert.ok(held > 100);
  assert.equal(bucket.tokens, bucket.capacity, `tokens ${bucket.tokens}, capacity ${bucket.capacity}`);
  const unlimited = new LabourBucket(null);
  unlimited.settle(9, 0);
  assert.equal(unlimited.tokens, 9, "no share: no capacity to hold to");
});

test("a charge beyond the reservation still goes below zero (debt), as before", () => {
  const bucket = new LabourBucket(0.01);
  bucket.frame();
  bucket.settle(0, 100);
  assert.ok(bucket.tokens < 0);
});
