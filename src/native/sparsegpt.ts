// SparseGPT (PAPERS.md §2, ALGORITHMS.md §2.3) on the CPU or, through the CUDA build of the addon, on the GPU:
// one options type and one result type for both.
import { native } from './addon.js';
import { requireCuda } from './device.js';
import { checkDim, checkLength, checkSparsity, sparsityFields, type SparsitySpec } from './sparsity.js';

/** Fully specified (defaults: SPARSEGPT_DEFAULTS / sparseGptOptions() in src/pipeline/options.ts). */
export type SparseGptOptions = SparsitySpec & {
  /** damping = percdamp · mean(diag H) */
  percdamp: number;
  /** columns per lazy-update block (a multiple of prunem) */
  blocksize: number;
  /** reference quirk (ALGORITHMS.md §1.4): write dead-input fix + damping into the caller's H, so repeated calls accumulate; false: H is read-only */
  accumulateDamping: boolean;
  /** factor H in float64 instead of float32 (slower, more robust; CPU only, the GPU path picks its own) */
  doublePrecision: boolean;
};

export interface SparseGptResult {
  /** OBS loss Σ (w − q)² / [H⁻¹]_qq / 2, as SparseGPT prints it */
  loss: number;
  /** absolute damping finally added to diag(H) */
  damping: number;
  /** Cholesky failures recovered by multiplying the damping by 10 */
  retries: number;
  /** entries that are zero after the call */
  pruned: number;
  seconds: number;
  /** GPU only: where H⁻¹'s Cholesky factor was computed, 'cusolver' (GPU, fp32) or 'cpu-lapack' (CPU, fp64, uploaded) */
  cholesky?: 'cusolver' | 'cpu-lapack';
  /** GPU only: the lazy block update, 'cublas' (SGEMM) or 'kernel' (built-in tiled kernel) */
  gemm?: 'cublas' | 'kernel';
}

/** The options object the bindings read: every field present. */
export function sparseGptBindingOptions(o: SparseGptOptions): Record<string, number | boolean> {
  return { ...sparsityFields(o), percdamp: o.percdamp, blocksize: o.blocksize, accumulateDamping: o.accumulateDamping, doublePrecision: o.doublePrecision };
}

/**
 * SparseGPT `fasterprune` on W [rows = out, cols = in] (row-major, in place), with the layer-input Hessian
 * H [cols, cols] in SparseGPT scaling (2/nsamples) Σ x xᵀ (e.g. HessianAccumulator.H). `device` 'cuda' runs it on the
 * GPU (the CUDA build, docs/CUDA.md); H is left as it was unless accumulateDamping.
 */
export async function sparsegptPrune(
  W: Float32Array, rows: number, cols: number, H: Float32Array, options: SparseGptOptions, device: 'cpu' | 'cuda' = 'cpu',
): Promise<SparseGptResult> {
  checkDim('rows', rows);
  checkDim('cols', cols);
  checkLength('W', W, rows * cols, `${rows}×${cols}`);
  checkLength('H', H, cols * cols, `${cols}×${cols}`);
  checkSparsity(options, cols);
  const bindingOptions = sparseGptBindingOptions(options);
  if (device === 'cuda') return requireCuda().cudaSparseGptPrune(W, rows, cols, H, bindingOptions);
  return (await native().sparsegptPrune(W, rows, cols, H, bindingOptions)) as SparseGptResult;
}
