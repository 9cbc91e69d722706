/**
 * The SparseLLM solve of one OPT-125m-shaped FFN block (issue 16): d=768, FFN 3072, 32 × 512 calibration tokens,
 * 4 epochs, 70 % unstructured, the default options (output refit, keep-best). Each solve runs in its own process
 * (this file with `--child`), so its peak RSS is its own: the figure is process.resourceUsage().maxRSS after the
 * call minus the RSS just before it (the inputs are already allocated then).
 *   npm run bench -- --sparsellm-solve [--before-addon PATH] [--tokens N]
 * --before-addon loads a second build of the addon (e.g. one compiled from an earlier commit) and solves the same
 * block with it in the same run, alternating old and new, then compares the returned weights and the per-epoch
 * objective/output error. Writes bench/sparsellm-solve.json and a section of bench/RESULTS.md (between its markers;
 * `npm run bench` keeps it).
 * The run also prints the solve's BLAS floor (solveFloor): the floating-point work of the default solver, counted
 * step by step from native/src/solvers/sparsellm.cc, at the SGEMM rate measured in the same run on the solve's own
 * token-block shape, beside each step's measured time (SPARSELLM_PROFILE in the child).
 *
 * The block is synthetic but shaped like a real one: X has LayerNorm-like rows with a shared per-token factor, a
 * log-normal spread of channel scales and a few outlier channels ×8 (as OPT's hidden states have); fc1/fc2 are
 * Gaussian with 1/√fan-in scale and a slightly negative fc1 bias (about 40 % of ReLU outputs positive).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAddon, native, OPENBLAS_IDLE_SPIN_LOG2_CYCLES, solverThreads, type NativeAddon } from '../src/native/addon.js';
import { optFamily } from '../src/model/families/opt.js';
import { sparsellmTokenBlockRows } from '../src/native/sparsellm.js';
import { sparseLlmOptions } from '../src/pipeline/options.js';

import { SOLVE_BEGIN, SOLVE_END } from './solve-section.js';
import { writeResultsSection } from './depth-section.js';

const here = dirname(fileURLToPath(import.meta.url));
const HIDDEN = 768, FFN = 3072, NSAMPLES = 32, SEQLEN = 512, SPARSITY = 0.7;

interface ChildResult {
  addon: string;
  /** SPARSELLM_PROFILE's wall seconds per step (the current addon only) */
  steps?: Record<string, number>;
  seconds: number;
  /** user + system CPU seconds of the call (all threads): less sensitive to other load on the machine than wall time */
  cpuSeconds: number;
  solverPeakMb: number;
  epochs: { objective: number | null; outputError: number }[];
  chosenEpoch: number;
  weightsFile: string;
}

function gaussian(n: number, seed: number, scale: number, mean = 0): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = mean + scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

function block(tokens: number) {
  const d = HIDDEN, f = FFN;
  const channel = gaussian(d, 11, 0.5).map((v, j) => Math.exp(v) * (j % 97 === 0 ? 8 : 1));
  const shared = gaussian(tokens, 12, 0.6), noise = gaussian(tokens * d, 13, 1);
  const X = new Float32Array(tokens * d);
  for (let t = 0; t < tokens; t++)
    for (let j = 0; j < d; j++) X[t * d + j] = channel[j]! * (noise[t * d + j]! + shared[t]!);
  return {
    X, W1: gaussian(f * d, 21, 1 / Math.sqrt(d)), b1: gaussian(f, 22, 0.1, -0.3),
    W2: gaussian(d * f, 23, 1 / Math.sqrt(f)), b2: gaussian(d, 24, 0.05),
  };
}

async function child(addonPath: string | null, tokens: number, weightsFile: string): Promise<void> {
  const addon: NativeAddon = addonPath ? loadAddon(addonPath) : native();
  addon.setThreads(solverThreads());
  const b = block(tokens);
  const H1 = new Float32Array(HIDDEN * HIDDEN);
  await addon.hessianAccumulate(H1, b.X, tokens, HIDDEN, 0, NSAMPLES);
  const options: Record<string, unknown> = { ...sparseLlmOptions(optFamily, { sparsity: SPARSITY }) };
  if (addonPath) delete options.tokenChunk; // an addon from before the option
  const rssBefore = process.memoryUsage().rss;
  const t0 = performance.now(), cpu0 = process.cpuUsage();
  const r = (await addon.sparsellmOpt(b.X, b.W1, b.b1, b.W2, b.b2, H1, null, tokens, HIDDEN, FFN, NSAMPLES, options)) as {
    epochs: { objective: number | null; outputError: number }[]; chosenEpoch: number;
  };
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const solverPeakMb = (process.resourceUsage().maxRSS * 1024 - rssBefore) / 2 ** 20;
  const w = new Float32Array(b.W1.length + b.W2.length);
  w.set(b.W1);
  w.set(b.W2, b.W1.length);
  writeFileSync(weightsFile, w);
  const out: ChildResult = {
    addon: addonPath ?? 'native/build', seconds, cpuSeconds, solverPeakMb, chosenEpoch: r.chosenEpoch, weightsFile,
    epochs: r.epochs.map((e) => ({ objective: e.objective, outputError: e.outputError })),
  };
  console.log(JSON.stringify(out));
}

