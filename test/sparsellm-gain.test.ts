// Guards the paper's central claim (PAPERS.md §3.3): at high sparsity SparseLLM's global FFN pruning gives lower
// perplexity than SparseGPT. Short version of `npm run repro` (90 % only, first 8 evaluation windows of 512).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PruneOptions } from '../src/pipeline/options.js';
import { createProgress } from '../src/pipeline/progress.js';
import { runPrune } from '../src/pipeline/prune.js';
import { needsShared, shared } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'sparsellm-gain-'));

async function perplexities(model: string, method: PruneOptions['method'], evals: string[], sparsellm: PruneOptions['sparsellm'] = {}): Promise<Record<string, number>> {
  const r = await runPrune({
    model, method, spec: { sparsity: 0.9 }, calib: 'ptb', nsamples: 16, seqlen: 256, seed: 0, sparsellm,
    out: join(work, `${method}`), force: true, eval: evals, evalSeqlen: 512, evalMaxWindows: 8, quiet: true,
  }, createProgress(false));
  return Object.fromEntries(Object.entries(r.perplexity!).map(([k, v]) => [k, v.perplexity]));
}

for (const name of ['tiny-wikitext-opt', 'stories260K']) {
  test(`${name} at 90 %: SparseLLM has lower PTB and WikiText-2 perplexity than SparseGPT`, { skip: needsShared(`models/${name}`, 'data/ptb', 'data/wikitext2') }, async () => {
    const model = shared('models', name);
    const evals = ['ptb', 'wikitext2'];
    const sgpt = await perplexities(model, 'sparsegpt', evals);
    const sllm = await perplexities(model, 'sparsellm', evals);
    for (const e of evals) assert.ok(sllm[e]! < sgpt[e]!, `${e}: sparsellm ${sllm[e]} vs sparsegpt ${sgpt[e]}`);
  });
}

// Keep-best returns epoch 0 (SparseGPT + output refit) when every later epoch is worse, so the test above would pass
// with broken epochs. On stories260K the alternating epochs must beat that baseline (on tiny-wikitext-opt at 90 % every
// block keeps epoch 0, README "SparseLLM vs SparseGPT", so the epochs are not asserted there). Measured at 86f702b
// (8 windows): SparseGPT + refit PTB 302.1, WikiText-2 425.2; SparseLLM 203.3, 335.7.
test('stories260K at 90 %: the alternating epochs beat SparseGPT + output refit (epochs: 1)', { skip: needsShared('models/stories260K', 'data/ptb', 'data/wikitext2') }, async () => {
  const model = shared('models', 'stories260K');
  const evals = ['ptb', 'wikitext2'];
  const base = await perplexities(model, 'sparsellm', evals, { epochs: 1 });
  const sllm = await perplexities(model, 'sparsellm', evals);
  for (const e of evals) assert.ok(sllm[e]! < base[e]!, `${e}: sparsellm ${sllm[e]} vs SparseGPT + refit ${base[e]}`);
});
