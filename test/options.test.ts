import { test } from 'node:test';
import assert from 'node:assert/strict';
import { llamaFamily } from '../src/model/families/llama.js';
import { optFamily } from '../src/model/families/opt.js';
import { sparsityFields } from '../src/native/sparsity.js';
import { defaultSeqlen, parseLayers, resolvePruneOptions, sparseGptOptions, sparseLlmOptions, sparsitySpec, targetSparsity } from '../src/pipeline/options.js';
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

test('resolvePruneOptions: the reference defaults (SparseGPT percdamp 0.01, blocksize 128; 128 samples, 64 for SparseLLM)', () => {
  const o = resolvePruneOptions({ model: 'm', out: 'o' });
  assert.equal(o.method, 'sparsellm');
  assert.deepEqual(o.spec, { sparsity: 0.5 });
  assert.equal(o.nsamples, 64); // SparseLLM's OPT script: 64 calibration samples
  assert.equal(resolvePruneOptions({ model: 'm', out: 'o', method: 'sparsegpt' }).nsamples, 128); // SparseGPT / Wanda: 128
  assert.deepEqual([o.percdamp, o.blocksize, o.calib, o.seed, o.layers, o.device], [0.01, 128, 'c4', 0, 'all', 'auto']);
  const given = resolvePruneOptions({ model: 'm', out: 'o', method: 'wanda', nsamples: 3, percdamp: 0.5, spec: { prunen: 2, prunem: 4 } });
  assert.deepEqual([given.nsamples, given.percdamp, given.spec], [3, 0.5, { prunen: 2, prunem: 4 }]);
  // calibration window: the model's positions, capped at the reference's 2048
  assert.equal(defaultSeqlen({ maxPositions: 512 }), 512);
  assert.equal(defaultSeqlen({ maxPositions: 4096 }), 2048);
  assert.equal(defaultSeqlen({}), 2048);
});

test('solver options are fully specified: the family gives α/β/γ (OPT 0.1, LLaMA 5, as the reference scripts), given values win', () => {
  const opt = sparseLlmOptions(optFamily, { sparsity: 0.6 });
  const llama = sparseLlmOptions(llamaFamily, { prunen: 2, prunem: 4, alpha: 2, epochs: 1 });
  assert.deepEqual([opt.alpha, opt.beta, opt.gamma], [0.1, 0.1, 0.1]);
  assert.deepEqual([llama.alpha, llama.beta, llama.gamma, llama.epochs], [2, 5, 5, 1]);
  const fields = ['alpha', 'beta', 'gamma', 'epochs', 'percdamp', 'blocksize', 'fc2Update', 'gdSteps', 'gdLr', 'referenceQuirks', 'lstsqRidge',
    'keepBest', 'outputRefit', 'refitRidge', 'sUpdate', 'sSteps', 'sLr'];
  for (const o of [opt, llama]) for (const k of fields) assert.notEqual((o as Record<string, unknown>)[k], undefined, k);
  const sg = sparseGptOptions({ sparsity: 0.5, blocksize: 32 });
  assert.deepEqual(sg, { sparsity: 0.5, percdamp: 0.01, blocksize: 32, accumulateDamping: false, doublePrecision: false });
  // what the bindings read: every sparsity field present
  assert.deepEqual(sparsityFields({ sparsity: 0.3 }), { sparsity: 0.3, prunen: 0, prunem: 0 });
  assert.deepEqual(sparsityFields({ prunen: 2, prunem: 4 }), { sparsity: 0, prunen: 2, prunem: 4 });
});
