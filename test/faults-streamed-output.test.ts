// Issue 16: the output's external data file is written block by block as the prune goes, and it is the resume
// checkpoint (plus a small index), not a second copy. A prune of an external-data OPT model (bench/opt-model.ts) is
// interrupted in process when block 2 starts (the same flag Ctrl-C sets, so the stop point is exact): the index then
// names blocks 0 and 1, the data file already holds their final bytes (equal to an uninterrupted run's output at the
// same offsets) and nothing yet where the later blocks go, and the checkpoint folder holds no weight copy. The resume
// then writes files identical to the uninterrupted run. Needs no shared data.
import assert from 'node:assert/strict';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { generateOptModel } from '../bench/opt-model.js';
import { OnnxModel, analyzeDecoder } from '../src/model/index.js';
import { sparsitySpec, type PruneOptions } from '../src/pipeline/options.js';
import { createProgress, type Progress } from '../src/pipeline/progress.js';
import { interruption, runPrune } from '../src/pipeline/prune.js';
import { outputHashes, tempRoot } from './faults-helpers.js';

const root = tempRoot('sparsellm-streamed-');
const LAYERS = 5;
const model = generateOptModel(root, { hidden: 64, layers: LAYERS, ffn: 256 }).dir;

const options = (out: string, resume = false): PruneOptions => ({
  model, method: 'sparsegpt', spec: sparsitySpec(0.5, undefined, undefined), calib: 'tinystories', nsamples: 4, seqlen: 64, seed: 0, layers: 'all',
  sparsellm: {}, out, force: false, resume, eval: [], quiet: true,
});

/** Silent progress that requests an interruption when block `stopAt` starts (as SIGINT does). */
function stoppingProgress(stopAt: number): Progress {
  const silent = createProgress(false);
  return { ...silent, log: (line) => { if (line.startsWith(`block ${stopAt} `)) interruption.requested = true; } };
}

/** Bytes [offset, offset + length) of a file; past its end reads as missing (shorter array). */
function readRange(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const n = Math.max(0, Math.min(length, fstatSync(fd).size - offset));
    const buf = Buffer.alloc(n);
    if (n > 0) readSync(fd, buf, 0, n, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

test('an interrupted prune has streamed its finished blocks into the output data file; the index names them; --resume is byte-identical', async () => {
  const reference = join(root, 'reference');
  await runPrune(options(reference), createProgress(false));
  const refOnnx = join(reference, 'onnx', 'model.onnx');
  const ref = OnnxModel.load(refOnnx);
  const layout = analyzeDecoder(ref);

  const out = join(root, 'stopped');
  interruption.requested = false;
  try {
    await assert.rejects(runPrune(options(out), stoppingProgress(2)), (e: Error & { exitCode?: number }) => e.exitCode === 130 && /--resume/.test(e.message));
  } finally {
    interruption.requested = false;
  }
  const partial = `${out}.partial`;
  const manifest = JSON.parse(readFileSync(join(partial, '.checkpoint', 'manifest.json'), 'utf8')) as { dataFile: string; blocks: { index: number }[] };
  assert.deepEqual(manifest.blocks.map((b) => b.index), [0, 1], 'the index names exactly the finished blocks');
  assert.equal(manifest.dataFile, join('onnx', 'model.onnx_data'), 'the checkpoint is the output data file itself');
  assert.deepEqual(readdirSync(join(partial, '.checkpoint')), ['manifest.json'], 'no second copy of the weights in the checkpoint');

  const dataFile = join(partial, manifest.dataFile);
  let checked = 0;
  for (const block of layout.blocks) {
    for (const l of block.linears) {
      const t = ref.initializer(l.weightName);
      const entry = (k: string) => Number(t.externalData.find((e) => e.key === k)!.value);
      const [offset, length] = [entry('offset'), entry('length')];
      const now = readRange(dataFile, offset, length);
      if (block.index < 2) {
        const final = readRange(join(reference, 'onnx', 'model.onnx_data'), offset, length);
        assert.equal(now.length, length, `block ${block.index} ${l.role} is in the data file`);
        assert.ok(Buffer.from(now).equals(Buffer.from(final)), `block ${block.index} ${l.role}: the streamed bytes are the final output's`);
        assert.ok(now.some((b) => b !== 0));
      } else {
        assert.ok(now.every((b) => b === 0), `block ${block.index} ${l.role} is not written before its block is pruned`);
      }
      checked++;
    }
  }
  assert.equal(checked, LAYERS * 6); // OPT: q, k, v, out_proj, fc1, fc2 per block

  const report = await runPrune(options(out, true), createProgress(false));
  assert.equal(report.resumedBlocks, 2);
  assert.ok(!existsSync(partial));
  assert.deepEqual(outputHashes(out), outputHashes(reference), 'the resumed output is byte-identical to the uninterrupted one');
});
