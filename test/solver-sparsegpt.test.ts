import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../src/native/addon.js';
import { sparsegptPrune } from '../src/native/sparsegpt.js';
import { magnitudePrune } from '../src/native/magnitude.js';
import { WandaScaler, wandaPrune } from '../src/native/wanda.js';
import { sparseGptOptions } from '../src/pipeline/options.js';
import { cholesky, correlatedX, hessian, inverse, naiveSparseGpt, outputError, randn, upperCholeskyOfInverse } from './solver-util.js';
import { gaussian, mulberry32 } from './helpers.js';
import { relativeError } from './helpers.js';

const zeros = (W: ArrayLike<number>) => Array.from(W).reduce((n, v) => n + (v === 0 ? 1 : 0), 0);

test('SparseGPT matches a naive float64 implementation (loss and weights), unstructured and N:M', async () => {
  const rows = 24, cols = 40, N = 200;
  const X = correlatedX(N, cols, 1);
  const H = hessian(X, N, cols, 4);
  for (const spec of [{ sparsity: 0.5 }, { sparsity: 0.8 }, { prunen: 2, prunem: 4 }, { prunen: 3, prunem: 4 }]) {
    for (const blocksize of [8, 16, 128]) {
      const W = randn(rows * cols, 2);
      const want = naiveSparseGpt(W, rows, cols, H, spec, 0.01, blocksize);
      const H0 = H.slice();
      const r = await sparsegptPrune(W, rows, cols, H, sparseGptOptions({ ...spec, blocksize, doublePrecision: blocksize === 16 }));
      assert.deepEqual(H, H0, 'H not modified');
      assert.ok(Math.abs(r.loss - want.loss) <= 1e-4 * want.loss, `loss ${r.loss} vs ${want.loss} (${JSON.stringify(spec)}, B=${blocksize})`);
      assert.ok(relativeError(W, want.W) < 1e-4, `weights ${relativeError(W, want.W)}`);
      // same mask
      for (let i = 0; i < W.length; i++) assert.equal(W[i] === 0, want.W[i] === 0);
      assert.equal(r.retries, 0);
    }
  }
});

test('SparseGPT matches the naive float64 implementation on blocks large enough for the radix threshold select (rows·B >= 4096), unstructured and N:M', async () => {
  const rows = 40, cols = 256, N = 600;
  const X = correlatedX(N, cols, 11);
  const H = hessian(X, N, cols, 3);
  for (const spec of [{ sparsity: 0.5 }, { sparsity: 0.7 }, { prunen: 2, prunem: 4 }, { prunen: 4, prunem: 8 }]) {
    const W = randn(rows * cols, 12);
    const want = naiveSparseGpt(W, rows, cols, H, spec, 0.01, 128);
    const r = await sparsegptPrune(W, rows, cols, H, sparseGptOptions({ ...spec, blocksize: 128 }));
    assert.ok(Math.abs(r.loss - want.loss) <= 1e-4 * want.loss, `loss ${r.loss} vs ${want.loss} (${JSON.stringify(spec)})`);
    assert.ok(relativeError(W, want.W) < 1e-4, `weights ${relativeError(W, want.W)}`);
    for (let i = 0; i < W.length; i++) assert.equal(W[i] === 0, want.W[i] === 0);
  }
});

test('the float64 reference factor upperCholeskyOfInverse equals chol(inverse(H))ᵀ', () => {
  const n = 40, X = correlatedX(200, n, 21);
  const H = Float64Array.from(hessian(X, 200, n, 4));
  const L = cholesky(inverse(H, n), n), U = upperCholeskyOfInverse(H, n);
  let maxDiff = 0, maxAbs = 0;
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) {
      maxDiff = Math.max(maxDiff, Math.abs(U[i * n + j]! - L[j * n + i]!));
      maxAbs = Math.max(maxAbs, Math.abs(L[j * n + i]!));
    }
  assert.ok(maxDiff <= 1e-10 * maxAbs, `max |U − Lᵀ| ${maxDiff} (max ${maxAbs})`); // float64 rounding, cond(H) ~ 1e3
});

