// Architecture detection and per-block linear layers on every supported export layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../src/errors.js';
import { openDecoderModel, readLinearWeight } from '../src/model/index.js';
import { needsShared } from './helpers.js';
import { MODELS, tempDir } from './model-fixtures.js';

const LLAMA_ROLES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const OPT_ROLES = ['q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2'];

const layouts = [
  { name: 'stories260K', path: MODELS.stories, arch: 'llama', blocks: 5, roles: LLAMA_ROLES, dtype: 'float32', shapes: { q_proj: [64, 64], k_proj: [64, 32], v_proj: [64, 32], gate_proj: [64, 172], down_proj: [172, 64] } },
  { name: 'tiny-random-opt', path: MODELS.tinyOpt, arch: 'opt', blocks: 2, roles: OPT_ROLES, dtype: 'float32', shapes: { q_proj: [64, 64], fc1: [64, 256], fc2: [256, 64] } },
  { name: 'tiny-wikitext-opt', path: MODELS.wikitextOpt, arch: 'opt', blocks: 4, roles: OPT_ROLES, dtype: 'float32', shapes: { out_proj: [128, 128], fc1: [128, 512], fc2: [512, 128] } },
  { name: 'genai builder', path: MODELS.genai, arch: 'llama', blocks: 2, roles: LLAMA_ROLES, dtype: 'float16', shapes: { q_proj: [16, 16], up_proj: [16, 64], down_proj: [64, 16] } },
] as const;

for (const c of layouts) {
  test(`${c.name}: ${c.blocks} blocks x ${c.roles.length} linears with roles, shapes, names`, { skip: needsShared(c.path) }, () => {
    const { layout, model } = openDecoderModel(c.path);
    assert.equal(layout.architecture, c.arch);
    assert.equal(layout.blocks.length, c.blocks);
    for (const block of layout.blocks) {
      assert.deepEqual(block.linears.map((l) => l.role), [...c.roles]);
      for (const l of block.linears) {
        assert.equal(l.block, block.index);
        assert.ok(l.matmulNode.includes(`layers.${block.index}/`) && l.matmulNode.includes(`/${l.role}/`), l.matmulNode);
        assert.deepEqual(model.dims(l.weightName), [l.inFeatures, l.outFeatures], 'weight stored [in, out]');
        assert.equal(l.dtype, c.dtype);
        const shape = (c.shapes as Record<string, readonly number[]>)[l.role];
        if (shape) assert.deepEqual([l.inFeatures, l.outFeatures], [...shape], `${l.role} [in, out]`);
        if (c.arch === 'opt') {
          const prefix = `model.decoder.layers.${block.index}.${l.role.endsWith('proj') ? 'self_attn.' : ''}${l.role}.bias`;
          assert.equal(l.biasName, prefix);
        } else assert.equal(l.biasName, null);
      }
    }
  });
}

test('readLinearWeight returns [out, in] (the transpose of the ONNX [in, out] initializer)', () => {
  const { layout, model } = openDecoderModel(MODELS.stories);
  const k = layout.blocks[2]!.linears.find((l) => l.role === 'k_proj')!; // GQA: out 32 < in 64
  const onnx = model.readFloat32(k.weightName); // [in=64, out=32]
  const w = readLinearWeight(model, k); // [out=32, in=64]
  for (const [o, i] of [[0, 0], [5, 17], [31, 63], [12, 40]] as const) assert.equal(w[o * 64 + i], onnx[i * 32 + o]);
});

test('without config.json the architecture comes from graph names; MODEL may be a folder', () => {
  const dir = tempDir();
  copyFileSync(MODELS.stories, join(dir, 'model.onnx'));
  const { layout } = openDecoderModel(dir);
  assert.equal(layout.architecture, 'llama');
  assert.equal(layout.detectedFrom, 'graph');
  const llama = openDecoderModel(join(MODELS.stories, '..', '..'));
  assert.equal(llama.layout.architecture, 'llama');
  assert.equal(llama.layout.detectedFrom, 'config.json');
});

test('an unsupported config.json model_type is a UserError', () => {
  const dir = tempDir();
  copyFileSync(MODELS.stories, join(dir, 'model.onnx'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
  assert.throws(() => openDecoderModel(dir), (e: unknown) => e instanceof UserError && /gpt2/.test(e.message));
});
