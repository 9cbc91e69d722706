// Architecture detection and per-block linear layers on every supported export layout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateOptModel } from '../bench/opt-model.js';
import { UserError } from '../src/errors.js';
import { openDecoderModel, readLinearWeight } from '../src/model/index.js';
import { needsShared } from './helpers.js';
import { MODELS, tempDir } from './model-fixtures.js';

const LLAMA_ROLES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const OPT_ROLES = ['q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2'];

// blocks and [in, out] shapes: each model's config.json (hidden_size, intermediate_size / ffn_dim, heads × head_dim,
// kv heads × head_dim); genai_config.json for the genai layout
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

test('ModelConfig: config.json normalised per family and consistent with the graph (stories260K LLaMA with GQA, a generated OPT)', () => {
  const { layout } = openDecoderModel(MODELS.stories);
  const c = layout.config;
  // models/stories260K/config.json
  assert.deepEqual(
    { hidden: c.hidden, layers: c.layers, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, ffn: c.ffn, vocab: c.vocab, maxPositions: c.maxPositions },
    { hidden: 64, layers: 5, heads: 8, kvHeads: 4, headDim: 8, ffn: 172, vocab: 512, maxPositions: 512 });
  assert.deepEqual([c.tieWordEmbeddings, c.attentionBias, c.mlpBias, c.dtype, c.modelType], [true, false, false, 'float32', 'llama']);
  // the same facts read off the graph
  const shape = (role: string) => layout.blocks[0]!.linears.find((l) => l.role === role)!;
  assert.equal(layout.blocks.length, c.layers);
  assert.equal(shape('q_proj').outFeatures, c.heads! * c.headDim!);
  assert.equal(shape('k_proj').outFeatures, c.kvHeads! * c.headDim!);
  assert.equal(shape('up_proj').outFeatures, c.ffn);

  // OPT: ffn_dim, biases from enable_bias, heads = kv heads, head_dim = hidden / heads, tied embeddings by default
  const opt = openDecoderModel(join(generateOptModel(tempDir(), { hidden: 64, layers: 2, ffn: 192, heads: 4 }).dir, 'onnx', 'model.onnx')).layout;
  assert.deepEqual(
    { hidden: opt.config.hidden, layers: opt.config.layers, heads: opt.config.heads, kvHeads: opt.config.kvHeads, headDim: opt.config.headDim, ffn: opt.config.ffn },
    { hidden: 64, layers: 2, heads: 4, kvHeads: 4, headDim: 16, ffn: 192 });
  assert.deepEqual([opt.config.attentionBias, opt.config.mlpBias, opt.config.tieWordEmbeddings], [true, true, true]);
  assert.equal(opt.blocks[1]!.linears.find((l) => l.role === 'fc1')!.outFeatures, opt.config.ffn);
  assert.ok(opt.blocks[1]!.linears.every((l) => l.biasName !== null), 'enable_bias: every linear has a bias in the graph');
});

test('ModelConfig from genai_config.json (onnxruntime-genai layout)', { skip: needsShared(MODELS.genai) }, () => {
  const { layout } = openDecoderModel(MODELS.genai);
  assert.equal(layout.detectedFrom, 'genai_config.json');
  // ../shared/models-src/onnx-layout-ref-tiny-random-llama/genai_config.json
  assert.deepEqual(
    { hidden: layout.config.hidden, layers: layout.config.layers, heads: layout.config.heads, kvHeads: layout.config.kvHeads, headDim: layout.config.headDim, vocab: layout.config.vocab, maxPositions: layout.config.maxPositions },
    { hidden: 16, layers: 2, heads: 1, kvHeads: 1, headDim: 16, vocab: 32000, maxPositions: 2048 });
});
