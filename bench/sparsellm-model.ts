/**
 * SparseLLM on the whole OPT-125m-shaped model of issue 16 (d=768, 12 blocks, FFN 3072, random weights, fp32),
 * 32 × 512 calibration tokens, 70 % — the model the issue's 356 s prune / 308 s solve were measured on — with this
 * checkout and, given --before-tree DIR (a checkout of an earlier commit with its addon built, e.g. a worktree of
 * 86f702b), with that one, one after the other in the same run. Each prune runs in its own process
 * (bench/child-prune.ts of its own tree). Writes bench/sparsellm-model.json; prints the comparison.
 *   npm run bench -- --sparsellm-model [--before-tree DIR]     (~4 min, ~10 more with --before-tree)
 *   npm run bench -- --sparsellm-model --render                 (the RESULTS.md section from the saved JSON)
 * Also rewrites its section of bench/RESULTS.md (between its markers; `npm run bench` keeps it).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SPARSELLM_DEFAULTS } from '../src/pipeline/options.js';
import type { ChildPruneArgs } from './child-prune.js';
import { WHOLE_BEGIN, WHOLE_END, writeResultsSection } from './depth-section.js';
import { fillShape, generateOptModel } from './opt-model.js';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const flag = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
interface Run { tree: string; commit?: string; wallSeconds: number; maxRssMb: number; phases: Record<string, number> | null; outputErrors: number[] }
interface Saved { date: string; model: string; shape: { hidden: number; layers: number }; nsamples: number; seqlen: number; sparsity: number; epochs: number; loadAverageAtStart: number[]; loadAverageAtEnd: number[]; runs: Run[] }
const jsonPath = join(here, 'sparsellm-model.json');
const saved: Saved = argv.includes('--render') ? JSON.parse(readFileSync(jsonPath, 'utf8')) as Saved : measure();
writeSection(saved);

function measure(): Saved {
  const beforeTree = flag('--before-tree');
  if (beforeTree && !existsSync(join(beforeTree, 'bench', 'child-prune.ts'))) throw new Error(`--before-tree ${beforeTree}: no bench/child-prune.ts there`);
  const shape = { hidden: 768, layers: 12 };
  const nsamples = 32, seqlen = 512, sparsity = 0.7;

  const g = generateOptModel(join(tmpdir(), 'sparsellm-bench-models-v1'), shape);
  const outRoot = mkdtempSync(join(tmpdir(), 'sparsellm-bench-whole-'));
  const calib = join(outRoot, 'calibration.txt');
  writeFileSync(calib, Array(24).fill(readFileSync(join(here, '..', 'calibration', 'data', 'tinystories_sample.txt'), 'utf8')).join('\n'));

  function prune(tree: string): Run {
    const args: ChildPruneArgs = { model: g.dir, method: 'sparsellm', sparsity, nsamples, seqlen, out: join(outRoot, 'out'), calib };
    const t = performance.now();
    const child = spawnSync(process.execPath, ['--import', 'tsx', join(tree, 'bench', 'child-prune.ts'), JSON.stringify(args)],
      { cwd: tree, encoding: 'utf8', maxBuffer: 1 << 28 });
    if (child.status !== 0) throw new Error(`prune in ${tree} failed (exit ${child.status}):\n${child.stderr.slice(-2000)}`);
    const wallSeconds = (performance.now() - t) / 1000;
    const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as { report: { timings?: Record<string, number>; sparsellm: { outputError: number }[] }; maxRssKb: number };
    const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: tree, encoding: 'utf8' }).stdout.trim() || undefined;
    return { tree, commit, wallSeconds, maxRssMb: r.maxRssKb / 1024, phases: r.report.timings ?? null, outputErrors: r.report.sparsellm.map((b) => b.outputError) };
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
  const result: Saved = { date: new Date().toISOString(), model: g.dir.split('/').pop()!, shape, nsamples, seqlen, sparsity, epochs: SPARSELLM_DEFAULTS.epochs, loadAverageAtStart: load0, loadAverageAtEnd: load1, runs };
  writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
  return result;
}

function writeSection(r: Saved): void {
  const label = (run: Run) => run.commit ?? run.tree;
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const [before, after] = r.runs.length === 2 ? r.runs : [undefined, r.runs[0]!];
  const lines = [
    WHOLE_BEGIN,
    '## SparseLLM on the whole d=768 model (issue 16)',
    '',
    `The issue's OPT-125m-shaped model (d=${r.shape.hidden}, ${r.shape.layers} blocks, FFN ${fillShape(r.shape).ffn}, random weights, fp32), ${r.nsamples} × ${r.seqlen} calibration tokens, SparseLLM ${r.sparsity * 100} % with its default options (${r.epochs} epochs), each prune in its own process with its own checkout's code, one after the other; load average ${r.loadAverageAtStart.join(' ')} at the start and ${r.loadAverageAtEnd.join(' ')} at the end. Latest \`npm run bench -- --sparsellm-model${before ? ' --before-tree …' : ''}\`: ${r.date.slice(0, 10)}.`,
    '',
    '| code | prune (s) | solve (s) | statistics (s) | re-run (s) | peak RSS (MB) | mean output error of the FFNs |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...r.runs.map((run) => `| ${label(run)} | ${run.wallSeconds.toFixed(1)} | ${run.phases?.solve?.toFixed(1) ?? '—'} | ${run.phases?.statistics?.toFixed(1) ?? '—'} | ${run.phases?.rerun?.toFixed(1) ?? '—'} | ${run.maxRssMb.toFixed(0)} | ${mean(run.outputErrors).toExponential(4)} |`),
    '',
    ...(before && before.phases?.solve && after.phases?.solve
      ? [`Solve ${(before.phases.solve / after.phases.solve).toFixed(2)}× faster, whole prune ${(before.wallSeconds / after.wallSeconds).toFixed(2)}× faster, peak RSS ${(before.maxRssMb / after.maxRssMb).toFixed(2)}× lower than ${label(before)} (target of issue 16: solve ≥ 2.4× faster in the same run).`]
      : []),
    WHOLE_END,
  ];
  const section = lines.join('\n');
  writeResultsSection(WHOLE_BEGIN, WHOLE_END, section);
  console.log(section);
}
