/**
 * sparsellm against an independent PyTorch implementation of the reference code's sequential flow
 * (bench/torch-reference/reference.py), on the same machine in the same run: issue 16's speed targets
 * ("SparseLLM at most 0.15× the PyTorch time", SparseGPT's ratio beside it). The OPT-125m shape of the issue (d=768,
 * 12 blocks, FFN 3072, random weights N(0, 0.02²), fp32), 32 × 512 calibration tokens: SparseLLM 70 % (4 epochs,
 * both sides' default) and SparseGPT 50 %. Each side runs in its own process, one after the other; PyTorch with
 * 2 threads (Debian's python3-torch on OpenBLAS, like our addon). Wall seconds of the whole prune, CPU seconds and the
 * phases each side reports. Writes bench/torch-reference/results.json and its section of bench/RESULTS.md.
 *   npm run bench -- --torch [--torch-methods sparsellm,sparsegpt] [--torch-layers 12]   (~30 min on 2 cores)
 *   npm run bench -- --torch --render        (the RESULTS.md section from the saved JSON)
 * Needs /usr/bin/python3 with torch (apt-get install python3-torch); without it, says so and exits 0.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../src/native/addon.js';
import type { ChildPruneArgs, ChildPruneResult } from './child-prune.js';
import { TORCH_BEGIN, TORCH_END, writeResultsSection } from './depth-section.js';
import { generateOptModel } from './opt-model.js';

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const option = (name: string, fallback: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1]! : fallback);
const PYTHON = '/usr/bin/python3';
const jsonPath = join(here, 'torch-reference', 'results.json');

interface Side { wallSeconds: number; cpuSeconds: number; maxRssMb: number; phases: Record<string, number>; sparsity: number }
interface Row { method: 'sparsellm' | 'sparsegpt'; sparsity: number; epochs?: number; sparsellm: Side; torch: Side; torchVersion: string }
interface Saved { date: string; cpu: string; blasCore: string; shape: { hidden: number; layers: number; ffn: number; heads: number }; nsamples: number; seqlen: number; loadAverageAtStart: number[]; loadAverageAtEnd: number[]; rows: Row[] }

const saved: Saved | null = argv.includes('--render') ? JSON.parse(readFileSync(jsonPath, 'utf8')) as Saved : measure();
if (saved) writeResultsSection(TORCH_BEGIN, TORCH_END, section(saved));

function measure(): Saved | null {
  if (spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }).status !== 0) {
    console.log(`bench --torch: skipped, ${PYTHON} has no torch (apt-get install python3-torch)`);
    return null;
  }
  const shape = { hidden: 768, layers: Number(option('--torch-layers', '12')), ffn: 3072, heads: 12 };
  const nsamples = 32, seqlen = 512;
  const methods = option('--torch-methods', 'sparsellm,sparsegpt').split(',') as Row['method'][];
  const g = generateOptModel(join(tmpdir(), 'sparsellm-bench-models-v1'), { hidden: shape.hidden, layers: shape.layers });
  const outRoot = mkdtempSync(join(tmpdir(), 'sparsellm-bench-torch-'));
  const calib = join(outRoot, 'calibration.txt');
  writeFileSync(calib, Array(24).fill(readFileSync(join(here, '..', 'calibration', 'data', 'tinystories_sample.txt'), 'utf8')).join('\n'));
  const load0 = loadavg().map((v) => +v.toFixed(2));
  const rows: Row[] = [];
  try {
    for (const method of methods) {
      const sparsity = method === 'sparsellm' ? 0.7 : 0.5;
      process.stderr.write(`[torch] ${method} ${sparsity}: sparsellm ...\n`);
      const args: ChildPruneArgs = { model: g.dir, method, sparsity, nsamples, seqlen, out: join(outRoot, 'out'), calib };
      let t = performance.now();
      const ours = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'child-prune.ts'), JSON.stringify(args)], { encoding: 'utf8', maxBuffer: 1 << 28 });
      if (ours.status !== 0) throw new Error(`sparsellm prune failed:\n${ours.stderr.slice(-2000)}`);
      const oursWall = (performance.now() - t) / 1000;
      rmSync(join(outRoot, 'out'), { recursive: true, force: true });
      const r = JSON.parse(ours.stdout.trim().split('\n').pop()!) as ChildPruneResult;
      process.stderr.write(`[torch]   sparsellm ${oursWall.toFixed(1)} s; PyTorch ...\n`);
      const out = join(outRoot, `torch-${method}.json`);
      t = performance.now();
      const py = spawnSync(PYTHON, [join(here, 'torch-reference', 'reference.py'), '--method', method, '--sparsity', String(sparsity),
        '--hidden', String(shape.hidden), '--layers', String(shape.layers), '--ffn', String(shape.ffn), '--heads', String(shape.heads),
        '--nsamples', String(nsamples), '--seqlen', String(seqlen), '--threads', '2', '--no-check', '--out', out], { encoding: 'utf8', maxBuffer: 1 << 26 });
      if (py.status !== 0) throw new Error(`reference.py failed:\n${py.stderr.slice(-2000)}`);
      const torchWall = (performance.now() - t) / 1000;
      const p = JSON.parse(readFileSync(out, 'utf8')) as { seconds: Record<string, number>; cpuSecondsProcess: number; maxRssMb: number; sparsity_measured: number; torch: string; epochs?: number };
      process.stderr.write(`[torch]   PyTorch ${torchWall.toFixed(1)} s\n`);
      rows.push({
        method, sparsity, ...(method === 'sparsellm' ? { epochs: p.epochs } : {}), torchVersion: p.torch,
        sparsellm: { wallSeconds: oursWall, cpuSeconds: r.cpuSeconds, maxRssMb: r.maxRssKb / 1024, phases: r.report.timings as unknown as Record<string, number>, sparsity: r.report.sparsity.overall },
        torch: { wallSeconds: torchWall, cpuSeconds: p.cpuSecondsProcess, maxRssMb: p.maxRssMb, phases: p.seconds, sparsity: p.sparsity_measured },
      });
    }
  } finally {
    rmSync(outRoot, { recursive: true, force: true });
  }
  const result: Saved = {
    date: new Date().toISOString(), cpu: cpus()[0]?.model ?? '?', blasCore: native().blasCore(), shape, nsamples, seqlen,
    loadAverageAtStart: load0, loadAverageAtEnd: loadavg().map((v) => +v.toFixed(2)), rows,
  };
  writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
  for (const row of rows) console.log(`${row.method}: sparsellm ${row.sparsellm.wallSeconds.toFixed(1)} s, PyTorch ${row.torch.wallSeconds.toFixed(1)} s: ${(row.sparsellm.wallSeconds / row.torch.wallSeconds).toFixed(2)}×`);
  return result;
}

function section(s: Saved): string {
  const f = (v: number | undefined) => (v === undefined ? '—' : v.toFixed(1));
  const phases = ['calibration', 'statistics', 'solve', 'rerun', 'export'];
  const lines = [
    TORCH_BEGIN,
    '## sparsellm against the PyTorch reference flow (issue 16)',
    '',
    `\`npm run bench -- --torch\` (bench/torch-compare.ts), ${s.date.slice(0, 10)}: an OPT-shaped model with random weights (d=${s.shape.hidden}, ${s.shape.layers} blocks, FFN ${s.shape.ffn}, ${s.shape.heads} heads, fp32), ` +
      `${s.nsamples} × ${s.seqlen} calibration tokens, each side in its own process one after the other on ${s.cpu} (${cpus().length} cores; OpenBLAS kernels ${s.blasCore}); ` +
      `PyTorch = bench/torch-reference/reference.py (our own implementation of the reference code's sequential flow, ALGORITHMS.md §1.3–1.4 and §2.2–2.4; Debian's torch ${s.rows[0]?.torchVersion ?? '?'} on the same OpenBLAS, 2 threads). ` +
      `Load average ${s.loadAverageAtStart.join(' ')} at the start, ${s.loadAverageAtEnd.join(' ')} at the end.`,
    '',
    '| method | side | whole prune (s) | CPU (s) | ' + phases.join(' | ') + ' | peak RSS (MB) | sparsity |',
    '|---|---|---:|---:|' + phases.map(() => '---:').join('|') + '|---:|---:|',
  ];
  for (const r of s.rows) {
    const label = `${r.method} ${Math.round(r.sparsity * 100)} %${r.epochs ? `, ${r.epochs} epochs` : ''}`;
    for (const [name, side] of [['sparsellm', r.sparsellm], ['PyTorch', r.torch]] as const)
      lines.push(`| ${label} | ${name} | ${f(side.wallSeconds)} | ${f(side.cpuSeconds)} | ${phases.map((k) => f(side.phases[k])).join(' | ')} | ${side.maxRssMb.toFixed(0)} | ${(side.sparsity * 100).toFixed(2)} % |`);
  }
  lines.push('');
  for (const r of s.rows) lines.push(`- ${r.method}: sparsellm / PyTorch = **${(r.sparsellm.wallSeconds / r.torch.wallSeconds).toFixed(2)}×** wall, ${(r.sparsellm.cpuSeconds / r.torch.cpuSeconds).toFixed(2)}× CPU${r.method === 'sparsellm' ? ' (target ≤ 0.15×)' : ''}.`);
  lines.push('', 'Whole prune = each process\'s wall time (start-up, model load and export included); the phases are each side\'s own timers (PyTorch has no export).', TORCH_END);
  return lines.join('\n');
}
