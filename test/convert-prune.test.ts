// Pruning a checkpoint folder (converted through the cache) equals pruning the reference ONNX export of the same
// weights, and `prune --format safetensors|both` writes a HF checkpoint that sparsellm converts back to the same model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { inspectModel } from '../src/cli/commands/inspect.js';
import { convertCheckpoint } from '../src/convert/convert.js';
import { SafetensorsCheckpoint } from '../src/convert/safetensors.js';
import { needsShared, shared } from './helpers.js';
import { maxAbsDiff } from './model-fixtures.js';
import { runCli } from './cli-helpers.js';

const skip = needsShared('models-src', 'models/stories260K', 'models/tiny-wikitext-opt');
const work = mkdtempSync(join(tmpdir(), 'sparsellm-convert-prune-'));
const env = { SPARSELLM_CACHE: join(work, 'cache') };
const calib = ['--calib', 'tinystories', '--nsamples', '8', '--seqlen', '64', '--quiet', '--json'];
const path = (p: string) => shared(p);

async function prune(model: string, out: string, args: string[]): Promise<{ perplexity?: Record<string, { perplexity: number }> }> {
  const r = await runCli(['prune', '--model', model, ...args, ...calib, '--out', join(work, out)], env);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** Logits of a fixed batch (unoptimised onnxruntime session, so two graphs are compared op by op). */
async function logits(onnx: string, vocab: number): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(onnx, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  const B = 2, S = 11;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: B * S }, (_, k) => BigInt(1 + ((k * 7919) % (vocab - 1)))), [B, S]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(B * S).fill(1n), [B, S]),
  };
  if (s.inputNames.includes('position_ids')) feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from({ length: B * S }, (_, k) => BigInt(k % S)), [B, S]);
  for (const m of s.inputMetadata) if (m.name.startsWith('past_') && m.isTensor) feeds[m.name] = new ort.Tensor('float32', new Float32Array(0), [B, m.shape[1] as number, 0, m.shape[3] as number]);
  const out = (await s.run(feeds, ['logits'])).logits!.data as Float32Array;
  await s.release();
  return out;
}

function sparsityPerMatrix(folder: string): string[] {
  return inspectModel(folder).blocks.flatMap((b) => b.linears.map((l) => `${b.index} ${l.role} ${l.sparsity.toFixed(6)}`));
}

test('prune of stories260K-hf (checkpoint) equals prune of the stories260K ONNX: SparseGPT 50 %, SparseLLM 70 % (perplexity within 0.5 %); --format both round-trips', { skip }, async () => {
  const runs = [['sparsegpt', '0.5'], ['sparsellm', '0.7']] as const;
  const ppl: Record<string, number> = {};
  for (const [method, sparsity] of runs) {
    const args = ['--method', method, '--sparsity', sparsity, '--eval', 'tinystories'];
    // the checkpoint run also writes safetensors, forced into two shards (the model has ~1 MB of fp32 weights)
    const [fromCheckpoint, fromOnnx] = await Promise.all([
      prune(path('models-src/stories260K-hf'), `ck-${method}`, [...args, '--format', 'both', '--max-shard-size', '600KB']),
      prune(path('models/stories260K'), `onnx-${method}`, args),
    ]);
    const a = fromCheckpoint.perplexity!.tinystories!.perplexity, b = fromOnnx.perplexity!.tinystories!.perplexity;
    ppl[`${method} checkpoint`] = a;
    ppl[`${method} onnx`] = b;
    assert.ok(Math.abs(a / b - 1) < 0.005, `${method}: ${a} vs ${b}`);
    assert.ok(a > 3.6, `${method} pruned something (${a})`);
  }
  console.log(`# TinyStories perplexity after pruning: ${JSON.stringify(ppl)}`);

  // safetensors written beside the ONNX: two shards + index, transformers' names; converted back = the pruned ONNX
  const out = join(work, 'ck-sparsegpt');
  const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8'));
  assert.deepEqual([...new Set(Object.values(index.weight_map))].sort(), ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
  assert.equal(index.weight_map['model.layers.4.mlp.down_proj.weight'] !== undefined, true);
  assert.equal(index.weight_map['lm_head.weight'], undefined, 'tied: no lm_head tensor');
  const back = join(work, 'ck-sparsegpt-back');
  convertCheckpoint(out, back);
  const d = maxAbsDiff(await logits(join(back, 'onnx', 'model.onnx'), 512), await logits(join(out, 'onnx', 'model.onnx'), 512));
  console.log(`# stories260K SparseGPT 50 %: safetensors -> ONNX vs the pruned ONNX, max |Δlogit| ${d.toExponential(2)}`);
  assert.ok(d < 1e-4, `${d}`);
  assert.deepEqual(sparsityPerMatrix(back), sparsityPerMatrix(out));
});

test('magnitude on the tiny-wikitext-opt ONNX (optimum layout, anonymous MatMul weights) --format both: the HF OPT checkpoint converts back to the pruned ONNX', { skip }, async () => {
  await prune(path('models/tiny-wikitext-opt'), 'opt-both', ['--method', 'magnitude', '--sparsity', '0.6', '--format', 'both']);
  const st = join(work, 'opt-both'), onnx = st;
  for (const f of ['model.safetensors', 'onnx/model.onnx', 'config.json', 'tokenizer.json', 'sparsellm-report.json']) assert.ok(existsSync(join(st, f)), f);
  const ck = SafetensorsCheckpoint.open(st);
  assert.equal(ck.dtype, 'F32');
  assert.deepEqual(ck.info('model.decoder.layers.0.fc1.weight').shape, [512, 128], '[out, in]');
  assert.ok(ck.has('model.decoder.layers.3.fc2.bias') && ck.has('model.decoder.embed_positions.weight') && !ck.has('lm_head.weight'));
  const back = join(work, 'opt-st-back');
  convertCheckpoint(st, back);
  const d = maxAbsDiff(await logits(join(back, 'onnx', 'model.onnx'), 50272), await logits(join(onnx, 'onnx', 'model.onnx'), 50272));
  console.log(`# tiny-wikitext-opt magnitude 60 %: safetensors -> ONNX vs the pruned ONNX, max |Δlogit| ${d.toExponential(2)}`);
  assert.ok(d < 1e-4, `${d}`);
  assert.deepEqual(sparsityPerMatrix(back), sparsityPerMatrix(onnx));
});

test('a bf16 checkpoint pruned with --format safetensors (and --eval) stays bf16 (config dtype), with its sparsity, and no ONNX is left', { skip }, async () => {
  const report = await prune(path('models-src/stories260K-hf-bf16-sharded'), 'bf16-st', ['--method', 'magnitude', '--sparsity', '0.5', '--format', 'safetensors', '--eval', 'tinystories']);
  const out = join(work, 'bf16-st');
  assert.ok(!existsSync(join(out, 'onnx')) && !existsSync(join(out, '.eval-onnx')), 'safetensors only');
  for (const f of ['model.safetensors', 'config.json', 'tokenizer.model', 'sparsellm-report.json']) assert.ok(existsSync(join(out, f)), f);
  assert.ok(report.perplexity!.tinystories!.perplexity > 3.6, '--eval scores the pruned model (written aside, then dropped)');
  const ck = SafetensorsCheckpoint.open(out);
  assert.equal(ck.dtype, 'BF16');
  const w = ck.readFloat32('model.layers.2.mlp.up_proj.weight');
  const zeros = w.filter((x) => x === 0).length / w.length;
  assert.ok(zeros >= 0.5 && zeros < 0.52, `${zeros}`);
  assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
});
