// FedSpaLLM server output (src/federate/global-model.ts): the dense model with the aggregated weights put in, written
// atomically like prune's output. Checked by reading the written files back with an independent reader (OnnxModel.load
// of the output, onnxruntime opening it) against the values handed in and the dense input's own bytes.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { generateOptModel } from '../bench/opt-model.js';
import { writeGlobalModel } from '../src/federate/global-model.js';
import { OnnxModel, analyzeDecoder, resolveModelFile } from '../src/model/index.js';
import { hashTree, tempRoot } from './faults-helpers.js';
import { BUNDLED_STORIES, mulberry32, needsShared, shared } from './helpers.js';

const root = tempRoot('sparsellm-global-model-');

/** A stand-in for an aggregated matrix: the dense weight with ~70 % of entries zeroed and the rest scaled. */
function aggregatedLike(dense: Float32Array, seed: number): Float32Array {
  const rand = mulberry32(seed);
  return dense.map((w) => (rand() < 0.7 ? 0 : w * 1.25));
}

/** Weights for the linears of the given blocks, keyed by initializer name. */
function weightsFor(modelDir: string, blocks: number[]): Map<string, Float32Array> {
  const model = OnnxModel.load(resolveModelFile(modelDir));
  const weights = new Map<string, Float32Array>();
  for (const b of analyzeDecoder(model).blocks.filter((x) => blocks.includes(x.index))) {
    for (const l of b.linears) weights.set(l.weightName, aggregatedLike(model.readFloat32(l.weightName), weights.size + 1));
  }
  return weights;
}

/** Every initializer of `out` equals `weights` where named, else the dense model's, bit for bit. */
function assertWritten(denseDir: string, outOnnx: string, weights: Map<string, Float32Array>): void {
  const dense = OnnxModel.load(resolveModelFile(denseDir));
  const written = OnnxModel.load(outOnnx);
  assert.equal(written.graph.initializer.length, dense.graph.initializer.length);
  for (const t of dense.graph.initializer) {
    const mine = weights.get(t.name);
    if (mine) assert.deepEqual(written.readFloat32(t.name), mine, t.name);
    else assert.deepEqual(written.readBytes(t.name), dense.readBytes(t.name), t.name);
  }
}

const absentAfter = (out: string) => {
  assert.ok(!existsSync(out), `${out} must not exist`);
  assert.ok(!existsSync(`${out}.partial`), `${out}.partial must not be left`);
};

test('stories260K (inline weights): round trip, companion files, report, input untouched, deterministic bytes', async () => {
  const weights = weightsFor(BUNDLED_STORIES, [0, 2]);
  assert.equal(weights.size, 14, 'two LLaMA blocks of 7 linears');
  const inputHashes = hashTree(BUNDLED_STORIES);
  const out = join(root, 'stories-global');
  const report = { rule: 'fedspallm', round: 1, clients: 3 };
  const onnx = await writeGlobalModel(BUNDLED_STORIES, weights, out, report);
  assert.equal(onnx, join(out, 'onnx', 'model.onnx'), 'same relative layout as the input');
  assertWritten(BUNDLED_STORIES, onnx, weights);
  assert.ok(OnnxModel.load(onnx).externalDataFiles.length === 0, 'inline input, inline output');
  assert.ok(existsSync(join(out, 'config.json')) && existsSync(join(out, 'tokenizer.model')));
  assert.deepEqual(JSON.parse(readFileSync(join(out, 'sparsellm-report.json'), 'utf8')), report);
  assert.ok(!existsSync(`${out}.partial`));
  assert.deepEqual(hashTree(BUNDLED_STORIES), inputHashes, 'the dense input is not modified');
  // onnxruntime opens it (a graph whose initializers are consistent)
  const session = await ort.InferenceSession.create(onnx);
  await session.release();
  // the same weights give the same bytes (the server's restart test compares models byte for byte)
  const again = await writeGlobalModel(BUNDLED_STORIES, weights, join(root, 'stories-global-2'), report);
  assert.deepEqual(readFileSync(again), readFileSync(onnx));
});

