// ONNX I/O: fp16 conversion, external data read/write, round trips, weight edits, bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, openSync, readFileSync, readSync, closeSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, TensorProto_DataLocation, TensorProto_DataType, type ModelProto } from 'onnx-buf';
import { UserError } from '../src/errors.js';
import { floatToHalf, halfToFloat } from '../src/model/float16.js';
import { BlockRunner, OnnxModel, openDecoderModel, readLinearWeight, writeLinearWeight } from '../src/model/index.js';
import { MODELS, maxAbsDiff, runModelFile, tempDir as tmp, tokenBatch } from './model-fixtures.js';
import { gaussian, mulberry32, needsShared } from './helpers.js';

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

test('fp16 conversion: exact values, round to nearest even, subnormals, overflow', () => {
  const cases: [number, number][] = [[1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [0, 0], [2 ** -24, 0x0001], [2 ** -14, 0x0400], [1e6, 0x7c00]];
  for (const [v, bits] of cases) assert.equal(floatToHalf(v), bits, `floatToHalf(${v})`);
  assert.equal(floatToHalf(1 + 2 ** -11), 0x3c00); // tie -> even
  assert.equal(floatToHalf(1 + 3 * 2 ** -11), 0x3c02); // tie -> even (up)
  assert.equal(floatToHalf(-0), 0x8000);
  for (let h = 0; h < 0x7c00; h += 37) assert.equal(floatToHalf(halfToFloat(h)), h, `bits ${h} round trip`);
});

test('reads fp16 external-data initializers as float32 (genai layout)', { skip: needsShared(MODELS.genai) }, () => {
  const model = OnnxModel.load(MODELS.genai);
  assert.deepEqual(model.externalDataFiles, ['model.onnx.data']);
  const name = 'model.layers.0.attn.q_proj.MatMul.weight';
  const t = model.initializer(name);
  assert.equal(t.dataType, TensorProto_DataType.FLOAT16);
  const offset = Number(t.externalData.find((e) => e.key === 'offset')!.value);
  const raw = Buffer.alloc(16 * 16 * 2);
  const fd = openSync(join(model.dir, 'model.onnx.data'), 'r');
  readSync(fd, raw, 0, raw.length, offset);
  closeSync(fd);
  const values = model.readFloat32(name);
  assert.equal(values.length, 256);
  for (let i = 0; i < 256; i++) assert.equal(values[i], halfToFloat(raw.readUInt16LE(2 * i)));
});

test('round trip without change: identical logits, large floats external, small tensors inline, inputs untouched', async () => {
  const dir = tmp();
  const before = sha(MODELS.stories);
  const model = OnnxModel.load(MODELS.stories);
  const out = join(dir, 'model.onnx');
  model.save(out);
  assert.equal(sha(MODELS.stories), before, 'input file unchanged');
  assert.ok(existsSync(join(dir, 'model.onnx_data')));

  const saved = OnnxModel.load(out);
  assert.deepEqual(saved.externalDataFiles, ['model.onnx_data']);
  for (const t of saved.graph.initializer) {
    const bytes = saved.readBytes(t.name).byteLength;
    const external = t.dataLocation === TensorProto_DataLocation.EXTERNAL;
    assert.equal(external, bytes >= 1024, `${t.name} (${bytes} B) placement`);
    assert.equal(Buffer.compare(Buffer.from(saved.readBytes(t.name)), Buffer.from(model.readBytes(t.name))), 0, `${t.name} bytes`);
  }
  const ids = tokenBatch(2, 16, 512, 5);
  assert.equal(maxAbsDiff(await runModelFile(out, ids, 2, 16), await runModelFile(MODELS.stories, ids, 2, 16)), 0);
});

test('streamed replacements: on disk at their final offset at once, read back from there; save in place equals a plain save', () => {
  const dir = tmp();
  const edits = (m: OnnxModel) => m.graph.initializer.filter((t) => t.dataType === TensorProto_DataType.FLOAT && t.dims.length === 2).slice(0, 3).map((t) => t.name);
  const newValues = (m: OnnxModel, name: string, seed: number) => {
    const g = gaussian(mulberry32(seed));
    return Float32Array.from(m.readFloat32(name), () => g());
  };
  // plain: replacements held in memory until save()
  const plain = OnnxModel.load(MODELS.stories);
  const names = edits(plain);
  assert.equal(names.length, 3);
  names.forEach((n, k) => plain.writeFloat32(n, newValues(plain, n, k + 1)));
  plain.save(join(dir, 'model.onnx'));
  // streamed into the data file save() then completes
  const streamedOut = join(dir, 'streamed.onnx');
  const model = OnnxModel.load(MODELS.stories);
  const dataPath = join(dir, model.externalDataNameFor(streamedOut));
  assert.equal(dataPath, join(dir, 'streamed.onnx_data'));
  model.streamReplacedTo(dataPath);
  const layout = model.externalDataLayout();
  names.forEach((n, k) => {
    const values = newValues(model, n, k + 1);
    model.writeFloat32(n, values);
    const slot = layout.get(n)!;
    const onDisk = Buffer.alloc(slot.length);
    const fd = openSync(dataPath, 'r');
    readSync(fd, onDisk, 0, slot.length, slot.offset);
    closeSync(fd);
    assert.ok(onDisk.equals(Buffer.from(values.buffer)), `${n}: written at its offset as soon as it is replaced`);
    assert.deepEqual(model.readFloat32(n), values, `${n}: read back from the data file`);
    assert.ok(model.isReplaced(n));
  });
  model.save(streamedOut);
  model.closeStream();
  assert.equal(sha(dataPath), sha(join(dir, 'model.onnx_data')), 'same data file as a plain save');
  // the .onnx differs only by the data file's name: compare the saved initializers instead
  const a = OnnxModel.load(streamedOut), b = OnnxModel.load(join(dir, 'model.onnx'));
  for (const t of b.graph.initializer) assert.ok(Buffer.from(a.readBytes(t.name)).equals(Buffer.from(b.readBytes(t.name))), t.name);
  // a resumed stream whose file is too short for a tensor named as written is refused in one line
  const again = OnnxModel.load(MODELS.stories);
  writeFileSync(join(dir, 'short.bin'), Buffer.alloc(10));
  again.streamReplacedTo(join(dir, 'short.bin'), { keep: true });
  assert.throws(() => again.markStreamed([names[2]!], 'the checkpoint of block 0'), (e: Error) => e instanceof UserError && /checkpoint of block 0 is damaged/.test(e.message));
  again.closeStream();
  assert.throws(() => OnnxModel.load(MODELS.stories).streamReplacedTo(MODELS.stories), UserError, 'never the input file');
});

test('inline weights are read from the .onnx when needed, not kept: the loaded protobuf holds no large raw_data, reads equal an independent parse', () => {
  const model = OnnxModel.load(MODELS.stories);
  const parsed = fromBinary(ModelProtoSchema, readFileSync(MODELS.stories)); // independent parse, all bytes in memory
  let large = 0;
  for (const t of parsed.graph!.initializer) {
    const kept = model.initializer(t.name).rawData.byteLength;
    if (t.rawData.byteLength >= 1024 && t.dataType === TensorProto_DataType.FLOAT) {
      assert.equal(kept, 0, `${t.name}: not resident`);
      large++;
    } else {
      assert.equal(kept, t.rawData.byteLength, `${t.name}: small tensors stay inline`);
    }
    assert.ok(Buffer.from(model.readBytes(t.name)).equals(Buffer.from(t.rawData)), `${t.name} bytes`);
  }
  assert.ok(large >= 7, `${large} large inline tensors`); // stories260K: embedding + 7 linears per block, all inline
});

test('genai fp16 round trip keeps its data-file naming and dtype; edited weights are written back as fp16', { skip: needsShared(MODELS.genai) }, async () => {
  const dir = tmp();
  const before = [sha(MODELS.genai), sha(MODELS.genai + '.data')];
  const { model, layout } = openDecoderModel(MODELS.genai);
  const linear = layout.blocks[1]!.linears.find((l) => l.role === 'up_proj')!;
  const rand = gaussian(mulberry32(9));
  const w = Float32Array.from({ length: linear.outFeatures * linear.inFeatures }, () => 0.05 * rand());
  writeLinearWeight(model, linear, w);
  model.save(join(dir, 'pruned.onnx'));
  assert.deepEqual([sha(MODELS.genai), sha(MODELS.genai + '.data')], before, 'inputs unchanged');
  assert.ok(existsSync(join(dir, 'pruned.onnx.data')), 'keeps the .onnx.data naming');

  const saved = OnnxModel.load(join(dir, 'pruned.onnx'));
  const original = OnnxModel.load(MODELS.genai);
  for (const t of saved.graph.initializer) {
    assert.equal(t.dataType, original.dataType(t.name), `${t.name} dtype kept`);
    const same = Buffer.compare(Buffer.from(saved.readBytes(t.name)), Buffer.from(original.readBytes(t.name))) === 0;
    assert.equal(same, t.name !== linear.weightName, `${t.name}: only the edited weight changes`);
  }
  assert.equal(saved.dataType(linear.weightName), TensorProto_DataType.FLOAT16);
  const back = readLinearWeight(saved, linear);
  for (let i = 0; i < w.length; i++) assert.equal(back[i], halfToFloat(floatToHalf(w[i]!)));

  const ids = tokenBatch(2, 8, 32000, 2);
  const a = await runModelFile(join(dir, 'pruned.onnx'), ids, 2, 8);
  assert.ok(a.every(Number.isFinite));
});

// vocabularies from each model's config.json
for (const [path, vocab, zero] of [
  [MODELS.tinyOpt, 50272, [[0, 'q_proj'], [1, 'fc1']]],
  [MODELS.stories, 512, [[0, 'k_proj'], [3, 'down_proj']]],
  [MODELS.genai, 32000, [[1, 'up_proj'], [0, 'o_proj']]],
] as const) {
  test(`zeroing weights through the writer changes ORT output exactly as the in-memory block runner does (${path.split('/').at(path.includes('/onnx/') ? -3 : -2)})`, { skip: needsShared(path) }, async (t) => {
    const dir = tmp();
    const runner = await BlockRunner.open(path);
    const ids = tokenBatch(2, 16, vocab, 11);
    for (const [block, role] of zero) {
      const l = runner.block(block).linears.find((x) => x.role === role)!;
      const w = runner.getBlockWeights(block).get(role)!;
      for (let r = 0; r < l.outFeatures; r++) for (let c = 0; c < l.inFeatures; c += 2) w[r * l.inFeatures + c] = 0; // half of each row
      await runner.setBlockWeights(block, new Map([[role, w]]));
    }
    let state = await runner.prologue(ids, 2, 16);
    for (let i = 0; i < runner.numBlocks; i++) state = (await runner.runBlock(i, state)).state;
    const inMemory = await runner.epilogue(state);
    await runner.dispose();
    runner.saveModel(join(dir, 'model.onnx'));

    const fromDisk = await runModelFile(join(dir, 'model.onnx'), ids, 2, 16);
    const original = await runModelFile(path, ids, 2, 16);
    const d = maxAbsDiff(fromDisk, inMemory);
    t.diagnostic(`${path.split('/').at(path.includes('/onnx/') ? -3 : -2)}: saved vs in-memory max |Δlogit| ${d.toExponential(2)}; vs unpruned ${maxAbsDiff(fromDisk, original).toExponential(2)}`);
    assert.ok(d <= 1e-5, `saved model differs from the in-memory run by ${d}`);
    assert.ok(maxAbsDiff(fromDisk, original) > 1e-4, 'zeroing changed the output');
  });
}

test('save refuses to overwrite the input model or its data', { skip: needsShared(MODELS.genai) }, () => {
  const model = OnnxModel.load(MODELS.genai);
  assert.throws(() => model.save(MODELS.genai), UserError);
  assert.throws(() => model.save(join(model.dir, 'other.onnx'), { externalDataName: 'model.onnx.data' }), UserError);
});

test('bad input gives one-line UserErrors', () => {
  const dir = tmp();
  const expectUserError = (fn: () => unknown, pattern: RegExp) =>
    assert.throws(fn, (e: unknown) => e instanceof UserError && pattern.test(e.message) && !e.message.includes('\n'));

  expectUserError(() => openDecoderModel(join(dir, 'nope')), /not found/);
  writeFileSync(join(dir, 'text.onnx'), 'this is not a protobuf at all, just words\n'.repeat(20));
  expectUserError(() => openDecoderModel(join(dir, 'text.onnx')), /not (a valid )?(an )?ONNX/);
  const bytes = readFileSync(MODELS.stories);
  writeFileSync(join(dir, 'truncated.onnx'), bytes.subarray(0, bytes.length >> 1));
  expectUserError(() => openDecoderModel(join(dir, 'truncated.onnx')), /truncated|not a valid ONNX/);

  // stories260K re-saved with its weights in external data (model.onnx_data), then the data file removed / cut
  const external = tmp();
  OnnxModel.load(MODELS.stories).save(join(external, 'model.onnx'));
  writeFileSync(join(dir, 'model.onnx'), readFileSync(join(external, 'model.onnx')));
  expectUserError(() => openDecoderModel(join(dir, 'model.onnx')), /external data file missing/);
  writeFileSync(join(dir, 'model.onnx_data'), readFileSync(join(external, 'model.onnx_data')).subarray(0, 1000));
  expectUserError(() => openDecoderModel(join(dir, 'model.onnx')), /truncated/);

  expectUserError(() => openDecoderModel(tmp()), /no ONNX model/);
});

test('an optimum merged decoder is refused, naming the file to use instead', () => {
  const dir = tmp();
  const model = OnnxModel.load(MODELS.stories);
  const merged = { ...model.proto, graph: { ...model.graph, input: [...model.graph.input, { ...model.graph.input[0]!, name: 'use_cache_branch' }] } };
  writeFileSync(join(dir, 'decoder_model_merged.onnx'), toBinary(ModelProtoSchema, merged as ModelProto));
  copyFileSync(MODELS.stories, join(dir, 'decoder_model.onnx'));
  assert.throws(() => openDecoderModel(join(dir, 'decoder_model_merged.onnx')), (e: unknown) => e instanceof UserError && /merged decoder/.test(e.message) && e.message.includes('decoder_model.onnx'));
  const onlyMerged = tmp();
  copyFileSync(join(dir, 'decoder_model_merged.onnx'), join(onlyMerged, 'decoder_model_merged.onnx'));
  assert.throws(() => openDecoderModel(onlyMerged), (e: unknown) => e instanceof UserError && /decoder_model\.onnx/.test(e.message));
});
