import { native } from './addon.js';
import { checkDim, checkLength, checkSparsity, type SparsitySpec } from './sparsity.js';

export type SparseGptOptions = SparsitySpec & {
  /** damping = percdamp · mean(diag H), default 0.01 */
  percdamp?: number;
  /** columns per lazy-update block, default 128 (must be a multiple of prunem) */
  blocksize?: number;
  /** reference quirk (ALGORITHMS.md §1.4): write dead-input fix + damping into the caller's H, so repeated calls accumulate. Default false: H is read-only. */
  accumulateDamping?: boolean;
  /** factor H in float64 instead of float32 (slower, more robust). Default false. */
  doublePrecision?: boolean;
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
}

/**
 * SparseGPT `fasterprune` on W [rows = out, cols = in] (row-major, in place), with the layer-input Hessian
 * H [cols, cols] in SparseGPT scaling (2/nsamples) Σ x xᵀ (e.g. HessianAccumulator.H).
 */
export async function sparsegptPrune(
  W: Float32Array, rows: number, cols: number, H: Float32Array, options: SparseGptOptions,
): Promise<SparseGptResult> {
  checkDim('rows', rows);
  checkDim('cols', cols);
  checkLength('W', W, rows * cols, `${rows}×${cols}`);
  checkLength('H', H, cols * cols, `${cols}×${cols}`);
  checkSparsity(options, cols);
  return (await native().sparsegptPrune(W, rows, cols, H, options)) as SparseGptResult;
}
