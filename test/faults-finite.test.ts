// Issue #8: nothing non-finite reaches a solver or the written model. Calibration inputs that overflow stop the run
// with the block and layer named; pruned weights are checked finite before anything is written.
import assert from 'node:assert/strict';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema, TensorProtoSchema, TensorProto_DataType } from 'onnx-buf';
import { isUserError } from '../src/errors.js';
import { OnnxModel, analyzeDecoder, type DecoderBlock, type LinearLayer } from '../src/model/index.js';
import { assertFinite, assertStoredFinite } from '../src/pipeline/prune.js';
import { BlockStatisticsCollector } from '../src/pipeline/statistics.js';
import { copyStories, hashTree, oneLine, pool, runCli, STORIES, tempRoot, type CliResult } from './faults-helpers.js';

const root = tempRoot('sparsellm-finite-');

describe('finite checks', () => {
  it('assertFinite names the tensor and the first bad element', () => {
    assert.doesNotThrow(() => assertFinite(new Float32Array([0, -1, 3.4e38]), 'w'));
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      assert.throws(() => assertFinite(new Float32Array([1, 2, bad, bad]), 'pruned weight of block 3 down_proj'), (e: Error) => {
        assert.ok(isUserError(e));
        assert.equal(e.message, 'pruned weight of block 3 down_proj contains NaN or Inf (at element 2): refusing to write a broken model');
        return true;
      });
    }
  });

  it('a pruned weight that overflows its fp16 storage is refused (the check runs on the stored values)', () => {
    // one fp16 MatMul weight W [2, 2]
    const file = join(root, 'fp16.onnx');
    const W = create(TensorProtoSchema, { name: 'W', dims: [2n, 2n], dataType: TensorProto_DataType.FLOAT16, rawData: new Uint8Array(8) });
    const graph = create(GraphProtoSchema, { name: 'g', node: [create(NodeProtoSchema, { name: '/layers.0/fc1/MatMul', opType: 'MatMul', input: ['X', 'W'], output: ['Y'] })], initializer: [W] });
    writeFileSync(file, toBinary(ModelProtoSchema, create(ModelProtoSchema, { irVersion: 8n, opsetImport: [create(OperatorSetIdProtoSchema, { version: 17n })], graph })));
    const model = OnnxModel.load(file);
    const block = { index: 3, linears: [{ role: 'fc1', weightName: 'W', dtype: 'float16' } as LinearLayer] } as DecoderBlock;
    model.writeFloat32('W', new Float32Array([1, -2, 65504, 0.5])); // 65504: the largest fp16 value
    assert.doesNotThrow(() => assertStoredFinite(model, block, ['fc1']));
    const pruned = new Float32Array([1, -2, 7e4, 0.5]); // finite in float32, Inf once rounded to fp16
    assert.doesNotThrow(() => assertFinite(pruned, 'pruned weight'));
    model.writeFloat32('W', pruned);
    assert.throws(() => assertStoredFinite(model, block, ['fc1']), (e: Error) => {
      assert.ok(isUserError(e));
      assert.equal(e.message, 'pruned weight of block 3 fc1 overflows its float16 storage (Inf at element 2): refusing to write a broken model');
      return true;
    });
  });

  it('statistics of overflowing inputs are refused before a solver sees them (Hessian and Wanda scaler)', async () => {
    const layout = analyzeDecoder(OnnxModel.load(join(STORIES, 'onnx', 'model.onnx')));
    const block = layout.blocks[2]!;
    for (const method of ['sparsegpt', 'wanda'] as const) {
      const stats = new BlockStatisticsCollector(block, method, null);
      const captures = new Map(block.linears.map((l) => [l.role, new Float32Array(3 * l.inFeatures).fill(0.5)]));
      const down = captures.get('down_proj')!;
      down[5] = 1e30; // finite, but its square overflows float32
      await stats.add(captures, 1, 3);
      const get = (role: string) => (method === 'wanda' ? stats.scaler(role) : stats.hessian(role).H);
      assert.doesNotThrow(() => get('q_proj'));
      assert.throws(() => get('down_proj'), (e: Error) => {
        assert.ok(isUserError(e));
        assert.match(e.message, /^block 2 down_proj: its calibration inputs overflow \(NaN or Inf in their statistics\)/);
        return true;
      });
    }
  });

  describe('a model whose activations blow up in block 1 (post-attention norm × 1e25)', () => {
    const model = join(root, 'blow-up');
    const results = new Map<string, CliResult>();
    const methods = ['sparsegpt', 'wanda', 'sparsellm'] as const;
    let before0: Map<string, string>;

    before(async () => {
      copyStories(model);
      const onnx = join(model, 'onnx', 'model.onnx');
      const m = OnnxModel.load(onnx);
      const norm = 'model.layers.1.post_attention_layernorm.weight';
      m.writeFloat32(norm, m.readFloat32(norm).map((x) => x * 1e25));
      m.save(`${onnx}.new`, { sizeThreshold: Number.MAX_SAFE_INTEGER });
      renameSync(`${onnx}.new`, onnx);
      before0 = hashTree(model);
      const runs = await pool(methods.map((method) => () => runCli([
        'prune', '--model', model, '--method', method, '--calib', 'tinystories', '--nsamples', '4', '--seqlen', '64', '--out', join(root, `out-${method}`), '--quiet',
      ])), 3);
      methods.forEach((method, k) => results.set(method, runs[k]!));
    });

    for (const method of methods) {
      it(`${method}: one line naming block 1 and its layer, no output`, () => {
        const r = results.get(method)!;
        const line = oneLine(r);
        assert.match(line, /^sparsellm: block 1 (gate_proj|up_proj|down_proj): its calibration inputs overflow .*check the model's weights, or use --method magnitude$/);
        assert.equal(r.code, 2);
        assert.ok(!existsSync(join(root, `out-${method}`)));
        assert.ok(!existsSync(join(root, `out-${method}.partial`)), 'partial output removed');
      });
    }

    it('the input model is untouched', () => assert.deepEqual(hashTree(model), before0));
  });
});