function runChild(addonPath: string | null, tokens: number, weightsFile: string): ChildResult {
  const args = [join(here, 'sparsellm-solve.ts'), '--child', JSON.stringify({ addonPath, tokens, weightsFile })];
  const env = addonPath ? process.env : { ...process.env, SPARSELLM_PROFILE: '1' };
  const c = spawnSync(process.execPath, ['--import', 'tsx', ...args], { encoding: 'utf8', maxBuffer: 1 << 26, env });
  if (c.status !== 0) throw new Error(`solve with ${addonPath ?? 'native/build'} failed (exit ${c.status}):\n${c.stderr.slice(-2000)}`);
  const r = JSON.parse(c.stdout.trim().split('\n').pop()!) as ChildResult;
  if (!addonPath) {
    r.steps = {};
    for (const m of c.stderr.matchAll(/^sparsellm step (.+?)\s+cpu\s+[\d.]+ s\s+wall\s+([\d.]+) s$/gm)) r.steps[m[1]!.trim()] = Number(m[2]);
  }
  return r;
}

/**
 * The floating-point work of the default SparseLLM solve (output refit, keep-best, the last epoch without the p/z
 * pass), per group of steps of SparseLlmFfn, in flops (a multiply-add is 2). N tokens, hidden d, FFN f, E epochs.
 * Double-precision work (the fc2 refit's Cholesky and solve, the X Gram) counts twice: AVX-512 and AVX2 hold half as
 * many doubles as floats. The profile step names each group covers are listed with it.
 */
function solveFloor(N: number, d: number, f: number, E: number) {
  const nfd = 2 * N * f * d;
  return [
    { group: 'dense targets (z = W1 X, Y = W2 relu(z))', flop: 2 * nfd, steps: ['dense pass (targets)'] },
    { group: 'pass 1: M = W1ˢX, Gram AᵀA (SYRK), AᵀY', flop: E * (2 * nfd + N * f * f),
      steps: ['pass1 setup', 'pass1 M = WX + b', 'pass1 act(M)', 'pass1 Gram of A', 'pass1 AtY', 'pass1 colsum A', 'pass1 finish (mirror)'] },
    { group: 'fc2: refit (f×f Cholesky, solve; double), SparseGPT f×f, error from the Gram',
      flop: E * (2 * (f ** 3 / 3 + 2 * f * f * d) + f ** 3 + 2 * d * f * f + 2 * d * f * f),
      steps: ['fc2 refit Cholesky (f x f double)', 'fc2 refit solve', 'fc2 Hessian to float', 'fc2 prune (SparseGPT f x f)', 'output error from the Gram'] },
    { group: 'pass 2: p update (Woodbury: E, F, P) and XᵀZ', flop: (E - 1) * (3 * nfd + 2 * N * d * d),
      steps: ['p-update K inverse (d x d)', 'pass2 phi(z)', 'pass2 p update (E, F, P gemms)', 'pass2 check p', 'pass2 z step', 'pass2 objective terms', 'pass2 XtZ'] },
    { group: 'fc1: X Gram (double), refit, SparseGPT d×d', flop: 2 * N * d * d + E * (2 * 2 * d * d * f + d ** 3 + 2 * f * d * d),
      steps: ['X Gram + Cholesky', 'fc1 refit (solve from XtZ)', 'fc1 prune (SparseGPT d x d)'] },
  ];
}

/** The solve time per block that issue 16's target (whole prune ≤ 0.15× PyTorch's) leaves, from the last `--torch` run */
function torchTarget() {
  const file = join(here, 'torch-reference', 'results.json');
  if (!existsSync(file)) return undefined;
  const t = JSON.parse(readFileSync(file, 'utf8')) as {
    date: string; shape: { layers: number };
    rows: { method: string; sparsellm: { wallSeconds: number; phases: { solve: number } }; torch: { wallSeconds: number } }[];
  };
  const row = t.rows.find((r) => r.method === 'sparsellm');
  if (!row) return undefined;
  const other = row.sparsellm.wallSeconds - row.sparsellm.phases.solve;
  return { date: t.date.slice(0, 10), torch: row.torch.wallSeconds, other, blocks: t.shape.layers,
    perBlock: (0.15 * row.torch.wallSeconds - other) / t.shape.layers };
}

