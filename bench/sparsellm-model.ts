/**
 * SparseLLM on the whole OPT-125m-shaped model of issue 16 (d=768, 12 blocks, FFN 3072, random weights, fp32),
 * 32 × 512 calibration tokens, 70 % — the model the issue's 356 s prune / 308 s solve were measured on — with this
 * checkout and, given --before-tree DIR (a checkout of an earlier commit with its addon built, e.g. a worktree of
 * 86f702b), with that one, one after the other in the same run. Each prune runs in its own process
 * (bench/child-prune.ts of its own tree). Writes bench/sparsellm-model.json; prints the comparison.
 *   npm run bench -- --sparsellm-model [--before-tree DIR]     (~4 min, ~10 more with --before-tree)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildPruneArgs } from './child-prune.js';
import { generateOptModel } from './opt-model.js';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const flag = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const beforeTree = flag('--before-tree');
if (beforeTree && !existsSync(join(beforeTree, 'bench', 'child-prune.ts'))) throw new Error(`--before-tree ${beforeTree}: no bench/child-prune.ts there`);
const shape = { hidden: 768, layers: 12 };
const nsamples = 32, seqlen = 512, sparsity = 0.7;

const g = generateOptModel(join(tmpdir(), 'sparsellm-bench-models-v1'), shape);
const outRoot = mkdtempSync(join(tmpdir(), 'sparsellm-bench-whole-'));
const calib = join(outRoot, 'calibration.txt');
writeFileSync(calib, Array(24).fill(readFileSync(join(here, '..', 'calibration', 'data', 'tinystories_sample.txt'), 'utf8')).join('\n'));

interface Run { tree: string; wallSeconds: number; maxRssMb: number; phases: Record<string, number> | null; outputErrors: number[] }
function prune(tree: string): Run {
  const args: ChildPruneArgs = { model: g.dir, method: 'sparsellm', sparsity, nsamples, seqlen, out: join(outRoot, 'out'), calib };
  const t = performance.now();
  const child = spawnSync(process.execPath, ['--import', 'tsx', join(tree, 'bench', 'child-prune.ts'), JSON.stringify(args)],
    { cwd: tree, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (child.status !== 0) throw new Error(`prune in ${tree} failed (exit ${child.status}):\n${child.stderr.slice(-2000)}`);
  const wallSeconds = (performance.now() - t) / 1000;
  const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as { report: { timings?: Record<string, number>; sparsellm: { outputError: number }[] }; maxRssKb: number };
  return { tree, wallSeconds, maxRssMb: r.maxRssKb / 1024, phases: r.report.timings ?? null, outputErrors: r.report.sparsellm.map((b) => b.outputError) };
}

const load0 = loadavg().map((v) => +v.toFixed(2));
const runs: Run[] = [];
try {
  if (beforeTree) runs.push(prune(resolve(beforeTree)));
  runs.push(prune(resolve(here, '..')));
} finally {
  rmSync(outRoot, { recursive: true, force: true });
}
const load1 = loadavg().map((v) => +v.toFixed(2));
for (const r of runs)
  console.log(`${r.tree}: prune ${r.wallSeconds.toFixed(1)} s, peak RSS ${r.maxRssMb.toFixed(0)} MB` +
    (r.phases ? `; phases ${Object.entries(r.phases).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}` : '') +
    `; mean output error ${(r.outputErrors.reduce((a, b) => a + b, 0) / r.outputErrors.length).toExponential(4)}`);
if (runs.length === 2) console.log(`whole prune: ${(runs[0]!.wallSeconds / runs[1]!.wallSeconds).toFixed(2)}x faster than ${runs[0]!.tree}`);
writeFileSync(join(here, 'sparsellm-model.json'), `${JSON.stringify({ date: new Date().toISOString(), model: g.dir.split('/').pop(), shape, nsamples, seqlen, sparsity, loadAverageAtStart: load0, loadAverageAtEnd: load1, runs }, null, 2)}\n`);