// Inputs wider than 1024 columns take the blocked path of the C++ solver (kEagerMaxN in sparsegpt_kernels.h: W
// transposed one block at a time, the later blocks updated by one SGEMM) — every real fc2 / down_proj; the tests above
// only reach the eager path. To keep the float64 reference fast at this size its factor is known in closed form: the
// damped Hessian is H + λI = V Vᵀ with V upper triangular and banded (bandwidth 8, every 7th input 4× larger, off-diagonals
// 0.8·N(0,1)/√8: larger ones make H too ill-conditioned for float32 to match to 1e-6), so (H + λI)⁻¹ = UᵀU with U = V⁻¹ (back substitution, O(n²·8)); U is dense, so every column's OBS
// update reaches every later block. H = V Vᵀ − λI with λ = p·m/(1 + p), m = mean diag(V Vᵀ), so that the solver's
// damping p·mean(diag H) adds back exactly λ (up to float32 rounding of H).
function bandedHessian(n: number, seed: number, percdamp: number): { H: Float32Array; U: Float64Array } {
  const b = 8, g = gaussian(mulberry32(seed));
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    V[i * n + i] = (i % 7 === 0 ? 4 : 1) * (0.75 + 0.5 * Math.abs(g()));
    for (let k = 1; k <= b && i + k < n; k++) V[i * n + i + k] = (0.8 * g()) / Math.sqrt(b);
  }
  const H64 = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = i; j <= Math.min(n - 1, i + b); j++) {
      let s = 0;
      for (let k = j; k <= Math.min(n - 1, i + b); k++) s += V[i * n + k]! * V[j * n + k]!;
      H64[i * n + j] = H64[j * n + i] = s;
    }
  let m = 0;
  for (let i = 0; i < n; i++) m += H64[i * n + i]! / n;
  const lambda = (percdamp * m) / (1 + percdamp);
  for (let i = 0; i < n; i++) H64[i * n + i] -= lambda;
  const U = new Float64Array(n * n); // V U = I, column by column, bottom up
  for (let c = 0; c < n; c++)
    for (let i = c; i >= 0; i--) {
      let s = i === c ? 1 : 0;
      for (let k = i + 1; k <= Math.min(c, i + b); k++) s -= V[i * n + k]! * U[k * n + c]!;
      U[i * n + c] = s / V[i * n + i]!;
    }
  return { H: Float32Array.from(H64), U };
}

test('SparseGPT matches the naive float64 implementation at 64×1536 (blocked path), unstructured 50%/70% and 2:4', async () => {
  const rows = 64, cols = 1536, percdamp = 0.01;
  const { H, U } = bandedHessian(cols, 31, percdamp);
  for (const spec of [{ sparsity: 0.5 }, { sparsity: 0.7 }, { prunen: 2, prunem: 4 }]) {
    const W = randn(rows * cols, 32);
    const want = naiveSparseGpt(W, rows, cols, H, spec, percdamp, 128, U);
    const r = await sparsegptPrune(W, rows, cols, H, sparseGptOptions({ ...spec, percdamp, blocksize: 128 }));
    // tolerances: float32 solver vs float64 reference, measured at d1cae2b: loss 0.7–1.8e-8 relative, weights
    // 1.5–1.8e-7 relative; with the lazy SGEMM update skipped (tried): loss 2.4e-3, weights 0.12. Bounds 1e-6 / 1e-5.
    // The masks must agree.
    assert.ok(Math.abs(r.loss - want.loss) <= 1e-6 * want.loss, `loss ${r.loss} vs ${want.loss} (${JSON.stringify(spec)})`);
    assert.ok(relativeError(W, want.W) < 1e-5, `weights ${relativeError(W, want.W)} (${JSON.stringify(spec)})`);
    let maskDiff = 0;
    for (let i = 0; i < W.length; i++) maskDiff += (W[i] === 0) !== (want.W[i] === 0) ? 1 : 0;
    assert.equal(maskDiff, 0, `${maskDiff} mask entries differ (${JSON.stringify(spec)})`);
  }
});

