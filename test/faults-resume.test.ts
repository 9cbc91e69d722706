// Issue #8: a prune killed (SIGKILL) or stopped (SIGINT) part way resumes with --resume from its last finished block and
// writes byte-identical files to an uninterrupted run; a resume with other settings is refused; Ctrl-C exits 130 with
// one line saying how to resume and keeps `<out>.partial`.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { oneLine, outputHashes, runCli, startCli, tempRoot, type CliResult } from './faults-helpers.js';

const root = tempRoot('sparsellm-resume-');

const METHODS = {
  sparsegpt: ['--method', 'sparsegpt', '--nsamples', '8', '--seqlen', '128'],
  sparsellm: ['--method', 'sparsellm', '--nsamples', '8', '--seqlen', '128', '--epochs', '2'],
} as const;
type Method = keyof typeof METHODS;

// Solver threads change SparseGPT's rounding; every run uses 2 except one resume with 1, which must still match
// (the checkpoint pins the interrupted run's thread count).
const THREADS = { SPARSELLM_THREADS: '2' };

const pruneArgs = (method: Method, out: string, extra: string[] = []) =>
  ['prune', '--model', 'stories260K', '--sparsity', '0.5', '--calib', 'tinystories', ...METHODS[method], '--out', out, '--quiet', ...extra];

function finishedBlocks(out: string): number {
  try {
    return (JSON.parse(readFileSync(join(`${out}.partial`, '.checkpoint', 'manifest.json'), 'utf8')) as { blocks: unknown[] }).blocks.length;
  } catch {
    return 0; // not written yet, or being replaced (rename)
  }
}

interface Stopped {
  /** Blocks in the checkpoint when the signal was sent. */
  blocksAtSignal: number;
  result: CliResult;
}

/** Starts a prune and sends `signal` once the checkpoint records `afterBlocks` finished blocks (0: at once). */
async function stopAt(method: Method, out: string, afterBlocks: number, signal: NodeJS.Signals): Promise<Stopped> {
  const { child, done } = startCli(pruneArgs(method, out), THREADS);
  let exited = false;
  void done.then(() => (exited = true));
  let blocks = 0;
  if (afterBlocks === 0) {
    // "at once": as soon as the run has made its partial folder (or right away if it is slow to start)
    const t0 = Date.now();
    while (!exited && !existsSync(`${out}.partial`) && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 2));
  } else {
    while (!exited && (blocks = finishedBlocks(out)) < afterBlocks) await new Promise((r) => setTimeout(r, 2));
  }
  blocks = finishedBlocks(out);
  child.kill(signal);
  const result = await done;
  assert.ok(!exited || result.signal === signal || result.code === 130, `the run finished before it could be stopped (${method}, after ${afterBlocks})`);
  return { blocksAtSignal: blocks, result };
}

