import { native } from './addon.js';

/**
 * Streaming Hessian of a linear layer's input, as SparseGPT accumulates it:
 * H = (2 / nsamples) · Σ_j X_jᵀ X_j over calibration sequences j (running average, fp32).
 */
export class HessianAccumulator {
  readonly H: Float32Array;
  nsamples = 0;

  constructor(readonly columns: number) {
    this.H = new Float32Array(columns * columns);
  }

  /** Adds `sequences` sequences whose rows (tokens) are stacked in X ([rows, columns], row-major). */
  async add(X: Float32Array, rows: number, sequences = 1): Promise<void> {
    if (X.length !== rows * this.columns) throw new RangeError(`X has ${X.length} values, expected ${rows}×${this.columns}`);
    const nOld = this.nsamples;
    this.nsamples += sequences;
    await native().hessianAccumulate(this.H, X, rows, this.columns, nOld, this.nsamples);
  }
}
