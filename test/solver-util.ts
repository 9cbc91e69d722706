// Independent float64 reference math for the solver tests (naive, small sizes only).
import { gaussian, mulberry32 } from './helpers.js';
import type { SparsitySpec } from '../src/native/sparsity.js';

/** X [N, d] with correlated features: X = G · Lmix, plus a per-feature scale (outlier features). */
export function correlatedX(N: number, d: number, seed: number, corr = 0.7): Float32Array {
  const g = gaussian(mulberry32(seed));
  const mix = new Float64Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) mix[i * d + j] = (i === j ? 1 : 0) + corr * g() / Math.sqrt(d);
  const scale = Float64Array.from({ length: d }, (_, j) => (j % 7 === 0 ? 4 : 1) * (0.5 + Math.abs(g())));
  const X = new Float32Array(N * d);
  const row = new Float64Array(d);
  for (let t = 0; t < N; t++) {
    for (let i = 0; i < d; i++) row[i] = g();
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += row[i]! * mix[i * d + j]!;
      X[t * d + j] = s * scale[j]!;
    }
  }
  return X;
}

export function randn(n: number, seed: number, scale = 1): Float32Array {
  const g = gaussian(mulberry32(seed));
  return Float32Array.from({ length: n }, () => g() * scale);
}

/** H = (2/nseq) XᵀX, float32 result. */
export function hessian(X: Float32Array, N: number, d: number, nseq: number): Float32Array {
  const H = new Float64Array(d * d);
  for (let t = 0; t < N; t++)
    for (let i = 0; i < d; i++) {
      const xi = X[t * d + i]!;
      if (xi === 0) continue;
      for (let j = 0; j < d; j++) H[i * d + j] += xi * X[t * d + j]!;
    }
  return Float32Array.from(H, (v) => (2 * v) / nseq);
}

/** Lower Cholesky (float64), throws if not SPD. */
export function cholesky(A: Float64Array, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let s = A[j * n + j]!;
    for (let k = 0; k < j; k++) s -= L[j * n + k]! ** 2;
    if (!(s > 0)) throw new Error('not SPD');
    const ljj = Math.sqrt(s);
    L[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let t = A[i * n + j]!;
      for (let k = 0; k < j; k++) t -= L[i * n + k]! * L[j * n + k]!;
      L[i * n + j] = t / ljj;
    }
  }
  return L;
}

/** A⁻¹ for SPD A via Gauss-Jordan (float64). */
export function inverse(A: Float64Array, n: number): Float64Array {
  const M = Float64Array.from(A), I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r * n + c]!) > Math.abs(M[p * n + c]!)) p = r;
    for (let k = 0; k < n; k++) {
      [M[c * n + k], M[p * n + k]] = [M[p * n + k]!, M[c * n + k]!];
      [I[c * n + k], I[p * n + k]] = [I[p * n + k]!, I[c * n + k]!];
    }
    const piv = M[c * n + c]!;
    for (let k = 0; k < n; k++) (M[c * n + k] = M[c * n + k]! / piv), (I[c * n + k] = I[c * n + k]! / piv);
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = M[r * n + c]!;
      if (f === 0) continue;
      for (let k = 0; k < n; k++) (M[r * n + k] -= f * M[c * n + k]!), (I[r * n + k] -= f * I[c * n + k]!);
    }
  }
  return I;
}

/**
 * Hinv for SparseGPT in float64: upper triangular U with A⁻¹ = UᵀU, in O(n³/3 + n³/3) so that it runs at n > 1024
 * (Cholesky of the inverse through Gauss-Jordan is ~4× the work). With J the reversal permutation and
 * JAJ = LLᵀ (LLᵀ from `cholesky`), A⁻¹ = J L⁻ᵀ L⁻¹ J, so U = J L⁻¹ J: U[i][j] = L⁻¹[n−1−i][n−1−j]. The tests check it
 * against cholesky(inverse(A)) on a small matrix.
 */
