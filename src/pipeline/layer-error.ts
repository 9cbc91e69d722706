// The per-layer error column of the prune report: the relative squared output error of a pruned linear over the
// calibration inputs, e = ‖(W − Ŵ)X‖² / ‖WX‖² = tr(D H Dᵀ) / tr(W H Wᵀ), D = W − Ŵ, H = (2/n) Σ XᵀX (n sequences).
// Computed from what the run already has, without a full W·H product per linear (issue 16):
// - denominator: the dense pass with hooks sums ‖W x‖² over the calibration tokens inside onnxruntime (a
//   ReduceSumSquare on each MatMul's output, BlockResult.outputSquares), so tr(W H Wᵀ) = (2/n) Σ_t ‖W x_t‖².
// - numerator, SparseGPT: its OBS loss. With H̃ = H + λI (dead inputs: H̃_jj = 1 + λ) and U the upper Cholesky factor
//   of H̃⁻¹ (H̃⁻¹ = UᵀU), the sweep's total change of a row is d = Σ_j err_j U[j, :], so d H̃ dᵀ = Σ_j err_j², summed
//   over rows 2 · loss. Dead columns stay untouched by the sweep (U has no off-diagonal entries there) and have H = 0,
//   so tr(D H Dᵀ) = 2 · loss − λ · ‖D_live‖²_F  (exact up to the solver's float32 rounding).
// - numerator, SparseLLM's FFN matrices: one [out, in] × [in, in] SGEMM (a few % of that solver's time).
import { native } from '../native/addon.js';

/** What SparseGPT returned for this layer: its OBS loss Σ err² / 2 and the damping λ it finally added to diag(H). */
export interface ObsLoss {
  loss: number;
  damping: number;
}

/** tr(A H Aᵀ) = Σ_r a_r H a_rᵀ for A [out, inF] (one SGEMM). */
export async function quadraticTrace(A: Float32Array, H: Float32Array, out: number, inF: number): Promise<number> {
  const AH = new Float32Array(A.length);
  await native().sgemm(A, H, AH, out, inF, inF);
  let s = 0;
  for (let k = 0; k < A.length; k++) s += AH[k]! * A[k]!;
  return s;
}

/** tr(D H Dᵀ) from SparseGPT's OBS loss: 2·loss − λ‖D_live‖², live = inputs with H_jj ≠ 0. */
export function obsNumerator(W: Float32Array, Wp: Float32Array, H: Float32Array, out: number, inF: number, obs: ObsLoss): number {
  const live = new Float32Array(inF);
  for (let j = 0; j < inF; j++) live[j] = H[j * inF + j] === 0 ? 0 : 1;
  let dd = 0;
  for (let r = 0, k = 0; r < out; r++) {
    for (let j = 0; j < inF; j++, k++) {
      const d = W[k]! - Wp[k]!;
      dd += live[j]! * d * d;
    }
  }
  return 2 * obs.loss - obs.damping * dd;
}

/**
 * Relative squared output error of one pruned linear: W dense and Wp pruned ([out, inF] row-major), H its input
 * Hessian [inF, inF], denominator = tr(W H Wᵀ) (from the dense pass; NaN: computed here), obs = SparseGPT's loss and damping when it
 * pruned this layer (else the numerator costs one SGEMM).
 */
export async function layerOutputError(
  W: Float32Array, Wp: Float32Array, H: Float32Array, out: number, inF: number, denominator: number, obs?: ObsLoss,
): Promise<number> {
  // NaN: a caller whose pass did not sum ‖W x‖² (one SGEMM then)
  const den = Number.isNaN(denominator) ? await quadraticTrace(W, H, out, inF) : denominator;
  if (!(den > 0)) return 0;
  let num: number;
  if (obs) num = obsNumerator(W, Wp, H, out, inF, obs);
  else {
    const D = new Float32Array(W.length);
    for (let k = 0; k < W.length; k++) D[k] = W[k]! - Wp[k]!;
    num = await quadraticTrace(D, H, out, inF);
  }
  return Math.max(0, num) / den;
}
