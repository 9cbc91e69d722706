// FedSpaLLM client step (src/federate/local-prune.ts): pruning the assigned blocks in memory must give exactly the
// weights a plain `prune --layers <blocks>` run writes for those blocks (same sequential pipeline, the other blocks
// dense, Eq. 4.22), only those blocks, at the target sparsity, without writing anything or touching the input.
// The reference here is an independent path: the pruned model runPrune writes to disk, read back from the file.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pruneAssignedBlocks, type LocalPruneRequest } from '../src/federate/local-prune.js';
import { OnnxModel, analyzeDecoder, resolveModelFile } from '../src/model/index.js';
import { sparsitySpec } from '../src/pipeline/options.js';
import { createProgress } from '../src/pipeline/progress.js';
import { runPrune } from '../src/pipeline/prune.js';
import { hashTree, tempRoot } from './faults-helpers.js';
import { BUNDLED_STORIES, needsShared, shared } from './helpers.js';

const quiet = createProgress(false);
const root = tempRoot('sparsellm-local-prune-');

function zeroFraction(v: Float32Array): number {
  let z = 0;
  for (const x of v) if (x === 0) z++;
  return z / v.length;
}

async function checkAgainstPrune(req: LocalPruneRequest, out: string): Promise<void> {
  const inputHashes = hashTree(resolveModelFile(req.model));
  const local = await pruneAssignedBlocks(req, quiet);
  await runPrune(
    { model: req.model, out, method: req.method, spec: sparsitySpec(req.sparsity, undefined, undefined), calib: req.calib, nsamples: req.nsamples, seqlen: req.seqlen, seed: req.seed, layers: req.blocks.join(','), quiet: true },
    quiet,
  );
  const dense = OnnxModel.load(resolveModelFile(req.model));
  const written = OnnxModel.load(resolveModelFile(out));
  const layout = analyzeDecoder(dense);
  const expected = layout.blocks.filter((b) => req.blocks.includes(b.index)).flatMap((b) => b.linears);
  // exactly the assigned blocks' linears, in block then layer order
  assert.deepEqual(local.tensors.map((t) => `${t.block}/${t.role}/${t.name}`), expected.map((l) => `${l.block}/${l.role}/${l.weightName}`));
  for (const t of local.tensors) {
    assert.deepEqual(t.dims, dense.dims(t.name));
    assert.deepEqual(t.values, written.readFloat32(t.name), `block ${t.block} ${t.role}: equal to prune --layers' output`);
    // target sparsity: every solver here prunes floor/round(s·n) per row or column group, so within 1 % of s
    assert.ok(Math.abs(zeroFraction(t.values) - req.sparsity) < 0.01, `block ${t.block} ${t.role}: sparsity ${zeroFraction(t.values)} vs ${req.sparsity}`);
    assert.ok(zeroFraction(dense.readFloat32(t.name)) < 0.01, 'the dense weight was dense');
  }
  // the blocks not assigned stay dense in prune --layers' output (the comparison is with a partial prune)
  for (const b of layout.blocks.filter((x) => !req.blocks.includes(x.index))) {
    for (const l of b.linears) assert.deepEqual(written.readFloat32(l.weightName), dense.readFloat32(l.weightName));
  }
  assert.deepEqual(hashTree(resolveModelFile(req.model)), inputHashes, 'the input model is not modified');
  assert.ok(local.seconds > 0);
}

test('stories260K, SparseGPT 70 %, blocks 1 and 3: the blocks of prune --layers 1,3, nothing else, nothing written', async () => {
  const before = readdirSync(root).length;
  await checkAgainstPrune(
    { model: BUNDLED_STORIES, calib: 'tinystories', blocks: [3, 1], method: 'sparsegpt', sparsity: 0.7, nsamples: 4, seqlen: 64, seed: 0 },
    join(root, 'stories-sparsegpt'),
  );
  assert.equal(readdirSync(root).length, before + 1, 'only the comparison run wrote a folder');
});

test('tiny-wikitext-opt, Wanda 80 %, blocks 0 and 2 (OPT path, biases)', { skip: needsShared('models/tiny-wikitext-opt') }, async () => {
  await checkAgainstPrune(
    { model: shared('models', 'tiny-wikitext-opt'), calib: 'tinystories', blocks: [0, 2], method: 'wanda', sparsity: 0.8, nsamples: 4, seqlen: 64, seed: 3 },
    join(root, 'opt-wanda'),
  );
});

test('bad assignments are refused with one clear message', async () => {
  const base: LocalPruneRequest = { model: BUNDLED_STORIES, calib: 'tinystories', blocks: [0], method: 'magnitude', sparsity: 0.5, nsamples: 1, seqlen: 16, seed: 0 };
  const cases: [Partial<LocalPruneRequest>, RegExp][] = [
    [{ blocks: [] }, /no blocks assigned/],
    [{ blocks: [1, 1] }, /name a block twice/],
    [{ blocks: [-1] }, /not a block index/],
    [{ blocks: [5] }, /out of range: the model has 5 blocks/],
    [{ sparsity: 1 }, /outside \[0, 1\)/],
    [{ method: 'random' as LocalPruneRequest['method'] }, /unknown method random/],
  ];
  for (const [patch, message] of cases) {
    await assert.rejects(pruneAssignedBlocks({ ...base, ...patch }, quiet), (e: Error) => e.name === 'UserError' && message.test(e.message));
  }
  assert.ok(!existsSync(join(root, 'nothing')));
});