test('external-data model: the output gets its own data file, streamed, and reads back equal', async () => {
  const dense = generateOptModel(join(root, 'gen'), { hidden: 64, layers: 3, ffn: 256 }).dir;
  const inputHashes = hashTree(dense);
  const weights = weightsFor(dense, [1]);
  const out = join(root, 'opt-global');
  const onnx = await writeGlobalModel(dense, weights, out, {});
  assertWritten(dense, onnx, weights);
  const files = OnnxModel.load(onnx).externalDataFiles;
  assert.equal(files.length, 1);
  assert.ok(existsSync(join(dirname(onnx), files[0]!)), 'its data file is inside the output folder');
  assert.deepEqual(hashTree(dense), inputHashes);
});

test('refused before anything is written: NaN, wrong size, unknown or non-float initializer, existing output, output inside the input', async () => {
  const weights = weightsFor(BUNDLED_STORIES, [1]);
  const [name, values] = [...weights][0]!;
  const model = OnnxModel.load(resolveModelFile(BUNDLED_STORIES));
  const intName = model.graph.initializer.find((t) => ![1, 10, 16, 11].includes(t.dataType))?.name;
  const withNaN = values.slice();
  withNaN[5] = Number.NaN;
  const cases: [Map<string, Float32Array>, RegExp][] = [
    [new Map([[name, withNaN]]), /global weight .* contains NaN or Inf \(at element 5\)/],
    [new Map([[name, values.subarray(1)]]), /has \d+ values, the model's has \d+/],
    [new Map([['no.such.weight', values]]), /no\.such\.weight is not an initializer/],
  ];
  if (intName) cases.push([new Map([[intName, new Float32Array(1)]]), /not a float weight/]);
  for (const [w, message] of cases) {
    const out = join(root, 'refused');
    await assert.rejects(writeGlobalModel(BUNDLED_STORIES, w, out, {}), (e: Error) => e.name === 'UserError' && message.test(e.message));
    absentAfter(out);
  }
  // an existing output is kept unless force
  const existing = join(root, 'existing');
  mkdirSync(existing);
  writeFileSync(join(existing, 'keep.txt'), 'x');
  await assert.rejects(writeGlobalModel(BUNDLED_STORIES, weights, existing, {}), /already exists/);
  assert.ok(existsSync(join(existing, 'keep.txt')));
  await writeGlobalModel(BUNDLED_STORIES, weights, existing, {}, { force: true });
  assert.ok(!existsSync(join(existing, 'keep.txt')) && existsSync(join(existing, 'onnx', 'model.onnx')));
  // never inside the input model's folder
  await assert.rejects(writeGlobalModel(BUNDLED_STORIES, weights, join(BUNDLED_STORIES, 'global'), {}), /inside the input model folder/);
  absentAfter(join(BUNDLED_STORIES, 'global'));
});

test('a failure after <out>.partial exists (fp16 overflow) leaves nothing behind', { skip: needsShared('models-src/onnx-layout-ref-tiny-random-llama') }, async () => {
  const dense = shared('models-src', 'onnx-layout-ref-tiny-random-llama');
  const model = OnnxModel.load(resolveModelFile(dense));
  const fp16 = model.graph.initializer.find((t) => t.dataType === 10 && t.dims.length === 2)!;
  const first = model.readFloat32(fp16.name);
  const second = first.map(() => 1e6); // finite in float32, Inf in float16 (max 65504)
  const inputHashes = hashTree(dense);
  const out = join(root, 'fp16-global');
  // a valid weight first, so the failure comes while tensors are being written
  const other = model.graph.initializer.find((t) => t.dataType === 10 && t.dims.length === 2 && t.name !== fp16.name)!;
  const weights = new Map([[other.name, model.readFloat32(other.name)], [fp16.name, second]]);
  await assert.rejects(writeGlobalModel(dense, weights, out, {}), (e: Error) => e.name === 'UserError' && /overflows its float16 storage/.test(e.message));
  absentAfter(out);
  assert.deepEqual(hashTree(dense), inputHashes);
  // and the same model writes fine with finite fp16 values (negated: exact in fp16, unlike halving a subnormal)
  const onnx = await writeGlobalModel(dense, new Map([[fp16.name, first.map((w) => -w)]]), out, {});
  assert.deepEqual(OnnxModel.load(onnx).readFloat32(fp16.name), first.map((w) => -w));
});
