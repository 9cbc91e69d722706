// Block-by-block execution reproduces the whole graph: logits, captured MatMul inputs, and weight edits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockRunner, type BlockState } from '../src/model/index.js';
import { needsShared } from './helpers.js';
import { MODELS, maxAbs, maxAbsDiff, runFullModel, runModelFile, tokenBatch } from './model-fixtures.js';

const B = 2, S = 16;

async function chained(runner: BlockRunner, ids: BigInt64Array, capture = false) {
  let state: BlockState = await runner.prologue(ids, B, S);
  const captures: Map<string, Float32Array>[] = [];
  for (let i = 0; i < runner.numBlocks; i++) {
    const r = await runner.runBlock(i, state, { capture });
    state = r.state;
    captures.push(r.captures);
  }
  return { logits: await runner.epilogue(state), captures };
}

// vocab and blocks: each model's config.json (vocab_size, num_hidden_layers; genai_config.json for the genai layout)
const cases = [
  { name: 'stories260K (LLaMA, GQA, position_ids)', path: MODELS.stories, vocab: 512, blocks: 5, tol: 1e-4 },
  { name: 'tiny-random-opt (OPT, no position_ids)', path: MODELS.tinyOpt, vocab: 50272, blocks: 2, tol: 1e-4 },
  // fp16 end to end: block outputs are rounded to fp16 at each boundary, so allow fp16-sized error.
  { name: 'genai builder layout (fp16, contrib ops)', path: MODELS.genai, vocab: 32000, blocks: 2, tol: 2e-3 },
];

for (const c of cases) {
  test(`${c.name}: prologue -> blocks -> epilogue reproduces the full model's logits and MatMul inputs`, { skip: needsShared(c.path) }, async (t) => {
    const runner = await BlockRunner.open(c.path);
    assert.equal(runner.numBlocks, c.blocks);
    const ids = tokenBatch(B, S, c.vocab, 7);
    const inputs = runner.layout.blocks.flatMap((b) => b.linears.map((l) => l.inputName));
    const full = await runFullModel(c.path, ids, B, S, [...new Set(inputs)]);
    const mine = await chained(runner, ids, true);

    assert.equal(mine.logits.length, B * S * c.vocab);
    const diff = maxAbsDiff(mine.logits, full.logits);
    t.diagnostic(`max |Δlogit| ${diff.toExponential(2)} (tolerance ${c.tol})`);
    assert.ok(diff <= c.tol, `max |Δlogit| ${diff} > ${c.tol}`);
    assert.ok(maxAbs(full.logits) > 0.01, 'logits are not trivially zero');
    // Also against the untouched file, loaded by path as ORT normally does.
    const plain = await runModelFile(c.path, ids, B, S);
    const plainDiff = maxAbsDiff(mine.logits, plain);
    t.diagnostic(`vs. the original file: max |Δlogit| ${plainDiff.toExponential(2)}`);
    assert.ok(plainDiff <= c.tol, `max |Δlogit| vs original file ${plainDiff} > ${c.tol}`);

    let worst = 0;
    for (const block of runner.layout.blocks) {
      for (const l of block.linears) {
        const got = mine.captures[block.index]!.get(l.role)!;
        const want = full.taps.get(l.inputName)!;
        assert.equal(got.length, B * S * l.inFeatures, `block ${block.index} ${l.role} capture is [batch*seqlen, in]`);
        const d = maxAbsDiff(got, want);
        worst = Math.max(worst, d / Math.max(1, maxAbs(want)));
        assert.ok(d <= c.tol * Math.max(1, maxAbs(want)), `block ${block.index} ${l.role}: capture differs by ${d}`);
      }
    }
    t.diagnostic(`worst capture difference ${worst.toExponential(2)} (relative to max(1, max |x|))`);
    await runner.dispose();
  });
}

test('setBlockWeights changes later runs without re-running earlier blocks; getBlockWeights is [out, in]', async () => {
  const runner = await BlockRunner.open(MODELS.stories);
  const ids = tokenBatch(B, S, 512, 3);
  const before = await chained(runner, ids);

  const s0 = await runner.prologue(ids, B, S);
  const { state: s1 } = await runner.runBlock(0, s0);
  assert.ok(!s1.tensors.has('input_ids') && s1.tensors.has('/model/layers.0/Add_1_output_0'), 'state keeps only what later parts need');
  const w = runner.getBlockWeights(1);
  assert.equal(w.get('k_proj')!.length, 32 * 64);
  const zeroed = new Map([['down_proj', new Float32Array(64 * 172)]]);
  await runner.setBlockWeights(1, zeroed);
  assert.ok(runner.getBlockWeights(1).get('down_proj')!.every((x) => x === 0));

  let state = s1;
  for (let i = 1; i < runner.numBlocks; i++) state = (await runner.runBlock(i, state)).state;
  const after = await runner.epilogue(state);
  assert.ok(maxAbsDiff(after, before.logits) > 1e-3, 'zeroing a weight changed nothing');

  // Restoring the original weights gives back the original logits.
  await runner.setBlockWeights(1, w);
  const restored = await chained(runner, ids);
  assert.ok(maxAbsDiff(restored.logits, before.logits) < 1e-6);
  await runner.dispose();
});
