import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseLayers, sparsitySpec, targetSparsity } from '../src/pipeline/options.js';
import { UserError } from '../src/errors.js';

test('--layers: all, first-half, last-half, ranges and lists', () => {
  assert.deepEqual(parseLayers('all', 5), [0, 1, 2, 3, 4]);
  assert.deepEqual(parseLayers('first-half', 5), [0, 1]);
  assert.deepEqual(parseLayers('last-half', 4), [2, 3]);
  assert.deepEqual(parseLayers('0-2', 12), [0, 1, 2]);
  assert.deepEqual(parseLayers('4,0,2-3', 12), [0, 2, 3, 4]);
  assert.throws(() => parseLayers('0-12', 12), UserError);
  assert.throws(() => parseLayers('3-1', 12), UserError);
  assert.throws(() => parseLayers('abc', 12), UserError);
});

test('sparsity specs: range and N:M validity (prunen = weights pruned per group)', () => {
  assert.deepEqual(sparsitySpec(0.7, undefined, undefined), { sparsity: 0.7 });
  assert.equal(targetSparsity(sparsitySpec(undefined, 2, 4)), 0.5);
  assert.equal(targetSparsity(sparsitySpec(undefined, 3, 4)), 0.75);
  for (const bad of [-0.1, 1, 1.5, Number.NaN]) assert.throws(() => sparsitySpec(bad, undefined, undefined), UserError);
  assert.throws(() => sparsitySpec(undefined, 4, 4), UserError);
  assert.throws(() => sparsitySpec(undefined, 5, 4), UserError);
  assert.throws(() => sparsitySpec(undefined, 2, undefined), UserError);
});
