/**
 * SparseGPT against its floor (issue 16), on the OPT-125m-shaped bench model (d=768, 12 blocks, FFN 3072, random
 * weights, fp32), 32 × 512 calibration tokens, 50 %:
 *   floor = 2 × one plain forward pass over the calibration set (the statistics pass without its captures, and the
 *           re-run) + the Hessian SYRK flops at the SGEMM rate measured in this run.
 * The prune runs in its own process (bench/child-prune.ts) and its total time is printed beside the floor. The plain
 * pass is measured here with the pipeline's own BlockRunner and micro-batch size; the SGEMM rate as the median of 3
 * [4096 × 768] · [768 × 768] products. Plain pass, SGEMM and prune alternate `rounds` times so that other load on the
 * machine hits both sides alike; the medians are reported.
 *   npm run bench -- --floor [--floor-rounds R]      (about 5 min per round on 2 cores)
 * Writes bench/floor-results.json and the floor section of bench/RESULTS.md (between its markers).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlockRunner } from '../src/model/index.js';
import { native } from '../src/native/addon.js';
import { statisticsGroupSize } from '../src/pipeline/memory.js';
import type { ChildPruneArgs, ChildPruneResult } from './child-prune.js';
import { FLOOR_BEGIN, FLOOR_END, median, writeResultsSection } from './depth-section.js';
import { generateOptModel } from './opt-model.js';


const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const rounds = argv.includes('--floor-rounds') ? Number(argv[argv.indexOf('--floor-rounds') + 1]) : 1;
const shape = { hidden: 768, layers: 12 };
const nsamples = 32, seqlen = 512, sparsity = 0.5;
const tokens = nsamples * seqlen;

const g = generateOptModel(join(tmpdir(), 'sparsellm-bench-models-v1'), shape);
const outRoot = mkdtempSync(join(tmpdir(), 'sparsellm-bench-floor-'));
const calib = join(outRoot, 'calibration.txt');
const sample = readFileSync(join(here, '..', 'calibration', 'data', 'tinystories_sample.txt'), 'utf8');
writeFileSync(calib, Array(24).fill(sample).join('\n'));

/** One plain forward pass (prologue + every block, no captures) over `nsamples` × `seqlen` tokens, in the pipeline's micro-batches. */
async function plainPass(runner: BlockRunner): Promise<number> {
  const batch = statisticsGroupSize(nsamples, seqlen);
  const t = performance.now();
  for (let s0 = 0; s0 < nsamples; s0 += batch) {
    const b = Math.min(batch, nsamples - s0);
    const ids = new BigInt64Array(b * seqlen).map((_, k) => BigInt(((s0 * seqlen + k) * 7919) % 500 + 3));
    let state = await runner.prologue(ids, b, seqlen);
    for (let i = 0; i < runner.numBlocks; i++) state = (await runner.runBlock(i, state)).state;
  }
  return (performance.now() - t) / 1000;
}

async function sgemmRate(): Promise<number> {
  const [m, k, n] = [4096, 768, 768];
  const A = new Float32Array(m * k).fill(0.01), B = new Float32Array(k * n).fill(0.01), C = new Float32Array(m * n);
  const times: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    await native().sgemm(A, B, C, m, k, n);
    times.push((performance.now() - t) / 1000);
  }
  return (2 * m * k * n) / median(times) / 1e9;
}

function prune(): ChildPruneResult {
  const args: ChildPruneArgs = { model: g.dir, method: 'sparsegpt', sparsity, nsamples, seqlen, out: join(outRoot, 'out'), calib };
  const child = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'child-prune.ts'), JSON.stringify(args)], { encoding: 'utf8', maxBuffer: 1 << 28 });
  rmSync(join(outRoot, 'out'), { recursive: true, force: true });
  if (child.status !== 0) throw new Error(`prune of ${g.dir} failed (exit ${child.status}):\n${child.stderr.slice(-2000)}`);
  return JSON.parse(child.stdout.trim().split('\n').pop()!) as ChildPruneResult;
}

const loadStart = loadavg();
const runner = await BlockRunner.open(join(g.dir, 'onnx', 'model.onnx'));
// Hessian SYRK flops: one Hessian per distinct linear input of each block (q/k/v share theirs), tokens · n² each.
let syrkFlop = 0;
for (let i = 0; i < runner.numBlocks; i++)
  for (const l of new Map(runner.block(i).linears.map((x) => [x.inputName, x])).values()) syrkFlop += tokens * l.inFeatures * l.inFeatures;