/** SGEMM GFLOP/s on the solve's token-block shape (rows × d times d × f; SparseLlmTokenBlockRows in sparsellm.cc), median of 5 */
async function sgemmRate(rows: number): Promise<number> {
  const A = new Float32Array(rows * HIDDEN).fill(0.01), B = new Float32Array(HIDDEN * FFN).fill(0.01);
  const C = new Float32Array(rows * FFN);
  const times: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    await native().sgemm(A, B, C, rows, HIDDEN, FFN);
    times.push((performance.now() - t) / 1000);
  }
  times.sort((a, b) => a - b);
  return (2 * rows * HIDDEN * FFN) / times[2]! / 1e9;
}

function compareWeights(a: string, b: string): { relDiff: number; maskDiff: number } {
  const x = new Float32Array(readFileSync(a).buffer.slice(0)), y = new Float32Array(readFileSync(b).buffer.slice(0));
  let num = 0, den = 0, maskDiff = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i]! - y[i]!) ** 2;
    den += y[i]! ** 2;
    if ((x[i] === 0) !== (y[i] === 0)) maskDiff++;
  }
  return { relDiff: Math.sqrt(num / den), maskDiff };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const before = flag('--before-addon') ?? null;
  if (before && !existsSync(before)) throw new Error(`--before-addon ${before}: no such file`);
  const tokens = Number(flag('--tokens') ?? NSAMPLES * SEQLEN);
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-solve-'));
  const load0 = loadavg().map((v) => v.toFixed(1));
  const runs: { which: 'before' | 'after'; r: ChildResult }[] = [];
  try {
    // one after the other, so that both see about the same load of the machine
    if (before) runs.push({ which: 'before', r: runChild(before, tokens, join(dir, 'before.f32')) });
    runs.push({ which: 'after', r: runChild(null, tokens, join(dir, 'after.f32')) });
    // the token block of the solve's passes, by the solver's own rule (about 16 MB of an f-wide float block)
    const chunkRows = sparsellmTokenBlockRows(tokens, FFN);
    const gflops = await sgemmRate(chunkRows);
    for (const x of runs) process.stderr.write(`${x.which}: ${x.r.seconds.toFixed(1)} s (CPU ${x.r.cpuSeconds.toFixed(1)} s), solver peak RSS ${x.r.solverPeakMb.toFixed(0)} MB\n`);
    const after = runs.filter((x) => x.which === 'after').map((x) => x.r);
    const old = runs.filter((x) => x.which === 'before').map((x) => x.r);
    const cmp = old.length ? compareWeights(after[0]!.weightsFile, old[0]!.weightsFile) : undefined;
    const steps = after[0]!.steps ?? {};
    const floor = solveFloor(tokens, HIDDEN, FFN, 4).map((g) => ({
      group: g.group, gflop: g.flop / 1e9, floorSeconds: g.flop / 1e9 / gflops,
      measuredSeconds: g.steps.reduce((sum, name) => sum + (steps[name] ?? 0), 0),
    }));
    const floorTotal = floor.reduce((s, g) => s + g.floorSeconds, 0);
    const target = torchTarget();
    const profiled = Object.entries(steps).filter(([name]) => name !== 'TOTAL').reduce((s, [, v]) => s + v, 0);
    const result = {
      date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length, loadAverageAtStart: load0,
      loadAverageAtEnd: loadavg().map((v) => v.toFixed(1)), threads: solverThreads(),
      openblasThreadTimeout: process.env.OPENBLAS_THREAD_TIMEOUT ?? OPENBLAS_IDLE_SPIN_LOG2_CYCLES,
      block: { hidden: HIDDEN, ffn: FFN, tokens, epochs: 4, sparsity: SPARSITY }, before: old[0], after: after[0], weights: cmp,
      blasCore: native().blasCore(), sgemmGflops: gflops, sgemmShape: [chunkRows, HIDDEN, FFN], floor, floorSeconds: floorTotal,
    };
    writeFileSync(join(here, 'sparsellm-solve.json'), `${JSON.stringify(result, null, 2)}\n`);
    const lines = [
      SOLVE_BEGIN,
      '## SparseLLM solve of one OPT-125m-shaped block (issue 16)',
      '',
      `One FFN block, d=${HIDDEN}, FFN ${FFN}, ${tokens} calibration tokens (${NSAMPLES} × ${SEQLEN}), 4 epochs, ${SPARSITY * 100} % unstructured, default options; synthetic LayerNorm-like activations with outlier channels, random weights (bench/sparsellm-solve.ts). Each solve in its own process; peak RSS = the process's maxRSS after the call minus its RSS just before. Both load the addon through src/native/addon.ts, so both run with OPENBLAS_THREAD_TIMEOUT=${result.openblasThreadTimeout}. ${result.cores} cores (${result.cpu}), ${result.threads} BLAS threads, load average ${load0.join(' ')} at the start and ${result.loadAverageAtEnd.join(' ')} at the end (compare the two rows of one run; absolute times move with the machine's load and BLAS kernels). Latest \`npm run bench -- --sparsellm-solve${before ? ' --before-addon …' : ''}\`: ${result.date.slice(0, 10)}.`,
      '',
      '| solver | solve, wall (s) | solve, CPU (s) | solver peak RSS (MB) | output error per epoch | epoch kept |',
      '|---|---:|---:|---:|---|---:|',
      ...runs.map(({ which, r }) => `| ${which === 'before' ? 'before (f×f p update, full N×f copies)' : 'after (Woodbury, token blocks, float-partial Gram, output error from the Gram, no p/z updates in the last epoch)'} | ${r.seconds.toFixed(1)} | ${r.cpuSeconds.toFixed(1)} | ${r.solverPeakMb.toFixed(0)} | ${r.epochs.map((e) => e.outputError.toFixed(5)).join(' ')} | ${r.chosenEpoch} |`),
      '',
      ...(cmp && old[0] ? [`Speed-up ${(old[0].seconds / after[0]!.seconds).toFixed(2)}× in wall time, ${(old[0].cpuSeconds / after[0]!.cpuSeconds).toFixed(2)}× in CPU time, solver memory ${(old[0].solverPeakMb / after[0]!.solverPeakMb).toFixed(2)}× lower. Returned weights (fc1 and fc2) after vs before: relative difference ${cmp.relDiff.toExponential(2)}, ${cmp.maskDiff} of ${(2 * HIDDEN * FFN).toLocaleString('en')} mask entries differ.`] : []),
      '',
      `**The solve against its BLAS floor.** The floating-point work of the solve above, counted step by step from native/src/solvers/sparsellm.cc (\`solveFloor\` in bench/sparsellm-solve.ts; double-precision steps count twice), at the SGEMM rate measured in this run on the solve's token-block shape (${chunkRows} × ${HIDDEN} times ${HIDDEN} × ${FFN}: ${gflops.toFixed(0)} GFLOP/s, OpenBLAS kernels ${result.blasCore}), beside each group's measured wall time (SPARSELLM_PROFILE):`,
      '',
      '| steps | GFLOP | floor (s) | measured (s) | measured / floor |',
      '|---|---:|---:|---:|---:|',
      ...floor.map((g) => `| ${g.group} | ${g.gflop.toFixed(0)} | ${g.floorSeconds.toFixed(2)} | ${g.measuredSeconds.toFixed(2)} | ${(g.measuredSeconds / g.floorSeconds).toFixed(2)} |`),
      `| **solve** | **${floor.reduce((s, g) => s + g.gflop, 0).toFixed(0)}** | **${floorTotal.toFixed(2)}** | **${profiled.toFixed(2)}** | **${(profiled / floorTotal).toFixed(2)}** |`,
      '',
      target ? `The solve runs at ${(profiled / floorTotal).toFixed(2)}× the time its own arithmetic needs at this machine's SGEMM rate. Issue 16's target, SparseLLM at most 0.15× the PyTorch time on the whole d=768 model, leaves ${target.perBlock.toFixed(1)} s of solve per block there (bench/torch-reference/results.json, ${target.date}: 0.15 × ${target.torch.toFixed(1)} s, less sparsellm's ${target.other.toFixed(1)} s outside the solve, over ${target.blocks} blocks): ${(floorTotal / target.perBlock).toFixed(1)}× less than this floor. No tuning reaches that; it takes less arithmetic per epoch (fewer epochs, fewer tokens, lower precision), and each of those changes the results the README tables report.` : `The solve runs at ${(profiled / floorTotal).toFixed(2)}× the time its own arithmetic needs at this machine's SGEMM rate.`,
      SOLVE_END,
    ];
    const section = lines.join('\n');
    writeResultsSection(SOLVE_BEGIN, SOLVE_END, section);
    console.log(section.split('\n').slice(2, -1).join('\n'));
    console.log('wrote bench/sparsellm-solve.json and the sparsellm-solve section of bench/RESULTS.md');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  const a = JSON.parse(process.argv[3]!) as { addonPath: string | null; tokens: number; weightsFile: string };
  await child(a.addonPath, a.tokens, a.weightsFile);
} else {
  await main();
}
