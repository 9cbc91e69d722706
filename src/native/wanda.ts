import { native } from './addon.js';
import { checkDim, checkLength, checkSparsity, sparsityFields, type SparsitySpec } from './sparsity.js';

export interface WandaResult {
  pruned: number;
  seconds: number;
}

/**
 * Streaming Wanda input statistic: scaler_j = Σ_tokens x_j² / nsequences (Wanda's `scaler_row`).
 * Relation to the SparseGPT Hessian H = (2/nseq) Σ x xᵀ: scaler_j = H_jj / 2, see {@link wandaScalerFromHessian}.
 * (Only the ratio between columns matters: any positive constant factor gives the same mask.)
 */
export class WandaScaler {
  readonly scaler: Float32Array;
  nsamples = 0;
  constructor(readonly columns: number) {
    checkDim('columns', columns);
    this.scaler = new Float32Array(columns);
  }
  /** Adds `sequences` sequences whose tokens are the rows of X [rows, columns]. */
  async add(X: Float32Array, rows: number, sequences = 1): Promise<void> {
    checkLength('X', X, rows * this.columns, `${rows}×${this.columns}`);
    const nOld = this.nsamples;
    this.nsamples += sequences;
    await native().wandaScalerAccumulate(this.scaler, X, rows, this.columns, nOld, this.nsamples);
  }
}

/** scaler_j = H_jj / 2 from a SparseGPT-scaled Hessian H [cols, cols]. */
export function wandaScalerFromHessian(H: Float32Array, cols: number): Float32Array {
  checkLength('H', H, cols * cols, `${cols}×${cols}`);
  const s = new Float32Array(cols);
  for (let j = 0; j < cols; j++) s[j] = H[j * cols + j]! / 2;
  return s;
}

/**
 * Wanda: score |W_ij|·sqrt(scaler_j) on W [rows = out, cols = in] (in place).
 * Unstructured: each output row loses exactly int(cols·s) entries, smallest scores first (stable: ties → lower index).
 * N:M: per row, the N smallest scores of each group of M inputs.
 */
export async function wandaPrune(
  W: Float32Array, rows: number, cols: number, scaler: Float32Array, spec: SparsitySpec,
): Promise<WandaResult> {
  checkDim('rows', rows);
  checkDim('cols', cols);
  checkLength('W', W, rows * cols, `${rows}×${cols}`);
  checkLength('scaler', scaler, cols, `${cols}`);
  checkSparsity(spec, cols);
  return native().wandaPrune(W, rows, cols, scaler, sparsityFields(spec));
}