await plainPass(runner); // sessions built, buffers warm
const plain: number[] = [], rate: number[] = [], total: number[] = [];
let last: ChildPruneResult | undefined;
try {
  for (let r = 0; r < rounds; r++) {
    plain.push(await plainPass(runner));
    rate.push(await sgemmRate());
    process.stderr.write(`[floor] round ${r + 1}/${rounds}: plain pass ${plain.at(-1)!.toFixed(1)} s, SGEMM ${rate.at(-1)!.toFixed(1)} GFLOP/s; pruning ...\n`);
    last = prune();
    total.push(last.report.timings.total!);
    process.stderr.write(`[floor]   SparseGPT prune ${total.at(-1)!.toFixed(1)} s\n`);
  }
} finally {
  await runner.dispose();
  rmSync(outRoot, { recursive: true, force: true });
}
const rateG = median(rate), pruneS = median(total);
const syrkS = syrkFlop / rateG / 1e9;
const phases = last!.report.timings;
// The plain pass two ways: measured here between prunes, and the prune's own re-run phase (a plain pass over the same
// tokens with the pruned weights, in the same process at the same moment). Other load on the machine can inflate
// either; the smaller gives the lower floor, i.e. the stricter ratio.
const plainS = Math.min(median(plain), phases.rerun!);
const floorS = 2 * plainS + syrkS;
const result = {
  date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length,
  loadAverageAtStart: loadStart.map((v) => +v.toFixed(2)), loadAverageAtEnd: loadavg().map((v) => +v.toFixed(2)),
  model: g.dir.split('/').pop(), shape, nsamples, seqlen, sparsity, rounds,
  plainPassSeconds: plain, pruneRerunSeconds: phases.rerun, sgemmGflops: rate, pruneSeconds: total, syrkGflop: syrkFlop / 1e9,
  floorSeconds: floorS, ratio: pruneS / floorS, lastPrunePhases: phases,
};
writeFileSync(join(here, 'floor-results.json'), `${JSON.stringify(result, null, 2)}\n`);
const f1 = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(1));
const line = `SparseGPT 50% on ${result.model} (${nsamples} × ${seqlen} tokens): prune ${f1(pruneS)} s, floor ${f1(floorS)} s ` +
  `(2 × plain pass ${f1(plainS)} s + SYRKs ${(syrkFlop / 1e9).toFixed(0)} GFLOP at ${f1(rateG)} GFLOP/s = ${f1(syrkS)} s): ${(pruneS / floorS).toFixed(2)}× the floor (target ≤ 1.5×)`;
console.log(line);
const section = [
  FLOOR_BEGIN,
  '## SparseGPT against its floor (issue 16)',
  '',
  `OPT-125m-shaped random model (d=768, 12 blocks, FFN 3072, fp32), ${nsamples} × ${seqlen} calibration tokens, 50 %. ` +
    'Floor = two plain forward passes over the calibration set (the statistics pass without captures, and the re-run; the pipeline\'s BlockRunner and micro-batches) ' +
    '+ the Hessian SYRK flops (one Hessian per distinct linear input per block, tokens · n²) at the SGEMM rate measured in the same run. ' +
    `${rounds} round(s), medians; ${result.cpu}, ${result.cores} cores, load average ${loadStart.map((v) => v.toFixed(1)).join(' ')} at the start and ${result.loadAverageAtEnd.join(' ')} at the end. ` +
    `Latest \`npm run bench -- --floor\`: ${result.date.slice(0, 10)}.`,
  '',
  '| | seconds |',
  '|---|---:|',
  `| plain forward pass (the smaller of: measured between prunes ${f1(median(plain))}, the prune's own re-run ${f1(phases.rerun)}) | ${f1(plainS)} |`,
  `| Hessian SYRKs at the SGEMM rate (${(syrkFlop / 1e9).toFixed(0)} GFLOP at ${f1(rateG)} GFLOP/s) | ${f1(syrkS)} |`,
  `| **floor** = 2 × pass + SYRKs | **${f1(floorS)}** |`,
  `| **SparseGPT prune** (total) | **${f1(pruneS)}** |`,
  `| of which: calibration / statistics / solve / re-run / export | ${['calibration', 'statistics', 'solve', 'rerun', 'export'].map((p) => f1(phases[p])).join(' / ')} |`,
  '',
  `Prune / floor = ${(pruneS / floorS).toFixed(2)} (target ≤ 1.5).`,
  FLOOR_END,
].join('\n');
writeResultsSection(FLOOR_BEGIN, FLOOR_END, section);
process.stderr.write('wrote bench/floor-results.json and the floor section of bench/RESULTS.md\n');
