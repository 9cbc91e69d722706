/**
 * Micro-benchmark of the pruning solvers on OPT-125m-sized layers, beside the SGEMM rate measured in the same run.
 *   node --import tsx bench/solvers.ts         (prints a table, then the JSON)
 *   node --import tsx bench/solvers.ts --no-sparsellm   (skips the SparseLLM FFN row)
 *   import { benchSolvers } from './solvers.js' (returns the figures; for `npm run bench`)
 * The Hessian row times one add() of N tokens into an accumulator that already holds a batch (as in the
 * pipeline, which accumulates many batches into one H): a fresh H would also time the first-touch page faults
 * of the new Float32Array (~5 ms/MB on this project's VMs), not the SSYRK.
 * GFLOP/s counts the dense-algebra work of each algorithm (formulas next to each entry), so it is comparable with SGEMM.
 */
import { pathToFileURL } from 'node:url';
import { native } from '../src/native/addon.js';
import { magnitudePrune } from '../src/native/magnitude.js';
import { WandaScaler, wandaPrune } from '../src/native/wanda.js';
import { sparsegptPrune } from '../src/native/sparsegpt.js';
import { sparsellmOpt } from '../src/native/sparsellm.js';
import { HessianAccumulator } from '../src/native/hessian.js';
import { optFamily } from '../src/model/families/opt.js';
import { SPARSEGPT_DEFAULTS, sparseGptOptions, sparseLlmOptions } from '../src/pipeline/options.js';

export interface SolverBenchRow {
  solver: string;
  layer: string;
  seconds: number;
  gflop: number;
  gflops: number;
  /** SGEMM GFLOP/s measured in this run on the layer's forward product [rows, cols]·[cols, N] */
  sgemmGflops: number;
  ratio: number;
}

export interface SolverBenchResult {
  threads: number;
  tokens: number;
  rows: SolverBenchRow[];
}