test('SparseGPT sparsity: per-block shared threshold gives int(rows·B·s)+1 per block; N:M pattern in every group', async () => {
  const rows = 32, cols = 96, N = 300, B = 32;
  const X = correlatedX(N, cols, 2);
  const H = hessian(X, N, cols, 3);
  for (const s of [0.5, 0.7, 0.9]) {
    const W = randn(rows * cols, 3);
    const r = await sparsegptPrune(W, rows, cols, H, sparseGptOptions({ sparsity: s, blocksize: B }));
    const perBlock = Math.floor(rows * B * s) + 1;
    for (let b = 0; b < cols; b += B) {
      let z = 0;
      for (let i = 0; i < rows; i++) for (let j = b; j < b + B; j++) z += W[i * cols + j] === 0 ? 1 : 0;
      assert.equal(z, perBlock, `block ${b}`);
    }
    assert.equal(r.pruned, (cols / B) * perBlock);
  }
  for (const [n, m] of [[2, 4], [4, 8], [3, 4]] as const) {
    const W = randn(rows * cols, 4);
    await sparsegptPrune(W, rows, cols, H, sparseGptOptions({ prunen: n, prunem: m, blocksize: B }));
    for (let i = 0; i < rows; i++)
      for (let g = 0; g < cols; g += m) {
        let z = 0;
        for (let k = 0; k < m; k++) z += W[i * cols + g + k] === 0 ? 1 : 0;
        assert.equal(z, n);
      }
  }
});

test('SparseGPT with sparsity 0 leaves W exactly unchanged', async () => {
  const rows = 16, cols = 64, N = 100;
  const X = correlatedX(N, cols, 3);
  const H = hessian(X, N, cols, 1);
  const W = randn(rows * cols, 5), W0 = W.slice();
  const r = await sparsegptPrune(W, rows, cols, H, sparseGptOptions({ sparsity: 0 }));
  assert.deepEqual(W, W0);
  assert.equal(r.loss, 0);
});

