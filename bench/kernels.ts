/**
 * Kernel rates measured in one process, so they can be read side by side:
 * - SGEMM (OpenBLAS through the addon) on the FFN forward product [T, d]·[d, 4d];
 * - the Hessian accumulation (SSYRK, the statistics phase of SparseGPT/SparseLLM), counted as T·n·(n+1) flops;
 * - an onnxruntime forward of one OPT block (BlockRunner, the calibration / re-run phases), counting its MatMul flops:
 *   2·T·(4d² + 2·d·f) for the linears plus 4·b·s²·d for QKᵀ and PV (full s×s: the causal mask saves nothing);
 * - the solvers of bench/solvers.ts (benchSolvers), which report their own SGEMM reference.
 */
import { native } from '../src/native/addon.js';
import { HessianAccumulator } from '../src/native/hessian.js';
import { BlockRunner } from '../src/model/block-runner.js';
import { benchSolvers, type SolverBenchResult } from './solvers.js';
import { generateOptModel } from './opt-model.js';

export interface RateRow {
  kernel: string;
  shape: string;
  seconds: number;
  gflop: number;
  gflops: number;
}

export interface KernelResults {
  blasThreads: number;
  ortThreads: number;
  rows: RateRow[];
  solvers: SolverBenchResult;
}

function rand(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    out[i] = a / 2 ** 31 - 1;
  }
  return out;
}

async function bestOf(reps: number, fn: () => Promise<number>): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < reps; i++) best = Math.min(best, await fn());
  return best;
}

export async function benchKernels(o: { modelsDir: string; hidden: number; tokens: number; ortShapes: [number, number][]; sparsellm: boolean; reps?: number }): Promise<KernelResults> {
  const reps = o.reps ?? 3;
  const rows: RateRow[] = [];
  const add = (kernel: string, shape: string, seconds: number, flop: number) => rows.push({ kernel, shape, seconds, gflop: flop / 1e9, gflops: flop / seconds / 1e9 });
  const d = o.hidden, f = 4 * d, T = o.tokens;

  // SGEMM on the FFN forward product and the square attention projection.
  for (const [m, k, n] of [[T, d, f], [T, d, d]] as const) {
    const A = rand(m * k, 1), B = rand(k * n, 2), C = new Float32Array(m * n);
    const s = await bestOf(reps + 1, () => native().sgemm(A, B, C, m, k, n));
    add('SGEMM (OpenBLAS)', `[${m}×${k}]·[${k}×${n}]`, s, 2 * m * k * n);
  }
  // Hessian accumulation (SSYRK) for the two input widths of an OPT block.
  for (const n of [d, f]) {
    const X = rand(T * n, 3);
    // a warm accumulator: the first add() on a fresh one mostly measures page faults of the new n×n buffer
    const acc = new HessianAccumulator(n);
    await acc.add(X, T, 1);
    const s = await bestOf(reps, async () => {
      const t = performance.now();
      await acc.add(X, T, 1);
      return (performance.now() - t) / 1000;
    });
    add('Hessian XᵀX (SSYRK)', `T=${T}, n=${n}`, s, T * n * (n + 1));
  }
  // onnxruntime forward of one block of a generated OPT model.
  const model = generateOptModel(o.modelsDir, { hidden: d, layers: 1, maxPositions: 2048 });
  const runner = await BlockRunner.open(`${model.dir}/onnx/model.onnx`);
  try {
    for (const [b, s] of o.ortShapes) {
      const ids = new BigInt64Array(b * s);
      for (let i = 0; i < ids.length; i++) ids[i] = BigInt(3 + ((i * 7919) % 500));
      const state = await runner.prologue(ids, b, s);
      await runner.runBlock(0, state); // session creation + warm-up
      const sec = await bestOf(reps, async () => {
        const t = performance.now();
        await runner.runBlock(0, state);
        return (performance.now() - t) / 1000;
      });
      const tok = b * s;
      add('onnxruntime block forward', `OPT d=${d}, ${b}×${s} tokens`, sec, 2 * tok * (4 * d * d + 2 * d * f) + 4 * b * s * s * d);
      const secCap = await bestOf(reps, async () => {
        const t = performance.now();
        await runner.runBlock(0, state, { capture: true });
        return (performance.now() - t) / 1000;
      });
      add('onnxruntime block forward + capture', `OPT d=${d}, ${b}×${s} tokens`, secCap, 2 * tok * (4 * d * d + 2 * d * f) + 4 * b * s * s * d);
    }
  } finally {
    await runner.dispose();
  }
  const solvers = await benchSolvers({ tokens: T, sparsellm: o.sparsellm });
  const ortThreads = Number(process.env.SPARSELLM_THREADS) || 2;
  return { blasThreads: native().getThreads(), ortThreads, rows, solvers };
}
