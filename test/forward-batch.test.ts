// Forward batches (issue 16): the pipeline runs each block forward on fewer sequences at once than the statistics
// group it accumulates (memory.ts forwardBatchSize / statisticsGroupSize), to bound onnxruntime's working memory on wide
// models. The pruned weights must not depend on that choice: onnxruntime computes each sequence the same way whatever
// the batch, and the Hessians / scalers are accumulated per statistics group, not per forward batch. Checked here byte
// for byte on the output model, for SparseGPT, Wanda and SparseLLM, against the run whose forward batch is the whole group.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { forwardArena, forwardBatchSize, forwardWorkBytes, statisticsGroupSize } from '../src/pipeline/memory.js';
import { PRUNE_DEFAULTS, sparsitySpec, type Method, type PruneOptions } from '../src/pipeline/options.js';
import { createProgress } from '../src/pipeline/progress.js';
import { runPrune, type PruneReport } from '../src/pipeline/prune.js';
import { outputHashes, tempRoot } from './faults-helpers.js';
import { needsShared } from './helpers.js';
import { MODELS } from './model-fixtures.js';

const root = tempRoot('sparsellm-forward-batch-test-');

// 6 sequences of 64 tokens: one statistics group of 6 (4096 / 64 > 6), run as 6, 3, 2 or 1 sequences at a time
const options = (model: string, method: Method, out: string, forwardBatch?: number): PruneOptions => ({
  model, method, spec: sparsitySpec(0.5, undefined, undefined), calib: 'tinystories', nsamples: 6, seqlen: 64, seed: 0, layers: 'all',
  sparsellm: { epochs: 2 }, out, force: false, resume: false, eval: [], quiet: true, ...(forwardBatch ? { forwardBatch } : {}),
});

const report = (out: string) => JSON.parse(readFileSync(join(out, 'sparsellm-report.json'), 'utf8')) as PruneReport;

const cases = [
  { name: 'stories260K', model: MODELS.stories, methods: ['sparsegpt', 'wanda', 'sparsellm'] as Method[], skip: false as string | false },
  { name: 'tiny-random-opt', model: MODELS.tinyOpt, methods: ['sparsegpt', 'sparsellm'] as Method[], skip: needsShared('models/tiny-random-opt') },
];

for (const c of cases) {
  test(`${c.name}: the pruned weights are byte-identical whatever the forward batch`, { skip: c.skip }, async () => {
    assert.equal(statisticsGroupSize(6, 64), 6);
    for (const method of c.methods) {
      const whole = join(root, `${c.name}-${method}-6`);
      await runPrune(options(c.model, method, whole, 6), createProgress(false));
      for (const batch of method === 'sparsegpt' ? [3, 2, 1] : [1]) {
        const out = join(root, `${c.name}-${method}-${batch}`);
        await runPrune(options(c.model, method, out, batch), createProgress(false));
        assert.deepEqual(outputHashes(out), outputHashes(whole), `${method}, forward batch ${batch}`);
        // the report's error column uses Σ‖Wx‖², which onnxruntime sums in float32 per run: equal to rounding
        const [a, b] = [report(out).layers, report(whole).layers];
        assert.equal(a.length, b.length);
        a.forEach((l, k) => {
          assert.equal(l.sparsity, b[k]!.sparsity);
          const [x, y] = [l.layerOutputError, b[k]!.layerOutputError];
          if (x === null || y === null) assert.equal(x, y);
          else assert.ok(Math.abs(x - y) <= 1e-4 * Math.abs(y) + 1e-12, `${method} ${l.block} ${l.role}: error ${x} against ${y}`);
        });
      }
    }
  });
}

test('forwardBatchSize: the whole group for small models, a divisor of it that fits the budget for wide ones', () => {
  // stories260K-sized: 8 heads, FFN 768, fp32, 8 × 128 tokens: all 8 sequences at once
  assert.equal(forwardBatchSize(8, 128, { heads: 8, ffn: 768, elementBytes: 4 }), 8);
  // OPT-1.3b-sized fp32, 4 × 1024 tokens: one sequence's attention scores alone are 32 · 1024² · 4 bytes = 128 MB a copy
  const opt = { heads: 32, ffn: 8192, elementBytes: 4 };
  const wide = forwardBatchSize(4, 1024, opt);
  assert.ok(wide >= 1 && wide < 4 && 4 % wide === 0, `forward batch ${wide}`);
  const budget = PRUNE_DEFAULTS.forwardBudgetMb * 2 ** 20;
  assert.ok(wide === 1 || forwardWorkBytes(wide, 1024, opt) <= budget);
  assert.ok(forwardWorkBytes(wide * 2, 1024, opt) > budget, 'the next divisor would not fit');
  // 12 sequences of 256 tokens (group 12), a budget that admits 5 sequences: the largest divisor of 12 up to 5 is 4
  const perSequence = forwardWorkBytes(1, 256, { heads: 1, ffn: 0, elementBytes: 4 });
  const heads = Math.floor(budget / (5.5 * perSequence));
  assert.equal(forwardBatchSize(12, 256, { heads, ffn: 0, elementBytes: 4 }), 4);
});

test('forwardArena: the arena where one forward batch fits the budget, none for a wide model\'s single sequence', () => {
  // OPT-125m-sized fp32 (d=768, 12 heads, FFN 3072), 32 × 512 tokens: 44 MB a sequence, within the budget
  const small = { heads: 12, ffn: 3072, elementBytes: 4 };
  const b = forwardBatchSize(32, 512, small);
  assert.ok(forwardWorkBytes(b, 512, small) <= PRUNE_DEFAULTS.forwardBudgetMb * 2 ** 20);
  assert.equal(forwardArena(b, 512, small), true);
  // OPT-1.3b-sized fp16, 4 × 1024 tokens: one sequence is already over the budget, so it runs alone and without the arena
  const wide = { heads: 32, ffn: 8192, elementBytes: 2 };
  assert.equal(forwardBatchSize(4, 1024, wide), 1);
  assert.ok(forwardWorkBytes(1, 1024, wide) > PRUNE_DEFAULTS.forwardBudgetMb * 2 ** 20);
  assert.equal(forwardArena(1, 1024, wide), false);
});

test('blocks after the last pruned one are not run (their outputs would be thrown away)', async () => {
  const labels: string[] = [];
  const silent = createProgress(false);
  const progress = { ...silent, start: (label: string, total: number) => (labels.push(label), silent.start(label, total)) };
  await runPrune({ ...options(MODELS.stories, 'sparsegpt', join(root, 'layers-0-1')), layers: '0-1' }, progress);
  assert.deepEqual(labels.filter((l) => / forward$| statistics$/.test(l)), ['block 0 statistics', 'block 0 forward', 'block 1 statistics']);
});
