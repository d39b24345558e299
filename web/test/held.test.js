// The held time telemetry reports: the same median over the same window as the Python agent.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { HeldTime, WINDOW } from '../src/held.js';

test('nothing reported before a figure, then the benchmark until requests run', () => {
  const held = new HeldTime();
  assert.equal(held.ms, null);
  held.reset(4);
  assert.equal(held.ms, 4);
  held.add(2);
  assert.equal(held.ms, 3);
  held.add(2);
  assert.equal(held.ms, 2);
});

test('a few slow requests do not move the figure; a lasting change shows within half the window', () => {
  const held = new HeldTime();
  for (let i = 0; i < WINDOW - 2; i += 1) held.add(2);
  held.add(5);
  held.add(4);
  assert.equal(held.ms, 2);
  const steady = new HeldTime();
  for (let i = 0; i < WINDOW; i += 1) steady.add(2);
  let slower = 0;
  while (steady.ms === 2) {
    steady.add(6);
    slower += 1;
  }
  assert.equal(slower, (WINDOW >> 1) + 1);
  assert.equal(steady.ms, 6);
});

test('only the last window counts, as in the Python agent', () => {
  const held = new HeldTime();
  held.reset(100);
  for (let value = 0; value < WINDOW; value += 1) held.add(value);
  assert.equal(held.ms, WINDOW >> 1);
});