export function upperCholeskyOfInverse(A: Float64Array, n: number): Float64Array {
  const B = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) B[i * n + j] = A[(n - 1 - i) * n + (n - 1 - j)]!;
  const L = cholesky(B, n);
  // Linv by forward substitution, row by row: Linv[i][c] = (δ_ic − Σ_{c<=k<i} L[i][k] Linv[k][c]) / L[i][i]
  const Linv = new Float64Array(n * n);
  const acc = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    acc.fill(0, 0, i + 1);
    acc[i] = 1;
    for (let k = 0; k < i; k++) {
      const lik = L[i * n + k]!;
      if (lik === 0) continue;
      const row = k * n; // Linv[k][0..k]
      for (let c = 0; c <= k; c++) acc[c] -= lik * Linv[row + c]!;
    }
    const lii = L[i * n + i]!;
    for (let c = 0; c <= i; c++) Linv[i * n + c] = acc[c]! / lii;
  }
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) U[i * n + j] = Linv[(n - 1 - i) * n + (n - 1 - j)]!;
  return U;
}

/** Naive SparseGPT (float64): the reference algorithm written out literally, column by column, no lazy blocks needed
 * except for the per-block mask (threshold per block of `blocksize` columns). Returns the loss. `Uknown`: the upper
 * Cholesky factor of the damped H⁻¹ when known in closed form (skips the O(n³) factorisation). */
export function naiveSparseGpt(
  W0: Float32Array, rows: number, cols: number, H0: Float32Array, spec: { sparsity?: number; prunen?: number; prunem?: number },
  percdamp = 0.01, blocksize = 128, Uknown?: Float64Array,
): { W: Float64Array; loss: number } {
  const n = cols;
  const W = Float64Array.from(W0);
  const H = Float64Array.from(H0);
  for (let i = 0; i < n; i++) if (H[i * n + i] === 0) { H[i * n + i] = 1; for (let r = 0; r < rows; r++) W[r * n + i] = 0; }
  let mean = 0;
  for (let i = 0; i < n; i++) mean += H[i * n + i]!;
  mean /= n;
  for (let i = 0; i < n; i++) H[i * n + i] += percdamp * mean;
  const U = Uknown ?? upperCholeskyOfInverse(H, n);
  let loss = 0;
  const M = spec.prunem ?? 0, N = spec.prunen ?? 0;
  for (let i1 = 0; i1 < n; i1 += blocksize) {
    const i2 = Math.min(i1 + blocksize, n);
    const mask = new Uint8Array(rows * n);
    if (!N) {
      const sc: number[] = [];
      for (let r = 0; r < rows; r++) for (let j = i1; j < i2; j++) sc.push(W[r * n + j]! ** 2 / U[j * n + j]! ** 2);
      const sorted = [...sc].sort((a, b) => a - b);
      const th = sorted[Math.floor(sc.length * (spec.sparsity ?? 0))]!;
      if (spec.sparsity) for (let r = 0; r < rows; r++) for (let j = i1; j < i2; j++) mask[r * n + j] = sc[r * (i2 - i1) + j - i1]! <= th ? 1 : 0;
    }
    for (let j = i1; j < i2; j++) {
      for (let r = 0; r < rows; r++) {
        if (N && (j - i1) % M === 0) {
          const idx = Array.from({ length: M }, (_, t) => t);
          const s = idx.map((t) => W[r * n + j + t]! ** 2 / U[(j + t) * n + j + t]! ** 2);
          idx.sort((a, b) => s[a]! - s[b]! || a - b);
          for (let t = 0; t < N; t++) mask[r * n + j + idx[t]!] = 1;
        }
        const w = W[r * n + j]!, q = mask[r * n + j] ? 0 : w, d = U[j * n + j]!;
        const err = (w - q) / d;
        loss += (w - q) ** 2 / d ** 2 / 2;
        // full (non-lazy) OBS update of all later columns
        for (let k = j; k < n; k++) W[r * n + k] -= err * U[j * n + k]!;
        W[r * n + j] = q;
      }
    }
  }
  return { W, loss };
}

