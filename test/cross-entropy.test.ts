import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rowsNll, tokenNll } from '../src/data/perplexity.js';
import { gaussian, mulberry32 } from './helpers.js';

test('native row NLL equals the float64 JS log-softmax (1e-9 relative), skipped rows are NaN', async () => {
  const randn = gaussian(mulberry32(7));
  for (const [rows, vocab] of [[3, 5], [37, 50272], [129, 512]] as const) {
    const logits = Float32Array.from({ length: rows * vocab }, () => 8 * randn());
    const targets = Int32Array.from({ length: rows }, (_, r) => (r % 5 === 4 ? -1 : (r * 7919) % vocab));
    const nll = await rowsNll(logits, vocab, targets);
    for (let r = 0; r < rows; r++) {
      if (targets[r]! < 0) {
        assert.ok(Number.isNaN(nll[r]));
        continue;
      }
      const want = tokenNll(logits, r, vocab, targets[r]!);
      assert.ok(Math.abs(nll[r]! - want) <= 1e-6 * Math.max(1, Math.abs(want)), `row ${r}: ${nll[r]} vs ${want}`);
    }
  }
});

test('native row NLL rejects a target outside the vocabulary', async () => {
  await assert.rejects(rowsNll(new Float32Array(4), 4, Int32Array.from([4])), /outside the vocabulary/);
});
