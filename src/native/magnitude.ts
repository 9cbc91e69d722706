import { native } from './addon.js';
import { checkDim, checkLength, checkSparsity, sparsityFields, type SparsitySpec } from './sparsity.js';

export interface MagnitudeResult {
  /** entries that are zero after the call */
  pruned: number;
  seconds: number;
}

/**
 * Magnitude pruning of W [rows = out, cols = in] (row-major Float32Array, modified in place).
 * Unstructured: one threshold per matrix, `thresh = sort(|W|)[int(numel·s)]`, prune `|W| <= thresh`
 * (int(numel·s)+1 entries plus ties, as the reference; s = 0 prunes nothing).
 * N:M: in each group of M consecutive inputs of a row prune the N smallest |W| (ties → lower index).
 */
export async function magnitudePrune(W: Float32Array, rows: number, cols: number, spec: SparsitySpec): Promise<MagnitudeResult> {
  checkDim('rows', rows);
  checkDim('cols', cols);
  checkLength('W', W, rows * cols, `${rows}×${cols}`);
  checkSparsity(spec, cols);
  return native().magnitudePrune(W, rows, cols, sparsityFields(spec));
}
