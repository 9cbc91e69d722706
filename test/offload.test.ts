// --offload DIR (issue 16): the calibration activations between blocks stream through files in a fresh folder under
// DIR instead of RAM. The output must be byte-identical to a run without it, the files must really be used (several
// micro-batches on disk while the blocks run) and removed at the end (finished or interrupted), and a DIR inside the
// input model or the output is refused with one line before anything is written.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { OnnxModel, analyzeDecoder, resolveModelFile } from '../src/model/index.js';
import { forwardBatchSize, forwardShape, modelShape } from '../src/pipeline/memory.js';
import { sparsitySpec, type PruneOptions } from '../src/pipeline/options.js';
import { createProgress, type Progress } from '../src/pipeline/progress.js';
import { interruption, runPrune } from '../src/pipeline/prune.js';
import { runCli } from './cli-helpers.js';
import { copyStories, outputHashes, tempRoot } from './faults-helpers.js';
import { needsShared, shared } from './helpers.js';
import { MODELS } from './model-fixtures.js';

const root = tempRoot('sparsellm-offload-test-');

// 40 sequences of 256 tokens: one state file per forward batch (memory.ts forwardBatchSize), several of them
const NSAMPLES = 40, SEQLEN = 256;
function stateFiles(modelArg: string): number {
  const model = OnnxModel.load(resolveModelFile(modelArg));
  const layout = analyzeDecoder(model);
  return Math.ceil(NSAMPLES / forwardBatchSize(NSAMPLES, SEQLEN, forwardShape(layout, modelShape(model, layout).heads)));
}
const options = (model: string, calib: string, out: string, offload?: string): PruneOptions => ({
  model, method: 'sparsegpt', spec: sparsitySpec(0.5, undefined, undefined), calib, nsamples: NSAMPLES, seqlen: SEQLEN, seed: 0, layers: 'all',
  sparsellm: {}, out, force: false, resume: false, eval: [], quiet: true, dataDir: shared('data'), ...(offload ? { offload } : {}),
});

/** Silent progress that records the offload folder's files whenever a block starts (and can stop the run there). */
function watchingProgress(dir: string, seen: number[], stopAt?: number): Progress {
  const silent = createProgress(false);
  return {
    ...silent,
    log: (line) => {
      const m = /^block (\d+) /.exec(line);
      if (!m) return;
      const sub = readdirSync(dir).filter((f) => f.startsWith('sparsellm-offload-'));
      seen.push(sub.length === 1 ? readdirSync(join(dir, sub[0]!)).length : -1);
      if (Number(m[1]) === stopAt) interruption.requested = true;
    },
  };
}

const cases = [
  { name: 'stories260K', model: MODELS.stories, calib: 'tinystories', skip: false as string | false },
  { name: 'tiny-wikitext-opt', model: MODELS.wikitextOpt, calib: 'ptb', skip: needsShared(MODELS.wikitextOpt, 'data/ptb') },
];

for (const c of cases) {
  test(`${c.name}: --offload gives the same output bytes, uses one file per micro-batch, and leaves DIR empty`, { skip: c.skip }, async () => {
    const plain = join(root, `${c.name}-plain`), off = join(root, `${c.name}-offload`), dir = join(root, `${c.name}-scratch`);
    await runPrune(options(c.model, c.calib, plain), createProgress(false));
    const seen: number[] = [];
    mkdirSync(dir);
    await runPrune(options(c.model, c.calib, off, dir), watchingProgress(dir, seen));
    assert.deepEqual(outputHashes(off), outputHashes(plain));
    const files = stateFiles(c.model);
    assert.ok(files > 1, `${files} forward batch(es)`);
    assert.ok(seen.length > 1 && seen.every((n) => n === files), `state files seen when each block started: ${seen.join(', ')} (want ${files} each)`);
    assert.deepEqual(readdirSync(dir), [], 'the offload folder is removed at the end');
  });
}

test('an interrupted --offload run removes its activation files too', async () => {
  const dir = join(root, 'interrupted-scratch'), seen: number[] = [];
  const out = join(root, 'interrupted');
  await assert.rejects(runPrune(options(MODELS.stories, 'tinystories', out, dir), watchingProgress(dir, seen, 2)), (e: Error & { exitCode?: number }) => e.exitCode === 130);
  interruption.requested = false;
  assert.ok(seen.length >= 2 && seen[0] === stateFiles(MODELS.stories), `state files seen: ${seen.join(', ')}`);
  assert.deepEqual(readdirSync(dir), []);
});

test('--offload inside the input model or the output, or with magnitude, is refused with one line and nothing written', async () => {
  const model = copyStories(join(root, 'stories-copy'));
  const out = join(root, 'refused-out');
  const common = ['prune', '--model', model, '--method', 'sparsegpt', '--calib', 'tinystories', '--nsamples', '2', '--seqlen', '32', '--out', out];
  for (const [args, expect] of [
    [[...common, '--offload', join(model, 'scratch')], /--offload .* is inside the input model folder/],
    [[...common, '--offload', model], /--offload .* is the input model folder/],
    [[...common, '--offload', join(out, 'scratch')], /--offload .* is inside the output folder/],
    [[...common, '--offload', join(`${out}.partial`, 'x')], /--offload .* is inside the output folder/],
    [[...common, '--method', 'magnitude', '--offload', join(root, 'x')], /--offload .* is a calibration option, but --method is magnitude/],
    [[...common, '--offload', ''], /--offload is empty/],
  ] as [string[], RegExp][]) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^sparsellm: /);
    assert.match(lines[0]!, expect);
    assert.ok(!existsSync(out) && !existsSync(`${out}.partial`), 'nothing written');
    assert.ok(!existsSync(join(model, 'scratch')), 'nothing made inside the model');
  }
});