// Measured gap to the exact optimum (same seed): weakly correlated X (corr 0.3): 1.04× at 50%, 1.07× at 70%;
// strongly correlated X (corr 0.7 / 1.5): 1.3–1.8× — the greedy OBS mask is far from optimal there (the
// SparseGPT mask with an optimal refit is 1.2–1.7×). So the few-% bound is asserted on the weakly correlated case.
test('SparseGPT beats magnitude and Wanda and is within a few % of the exact optimum (8×12, exhaustive per row)', async () => {
  const rows = 8, cols = 12, N = 400, s = 0.5;
  const X = correlatedX(N, cols, 7, 0.3);
  const H = hessian(X, N, cols, 1);
  const W0 = randn(rows * cols, 8);
  const Wg = W0.slice();
  await sparsegptPrune(Wg, rows, cols, H, sparseGptOptions({ sparsity: s, percdamp: 0.0001 }));
  const Wm = W0.slice();
  await magnitudePrune(Wm, rows, cols, { sparsity: s });
  const Ww = W0.slice();
  const sc = new WandaScaler(cols);
  await sc.add(X, N);
  await wandaPrune(Ww, rows, cols, sc.scaler, { sparsity: s });
  // exact optimum with the same number of zeros per row as SparseGPT chose: for every row, every mask of that size,
  // least-squares refit of the kept weights on G = XᵀX (rows are independent given H).
  const G = new Float64Array(cols * cols);
  for (let i = 0; i < cols * cols; i++) G[i] = H[i]!; // scale does not matter
  let best = 0;
  for (let r = 0; r < rows; r++) {
    let k = 0;
    for (let j = 0; j < cols; j++) k += Wg[r * cols + j] === 0 ? 1 : 0;
    let rowBest = Infinity;
    for (let mask = 0; mask < 1 << cols; mask++) {
      let bits = 0;
      for (let j = 0; j < cols; j++) bits += (mask >> j) & 1;
      if (bits !== k) continue; // mask bits = pruned
      const keep: number[] = [], pr: number[] = [];
      for (let j = 0; j < cols; j++) ((mask >> j) & 1 ? pr : keep).push(j);
      // minimise (w − v)ᵀ G (w − v) with v_pr = 0: delta_keep = −G_kk⁻¹ G_kp w_p; error = w_pᵀ (G_pp − G_pk G_kk⁻¹ G_kp) w_p
      const w = (j: number) => W0[r * cols + j]!;
      const nk = keep.length;
      const A = new Float64Array(nk * nk), b = new Float64Array(nk);
      for (let a = 0; a < nk; a++) {
        for (let c = 0; c < nk; c++) A[a * nk + c] = G[keep[a]! * cols + keep[c]!]!;
        for (const p of pr) b[a] += G[keep[a]! * cols + p]! * w(p);
      }
      // solve A y = b (Gaussian elimination)
      const y = solve(A, b, nk);
      let e = 0;
      for (const p of pr) for (const q of pr) e += w(p) * G[p * cols + q]! * w(q);
      for (let a = 0; a < nk; a++) e -= b[a]! * y[a]!;
      rowBest = Math.min(rowBest, e);
    }
    best += rowBest;
  }
  const scale = (a: Float32Array) => outputError(W0, a, rows, cols, X, N) * (2 / 1) / 1; // same scale as H = 2 XᵀX
  const eg = scale(Wg), em = scale(Wm), ew = scale(Ww);
  assert.ok(eg < em && eg < ew, `sparsegpt ${eg} magnitude ${em} wanda ${ew}`);
  assert.ok(eg <= best * 1.08 + 1e-9, `sparsegpt ${eg} vs exact optimum ${best}`);
  assert.ok(eg >= best * (1 - 1e-4), 'cannot beat the optimum');
});

function solve(A: Float64Array, b: Float64Array, n: number): Float64Array {
  const M = Float64Array.from(A), y = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    for (let r = c + 1; r < n; r++) {
      const f = M[r * n + c]! / M[c * n + c]!;
      for (let k = c; k < n; k++) M[r * n + k] -= f * M[c * n + k]!;
      y[r] -= f * y[c]!;
    }
  }
  for (let c = n - 1; c >= 0; c--) {
    let s = y[c]!;
    for (let k = c + 1; k < n; k++) s -= M[c * n + k]! * y[k]!;
    y[c] = s / M[c * n + c]!;
  }
  return y;
}

test('SparseGPT: singular / indefinite H retries with 10× damping and stays finite; dead inputs zeroed', async () => {
  const rows = 8, cols = 16;
  // indefinite: a negative eigenvalue larger than the 1% damping
  const H = new Float32Array(cols * cols);
  for (let i = 0; i < cols; i++) H[i * cols + i] = 1;
  H[0 * cols + 1] = H[1 * cols + 0] = 1.5;
  const W = randn(rows * cols, 1);
  const r = await sparsegptPrune(W, rows, cols, H, sparseGptOptions({ sparsity: 0.5 }));
  assert.ok(r.retries > 0, 'retried');
  assert.ok(r.damping > 0.01);
  assert.ok(W.every(Number.isFinite) && Number.isFinite(r.loss));
  // dead column (zero diagonal, rank-deficient H)
  const X = randn(5 * cols, 2);
  for (let t = 0; t < 5; t++) X[t * cols + 3] = 0;
  const H2 = hessian(X, 5, cols, 1);
  const V = randn(rows * cols, 3);
  const r2 = await sparsegptPrune(V, rows, cols, H2, sparseGptOptions({ sparsity: 0.25 }));
  for (let i = 0; i < rows; i++) assert.equal(V[i * cols + 3], 0);
  assert.ok(V.every(Number.isFinite) && Number.isFinite(r2.loss));
  assert.ok(zeros(V) >= Math.floor(rows * cols * 0.25));
});