describe('resume after a kill or Ctrl-C is byte-identical to an uninterrupted run', () => {
  const reference = new Map<Method, Map<string, string>>();
  const killed = new Map<string, Stopped>();
  const resumed = new Map<string, CliResult>();
  const outs = (method: Method, tag: string) => join(root, `${method}-${tag}`);
  const plan: [Method, number][] = [['sparsegpt', 0], ['sparsegpt', 1], ['sparsegpt', 3], ['sparsellm', 2]];
  let mismatch: CliResult;
  let mismatchPartialKept: boolean;
  let sigint: Stopped;
  let sigintResume: CliResult;
  let sigintPartialKept: boolean;

  before(async () => {
    // uninterrupted references, and the kills, two at a time
    await Promise.all([
      (async () => {
        for (const m of ['sparsegpt', 'sparsellm'] as Method[]) {
          const r = await runCli(pruneArgs(m, outs(m, 'reference')), THREADS);
          assert.equal(r.code, 0, r.stderr);
          reference.set(m, outputHashes(outs(m, 'reference')));
        }
        // a different --sparsity on a killed run's checkpoint is refused, the checkpoint kept
        const out = outs('sparsegpt', 'mismatch');
        const k = await stopAt('sparsegpt', out, 1, 'SIGKILL');
        assert.equal(k.result.signal, 'SIGKILL');
        mismatch = await runCli([...pruneArgs('sparsegpt', out, ['--resume']), '--sparsity', '0.6'], THREADS);
        mismatchPartialKept = existsSync(join(`${out}.partial`, '.checkpoint', 'manifest.json'));
      })(),
      (async () => {
        for (const [m, after] of plan) {
          const out = outs(m, `kill${after}`);
          killed.set(`${m}/${after}`, await stopAt(m, out, after, 'SIGKILL'));
          resumed.set(`${m}/${after}`, await runCli(pruneArgs(m, out, ['--resume']), { SPARSELLM_THREADS: after === 1 ? '1' : '2' }));
        }
        const out = outs('sparsegpt', 'sigint');
        sigint = await stopAt('sparsegpt', out, 2, 'SIGINT');
        sigintPartialKept = existsSync(join(`${out}.partial`, '.checkpoint', 'manifest.json'));
        sigintResume = await runCli(pruneArgs('sparsegpt', out, ['--resume']), THREADS);
      })(),
    ]);
  });

  it('two uninterrupted runs already agree (the pipeline is deterministic)', async () => {
    const out = outs('sparsegpt', 'again');
    const r = await runCli(pruneArgs('sparsegpt', out), THREADS);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(outputHashes(out), reference.get('sparsegpt'));
  });

  for (const [m, after] of plan) {
    it(`${m}: killed ${after === 0 ? 'at start' : `after block ${after - 1} is recorded`}, --resume${after === 1 ? ' (with 1 solver thread instead of 2)' : ''} writes identical files`, () => {
      const k = killed.get(`${m}/${after}`)!;
      assert.equal(k.result.signal, 'SIGKILL');
      assert.ok(k.blocksAtSignal >= after, `${k.blocksAtSignal} blocks when killed`);
      const r = resumed.get(`${m}/${after}`)!;
      assert.equal(r.code, 0, r.stderr);
      const out = outs(m, `kill${after}`);
      assert.ok(!existsSync(`${out}.partial`), 'the partial folder is gone after the resume');
      assert.ok(!existsSync(join(out, '.checkpoint')), 'checkpoints are not part of the output');
      assert.deepEqual(outputHashes(out), reference.get(m));
      const report = JSON.parse(readFileSync(join(out, 'sparsellm-report.json'), 'utf8')) as { resumedBlocks: number };
      assert.ok(report.resumedBlocks >= k.blocksAtSignal, `resumed ${report.resumedBlocks} blocks, ${k.blocksAtSignal} were recorded`);
      if (after > 0) assert.ok(report.resumedBlocks >= after);
    });
  }

  it('a resume with different settings is refused in one line and keeps the checkpoint', () => {
    const line = oneLine(mismatch);
    assert.match(line, /the checkpoint in .*\.checkpoint was made with another model or other settings: rerun with the same arguments, or without --resume \(add --force\) to start over/);
    assert.equal(mismatch.code, 2);
    assert.ok(mismatchPartialKept);
  });

  it('SIGINT: exit 130, one line saying how to resume, .partial kept; --resume then completes identically', () => {
    assert.equal(sigint.result.code, 130, sigint.result.stderr);
    const line = oneLine(sigint.result);
    assert.match(line, /^sparsellm: interrupted: finished blocks are kept in .*sparsegpt-sigint\.partial; rerun the same command with --resume to continue$/);
    assert.ok(sigintPartialKept, '.partial with its checkpoint is kept');
    assert.equal(sigintResume.code, 0, sigintResume.stderr);
    const out = outs('sparsegpt', 'sigint');
    assert.deepEqual(outputHashes(out), reference.get('sparsegpt'));
    const report = JSON.parse(readFileSync(join(out, 'sparsellm-report.json'), 'utf8')) as { resumedBlocks: number };
    assert.ok(report.resumedBlocks >= 2);
  });
});