function rand(n: number, seed: number, scale = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

async function sgemmRate(m: number, k: number, n: number): Promise<number> {
  const A = rand(m * k, 1), B = rand(k * n, 2), C = new Float32Array(m * n);
  let best = Infinity;
  for (let i = 0; i < 4; i++) best = Math.min(best, await native().sgemm(A, B, C, m, k, n));
  return (2 * m * k * n) / best / 1e9;
}

async function best<T extends { seconds: number }>(reps: number, fn: () => Promise<T>): Promise<T> {
  let b: T | undefined;
  for (let i = 0; i < reps; i++) {
    const r = await fn();
    if (!b || r.seconds < b.seconds) b = r;
  }
  return b!;
}

export async function benchSolvers(opts: { tokens?: number; sparsity?: number; sparsellm?: boolean } = {}): Promise<SolverBenchResult> {
  const N = opts.tokens ?? 2048, s = opts.sparsity ?? 0.5;
  const rows: SolverBenchRow[] = [];
  const add = (solver: string, layer: string, seconds: number, gflop: number, sgemm: number) =>
    rows.push({ solver, layer, seconds, gflop, gflops: gflop / seconds, sgemmGflops: sgemm, ratio: gflop / seconds / sgemm });
  for (const [out, inp, name] of [[768, 768, 'q/k/v/out 768×768'], [3072, 768, 'fc1 3072×768'], [768, 3072, 'fc2 768×3072']] as const) {
    const X = rand(N * inp, 3);
    const acc = new HessianAccumulator(inp);
    await acc.add(X, N, N / 2048);
    {
      // SSYRK (n² N flops, the upper triangle) + mirror, on an accumulator that is already in use
      const h = new HessianAccumulator(inp);
      await h.add(X, N, N / 2048);
      const t = await best(3, async () => {
        const t0 = performance.now();
        await h.add(X, N, N / 2048);
        return { seconds: (performance.now() - t0) / 1000 };
      });
      add('hessian XᵀX', `n=${inp}, N=${N}`, t.seconds, (inp * inp * N) / 1e9, await sgemmRate(inp, N, inp));
    }
    const sc = new WandaScaler(inp);
    await sc.add(X, N, N / 2048);
    const W0 = rand(out * inp, 4, 0.05);
    const sg = await sgemmRate(out, inp, N);
    const mag = await best(3, () => magnitudePrune(W0.slice(), out, inp, { sparsity: s }));
    add('magnitude', name, mag.seconds, 0, sg);
    const wan = await best(3, () => wandaPrune(W0.slice(), out, inp, sc.scaler, { sparsity: s }));
    add('wanda', name, wan.seconds, 0, sg);
    // SparseGPT flops: Hinv (potrf + trtri: 2/3 n³) + lazy updates (≈ rows·n²) + in-block updates (rows·n·B)
    const n = inp, B = SPARSEGPT_DEFAULTS.blocksize;
    const flop = (2 / 3) * n ** 3 + out * n * n + out * n * B;
    const r = await best(3, () => sparsegptPrune(W0.slice(), out, inp, acc.H, sparseGptOptions({ sparsity: s })));
    add('sparsegpt', name, r.seconds, flop / 1e9, sg);
    const r24 = await best(3, () => sparsegptPrune(W0.slice(), out, inp, acc.H, sparseGptOptions({ prunen: 2, prunem: 4 })));
    add('sparsegpt 2:4', name, r24.seconds, flop / 1e9, sg);
  }
  if (opts.sparsellm !== false) {
    const d = 768, f = 3072, epochs = 4;
    const X = rand(N * d, 5);
    const acc = new HessianAccumulator(d);
    await acc.add(X, N, N / 2048);
    const W1 = rand(f * d, 6, 0.05), b1 = rand(f, 7, 0.05), W2 = rand(d * f, 8, 0.02), b2 = rand(d, 9, 0.02);
    const r = await sparsellmOpt({ tokens: N, hidden: d, ffn: f, X, W1, b1, W2, b2, H1: acc.H, nsamples: N / 2048 }, sparseLlmOptions(optFamily, { sparsity: s, epochs }));
    // per epoch: pᵀp SYRK (N f²), fc1 LS (2 N d f), fc2 GD 10×(2 d f²) + YᵀP (2 N d f), two SparseGPT calls,
    // p update: W2ᵀW2 (d f²) + inverse (f³) + RHS (2 N d f) + R·A⁻¹ (2 N f²), z: 2 N d f, objective + output: 4 N d f
    const sgFlop = (nn: number, rr: number) => (2 / 3) * nn ** 3 + rr * nn * nn + rr * nn * SPARSEGPT_DEFAULTS.blocksize;
    const perEpoch = N * f * f + 2 * N * d * f + 20 * d * f * f + 2 * N * d * f + sgFlop(d, f) + sgFlop(f, d) +
      d * f * f + f ** 3 + 2 * N * d * f + 2 * N * f * f + 2 * N * d * f + 4 * N * d * f;
    const flop = 3 * 2 * N * d * f + epochs * perEpoch;
    add(`sparsellm OPT (${epochs} ep)`, `FFN 768→3072→768`, r.seconds, flop / 1e9, await sgemmRate(f, d, N));
  }
  return { threads: native().getThreads(), tokens: N, rows };
}

function printTable(r: SolverBenchResult): void {
  console.log(`solvers on OPT-125m layers, N = ${r.tokens} tokens, ${r.threads} BLAS threads`);
  console.log('solver                   layer                  time [ms]   GFLOP/s   SGEMM GFLOP/s   ratio');
  for (const x of r.rows)
    console.log(
      `${x.solver.padEnd(24)} ${x.layer.padEnd(22)} ${(x.seconds * 1e3).toFixed(1).padStart(9)} ${x.gflop ? x.gflops.toFixed(1).padStart(9) : '        -'} ${x.sgemmGflops.toFixed(1).padStart(15)} ${x.gflop ? (x.ratio * 100).toFixed(0).padStart(6) + '%' : '      -'}`,
    );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchSolvers({ sparsellm: !process.argv.includes('--no-sparsellm') });
  printTable(r);
  console.log(JSON.stringify(r));
}
