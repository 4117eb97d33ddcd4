/** The page's per-frame lists keep a recent window (src/recent.ts); `?keep=` chooses another. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { keepRecent, RECENT_RECORDS, windowSize } from "../src/recent.js";

test("a list keeps the last records only", () => {
  const list: number[] = [];
  for (let i = 0; i < 5000; i++) keepRecent(list, i, RECENT_RECORDS);
  assert.equal(list.length, RECENT_RECORDS);
  assert.equal(list[0], 4000);
  assert.equal(list[list.length - 1], 4999);
});

test("?keep= chooses the window", () => {
  assert.equal(windowSize(null), RECENT_RECORDS);
  assert.equal(windowSize("all"), Infinity);
  assert.equal(windowSize("50"), 50);
  for (const bad of ["0", "-3", "x", ""]) assert.equal(windowSize(bad), RECENT_RECORDS, bad);
});
