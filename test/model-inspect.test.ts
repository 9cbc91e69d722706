// `sparsellm inspect`: counts, sparsity and N:M on the shared models, JSON output, CLI errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { inspectModel } from '../src/cli/commands/inspect.js';
import { detectNM, minZerosPerGroup } from '../src/model/sparsity.js';
import { BlockRunner } from '../src/model/index.js';
import { MODELS, tempDir } from './model-fixtures.js';
import { needsShared, projectRoot } from './helpers.js';

const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', join(projectRoot, 'src/cli/main.ts'), ...args], { encoding: 'utf8', cwd: projectRoot });

// blocks: config.json num_hidden_layers; linears per block: the family table (7 LLaMA, 6 OPT)
for (const [name, path, blocks, linears] of [
  ['stories260K', MODELS.stories, 5, 7],
  ['tiny-random-opt', MODELS.tinyOpt, 2, 6],
  ['tiny-wikitext-opt', MODELS.wikitextOpt, 4, 6],
  ['genai layout', MODELS.genai, 2, 7],
] as const) {
  test(`inspect ${name}: ${blocks} blocks x ${linears} linears, dense`, { skip: needsShared(path) }, () => {
    const r = inspectModel(path);
    assert.equal(r.blocks.length, blocks);
    for (const b of r.blocks) {
      assert.equal(b.linears.length, linears);
      for (const l of b.linears) {
        assert.equal(l.params, l.in * l.out);
        assert.equal(l.sparsity, 0);
        assert.equal(l.nm, null);
      }
    }
  });
}

test('inspect --json prints exactly one JSON object with the documented fields', () => {
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(projectRoot, 'src/cli/main.ts'), 'inspect', join(MODELS.stories, '..', '..'), '--json'], { encoding: 'utf8', cwd: projectRoot });
  const r = JSON.parse(out);
  assert.equal(r.architecture, 'llama');
  assert.equal(r.blocks.length, 5);
  assert.deepEqual(Object.keys(r.blocks[0]).sort(), ['index', 'linears']);
  const k = r.blocks[0].linears[1];
  assert.deepEqual({ role: k.role, in: k.in, out: k.out, sparsity: k.sparsity, params: k.params, nm: k.nm }, { role: 'k_proj', in: 64, out: 32, sparsity: 0, params: 2048, nm: null }); // hidden 64 → 4 kv heads × head_dim 8
});

test('N:M detector follows the SparseGPT convention (N pruned of every M)', () => {
  const w = Float32Array.from({ length: 2 * 8 }, (_, i) => i + 1);
  assert.equal(detectNM(w, 2, 8), null);
  for (const i of [0, 1, 6, 7, 8, 10, 13, 15]) w[i] = 0; // every group of 4 has exactly 2 zeros
  assert.equal(minZerosPerGroup(w, 2, 8, 4), 2);
  assert.equal(detectNM(w, 2, 8), '2:4');
  const w48 = Float32Array.from({ length: 8 }, (_, i) => (i < 4 ? 0 : 1)); // 4:8 but a dense group of 4
  assert.equal(detectNM(w48, 1, 8), '4:8');
});

test('inspect reports sparsity and 2:4 after pruning through the block runner and saving', async () => {
  const runner = await BlockRunner.open(MODELS.stories);
  const w = runner.getBlockWeights(1).get('up_proj')!;
  for (let i = 0; i < w.length; i += 4) { w[i] = 0; w[i + 3] = 0; }
  await runner.setBlockWeights(1, new Map([['up_proj', w]]));
  const dir = tempDir();
  runner.saveModel(join(dir, 'model.onnx'));
  const r = inspectModel(join(dir, 'model.onnx'));
  const up = r.blocks[1]!.linears.find((l) => l.role === 'up_proj')!;
  assert.equal(up.sparsity, 0.5);
  assert.equal(up.nm, '2:4');
  assert.equal(r.blocks[0]!.linears.find((l) => l.role === 'up_proj')!.nm, null);
  assert.ok(Math.abs(r.totals.sparsity - (64 * 172 * 0.5) /* up_proj is [in 64, out 172] */ / r.totals.params) < 1e-12);
});

test('inspect on bad input: exit code 2 and one line on stderr', () => {
  const dir = tempDir();
  for (const args of [['inspect', join(dir, 'missing')], ['inspect', dir], ['inspect', join(projectRoot, 'package.json')]]) {
    const r = cli(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^sparsellm: /);
  }
});