/** ‖W X ᵀ‖-style output error: Σ_t ‖(A − B) x_t‖² for W [rows, cols], X [N, cols]. */
export function outputError(A: ArrayLike<number>, B: ArrayLike<number>, rows: number, cols: number, X: Float32Array, N: number): number {
  let s = 0;
  for (let t = 0; t < N; t++)
    for (let r = 0; r < rows; r++) {
      let v = 0;
      for (let j = 0; j < cols; j++) v += (A[r * cols + j]! - B[r * cols + j]!) * X[t * cols + j]!;
      s += v * v;
    }
  return s;
}

/**
 * Every SparseGPT / SparseLLM option spelled out, as the bindings take them (they fall back to nothing). The values are
 * the CLI's (SPARSEGPT_DEFAULTS / SPARSELLM_DEFAULTS and the family α/β/γ of the family table); a test overrides
 * what it is about. The sparsity spec is `o`'s ({ sparsity } or { prunen, prunem }).
 */
/** ‖Y − Ŷ‖² / ‖Y‖² (float64) of an OPT FFN Ŷ = W2 ReLU(W1 x + b1) + b2 against the dense one, over the tokens of X. */
export function optFfnError(X: Float32Array, N: number, d: number, f: number, b1: Float32Array, b2: Float32Array,
  dense: { W1: Float32Array; W2: Float32Array }, sparse: { W1: Float32Array; W2: Float32Array }): number {
  const fwd = (W1: Float32Array, W2: Float32Array, t: number) => {
    const a = new Float64Array(f), y = new Float64Array(d);
    for (let i = 0; i < f; i++) {
      let s = b1[i]!;
      for (let j = 0; j < d; j++) s += W1[i * d + j]! * X[t * d + j]!;
      a[i] = s > 0 ? s : 0;
    }
    for (let j = 0; j < d; j++) {
      let s = b2[j]!;
      for (let i = 0; i < f; i++) s += W2[j * f + i]! * a[i]!;
      y[j] = s;
    }
    return y;
  };
  let num = 0, den = 0;
  for (let t = 0; t < N; t++) {
    const y = fwd(dense.W1, dense.W2, t), yh = fwd(sparse.W1, sparse.W2, t);
    for (let j = 0; j < d; j++) (num += (y[j]! - yh[j]!) ** 2), (den += y[j]! ** 2);
  }
  return num / den;
}

/** The same for a LLaMA FFN Ŷ = Wd (silu(Wg x) ⊙ Wu x). */
export function llamaFfnError(X: Float32Array, N: number, d: number, f: number,
  dense: { Wg: Float32Array; Wu: Float32Array; Wd: Float32Array }, sparse: { Wg: Float32Array; Wu: Float32Array; Wd: Float32Array }): number {
  const fwd = (w: typeof dense, t: number) => {
    const a = new Float64Array(f), y = new Float64Array(d);
    for (let i = 0; i < f; i++) {
      let g = 0, u = 0;
      for (let j = 0; j < d; j++) (g += w.Wg[i * d + j]! * X[t * d + j]!), (u += w.Wu[i * d + j]! * X[t * d + j]!);
      a[i] = (g / (1 + Math.exp(-g))) * u;
    }
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let i = 0; i < f; i++) s += w.Wd[j * f + i]! * a[i]!;
      y[j] = s;
    }
    return y;
  };
  let num = 0, den = 0;
  for (let t = 0; t < N; t++) {
    const y = fwd(dense, t), yh = fwd(sparse, t);
    for (let j = 0; j < d; j++) (num += (y[j]! - yh[j]!) ** 2), (den += y[j]! ** 2);
  }
  return num / den;
}
