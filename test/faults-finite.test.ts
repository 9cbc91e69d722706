// Issue #8: nothing non-finite reaches a solver or the written model. Calibration inputs that overflow stop the run
// with the block and layer named; pruned weights are checked finite before anything is written.
import assert from 'node:assert/strict';
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { isUserError } from '../src/errors.js';
import { OnnxModel, analyzeDecoder } from '../src/model/index.js';
import { assertFinite } from '../src/pipeline/prune.js';
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
