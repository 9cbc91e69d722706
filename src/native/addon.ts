// The one loader of the compiled C++ addon (native/build, or native/build-cuda for the GPU) and its thread policy.
// Every heavy call of the addon runs on the libuv pool and returns a Promise; typed arrays are used in place.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeAddon {
  setThreads(n: number): void;
  getThreads(): number;
  /** The kernel set libopenblas runs ("Haswell", "SkylakeX", ...; $OPENBLAS_CORETYPE forces one). */
  blasCore(): string;
  /** Frees the solvers' workspace cache and gives the C heap's free pages back to the system (glibc malloc_trim). */
  releaseMemory(): boolean;
  sgemm(A: Float32Array, B: Float32Array, C: Float32Array, m: number, k: number, n: number): Promise<number>;
  hessianAccumulate(H: Float32Array, X: Float32Array, rows: number, cols: number, nOld: number, nNew: number): Promise<void>;
  // solvers (see src/native/{magnitude,wanda,sparsegpt,sparsellm}.ts for the typed wrappers)
  magnitudePrune(W: Float32Array, rows: number, cols: number, spec: object): Promise<{ pruned: number; seconds: number }>;
  wandaPrune(W: Float32Array, rows: number, cols: number, scaler: Float32Array, spec: object): Promise<{ pruned: number; seconds: number }>;
  wandaScalerAccumulate(scaler: Float32Array, X: Float32Array, rows: number, cols: number, nOld: number, nNew: number): Promise<void>;
  sparsegptPrune(W: Float32Array, rows: number, cols: number, H: Float32Array, options: object): Promise<unknown>;
  sparsellmOpt(
    X: Float32Array, W1: Float32Array, b1: Float32Array, W2: Float32Array, b2: Float32Array, H1: Float32Array,
    H2: Float32Array | null, N: number, d: number, ffn: number, nsamples: number, options: object,
  ): Promise<unknown>;
  sparsellmLlama(
    X: Float32Array, Wg: Float32Array, Wu: Float32Array, Wd: Float32Array, Hx: Float32Array, Hd: Float32Array | null,
    N: number, d: number, ffn: number, nsamples: number, options: object,
  ): Promise<unknown>;
  sparsellmTokenBlockRows(tokens: number, ffn: number, requested: number): number;
  sparsellmStep(name: string, arrays: Record<string, Float32Array | Float64Array>, sizes: Record<string, number>, params: object): Promise<void>;
  crossEntropyRows(logits: Float32Array, rows: number, vocab: number, targets: Int32Array, nll: Float64Array): Promise<void>;
  logSoftmaxRows(logits: Float32Array, rows: number, vocab: number): Promise<void>;
  klRows(refLogProbs: Float32Array, logits: Float32Array, rows: number, vocab: number, kl: Float64Array): Promise<void>;
  [name: string]: unknown;
}

const here = dirname(fileURLToPath(import.meta.url));

/** The two builds of the addon: native/build (CPU, `npm install`) and native/build-cuda (`npm run build:native:cuda`). */
export type AddonBuild = 'build' | 'build-cuda';

/** native/<build>/Release/sparsellm_native.node, from src/native or dist/native; undefined when not built. */
export function addonPath(build: AddonBuild): string | undefined {
  for (const root of [join(here, '..', '..'), join(here, '..', '..', '..')]) {
    const p = join(root, 'native', build, 'Release', 'sparsellm_native.node');
    if (existsSync(p)) return p;
  }
  return undefined;
}

/**
 * How long an idle OpenBLAS worker thread spins (sched_yield) before it sleeps, as log2 of CPU cycles; libopenblas
 * reads $OPENBLAS_THREAD_TIMEOUT once, when it is loaded with the addon. Its default, 2^28 cycles (~70 ms), keeps the
 * worker spinning through every gap between two solver BLAS calls (the elementwise steps in between last
 * milliseconds): a core burnt for nothing on a machine whose 2 cores are shared. 2^18 cycles (~65 µs) still bridges
 * back-to-back calls. A value set by the user wins.
 */
export const OPENBLAS_IDLE_SPIN_LOG2_CYCLES = '18';

/** Loads a compiled addon (node caches each file's module). */
export function loadAddon<T extends NativeAddon>(path: string): T {
  process.env.OPENBLAS_THREAD_TIMEOUT ??= OPENBLAS_IDLE_SPIN_LOG2_CYCLES;
  return createRequire(import.meta.url)(path) as T;
}

let cached: NativeAddon | undefined;

/** The CPU addon (native/build). */
export function native(): NativeAddon {
  if (!cached) {
    const p = addonPath('build');
    if (!p) throw new Error('the native addon is not built: run `npm install` (or `npm run build:native`) in the sparsellm folder');
    cached = loadAddon(p);
    cached.setThreads(solverThreads());
  }
  return cached;
}

/**
 * OpenBLAS threads of the solvers: $SPARSELLM_THREADS, else every core. onnxruntime's threads are set apart
 * (sessionOptions in src/model/block-runner.ts, $SPARSELLM_THREADS or 2); the pipeline never runs a solver and a
 * forward pass at the same time, so each may take the cores it wants.
 */
export function solverThreads(): number {
  const fromEnv = Number(process.env.SPARSELLM_THREADS ?? '');
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return Math.max(1, (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 2);
}