test('SparseGPT accumulateDamping writes the damping into H (reference quirk)', async () => {
  const rows = 4, cols = 8;
  const X = randn(50 * cols, 4);
  const H = hessian(X, 50, cols, 1), H0 = H.slice();
  const mean = Array.from({ length: cols }, (_, i) => H0[i * cols + i]!).reduce((a, b) => a + b) / cols;
  const r = await sparsegptPrune(randn(rows * cols, 5), rows, cols, H, sparseGptOptions({ sparsity: 0.5, accumulateDamping: true }));
  assert.ok(Math.abs(r.damping - 0.01 * mean) < 1e-6 * mean);
  for (let i = 0; i < cols; i++) assert.ok(Math.abs(H[i * cols + i]! - H0[i * cols + i]! - r.damping) < 1e-5 * mean);
  await sparsegptPrune(randn(rows * cols, 5), rows, cols, H, sparseGptOptions({ sparsity: 0.5, accumulateDamping: true }));
  for (let i = 0; i < cols; i++) assert.ok(H[i * cols + i]! > H0[i * cols + i]! + 1.9 * r.damping);
});

test('SparseGPT rejects bad sizes and NaN input', async () => {
  await assert.rejects(sparsegptPrune(new Float32Array(12), 3, 4, new Float32Array(15), sparseGptOptions({ sparsity: 0.5 })), RangeError);
  await assert.rejects(sparsegptPrune(new Float32Array(12), 3, 4, new Float32Array(16), sparseGptOptions({ prunen: 2, prunem: 4, blocksize: 6 })), /multiple/);
  const H = new Float32Array(16);
  for (let i = 0; i < 4; i++) H[i * 4 + i] = 1;
  await assert.rejects(sparsegptPrune(new Float32Array(12).fill(NaN), 3, 4, H, sparseGptOptions({ sparsity: 0.5 })), /NaN/);
  // the binding takes no defaults: a missing field is a TypeError naming it
  for (const k of ['percdamp', 'blocksize', 'accumulateDamping', 'doublePrecision'] as const) {
    const o: Record<string, unknown> = sparseGptOptions({ sparsity: 0.5 });
    delete o[k];
    await assert.rejects(sparsegptPrune(new Float32Array(12), 3, 4, H, o as never), new RegExp(`^TypeError: option ${k} is missing$`));
  }
});

test('releaseMemory hands the solver workspace cache back to the system (RSS drops by the cached H⁻¹ factor)', async () => {
  // n = 2048: the float32 H⁻¹ factor is a 16 MiB Scratch buffer, which the workspace cache keeps resident after the
  // prune (native/src/common/workspace.cc); the pipeline releases it between blocks (src/pipeline/prune.ts).
  const rows = 4, n = 2048;
  const H = new Float32Array(n * n);
  for (let i = 0; i < n; i++) H[i * n + i] = 1 + (i % 7);
  const W = randn(rows * n, 5);
  native().releaseMemory();
  await sparsegptPrune(W, rows, n, H, sparseGptOptions({ sparsity: 0.5 }));
  const before = process.memoryUsage().rss;
  native().releaseMemory();
  const after = process.memoryUsage().rss;
  const cached = n * n * 4;
  // at least 3/4 of the buffer's bytes leave the resident set (the rest is slack for unrelated allocations)
  assert.ok(before - after >= 0.75 * cached, `RSS ${(before / 2 ** 20).toFixed(1)} → ${(after / 2 ** 20).toFixed(1)} MiB, expected a drop of ~${cached / 2 ** 20} MiB`);
  assert.ok(zeros(W) >= rows * n / 2, "the prune ran");
});
