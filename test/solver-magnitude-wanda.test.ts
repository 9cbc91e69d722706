import { test } from 'node:test';
import assert from 'node:assert/strict';
import { magnitudePrune } from '../src/native/magnitude.js';
import { WandaScaler, wandaPrune, wandaScalerFromHessian } from '../src/native/wanda.js';
import { hessian, randn } from './solver-util.js';

const zeros = (W: Float32Array) => W.reduce((n, v) => n + (v === 0 ? 1 : 0), 0);

test('magnitude: per-matrix threshold sort(|W|)[int(numel·s)] with <=', async () => {
  const rows = 33, cols = 48;
  for (const s of [0.1, 0.5, 0.77]) {
    const W = randn(rows * cols, 11);
    const sorted = Array.from(W, Math.abs).sort((a, b) => a - b);
    const th = sorted[Math.floor(rows * cols * s)]!;
    const want = sorted.filter((v) => v <= th).length; // int(numel·s)+1 for distinct values
    const W0 = W.slice();
    const r = await magnitudePrune(W, rows, cols, { sparsity: s });
    assert.equal(zeros(W), want);
    assert.equal(r.pruned, want);
    for (let i = 0; i < W.length; i++) assert.equal(W[i], Math.abs(W0[i]!) <= th ? 0 : W0[i]);
  }
  const W = randn(64, 3), W0 = W.slice();
  await magnitudePrune(W, 8, 8, { sparsity: 0 });
  assert.deepEqual(W, W0, 'sparsity 0 prunes nothing');
});

test('magnitude and Wanda N:M: exactly N pruned in every group of M, the N smallest scores', async () => {
  const rows = 16, cols = 32;
  for (const [n, m] of [[2, 4], [4, 8], [3, 4], [1, 2]] as const) {
    const W = randn(rows * cols, n * 10 + m), W0 = W.slice();
    await magnitudePrune(W, rows, cols, { prunen: n, prunem: m });
    const scaler = Float32Array.from({ length: cols }, (_, j) => 0.1 + (j % 5));
    const V = W0.slice();
    await wandaPrune(V, rows, cols, scaler, { prunen: n, prunem: m });
    for (const [A, score] of [
      [W, (j: number, v: number) => Math.abs(v)],
      [V, (j: number, v: number) => Math.abs(v) * Math.sqrt(scaler[j]!)],
    ] as const)
      for (let r = 0; r < rows; r++)
        for (let g = 0; g < cols; g += m) {
          let pruned = 0, maxPruned = -Infinity, minKept = Infinity;
          for (let k = 0; k < m; k++) {
            const i = r * cols + g + k, sc = score(g + k, W0[i]!);
            if (A[i] === 0) pruned++, (maxPruned = Math.max(maxPruned, sc));
            else (minKept = Math.min(minKept, sc)), assert.equal(A[i], W0[i]);
          }
          assert.equal(pruned, n);
          assert.ok(maxPruned <= minKept);
        }
  }
});

test('Wanda unstructured: exactly int(cols·s) per output row, the smallest |W|·sqrt(scaler), stable ties', async () => {
  const rows = 12, cols = 50, N = 40;
  const X = randn(N * cols, 5);
  const acc = new WandaScaler(cols);
  await acc.add(X.subarray(0, 20 * cols), 20);
  await acc.add(X.subarray(20 * cols), 20);
  // scaler = Σ x² / nseq = H_jj / 2
  const H = hessian(X, N, cols, 2);
  const fromH = wandaScalerFromHessian(H, cols);
  for (let j = 0; j < cols; j++) assert.ok(Math.abs(acc.scaler[j]! - fromH[j]!) <= 1e-4 * fromH[j]!);
  for (const s of [0.3, 0.5, 0.9]) {
    const W = randn(rows * cols, 9);
    // introduce exact ties in row 0
    for (let j = 0; j < 10; j++) W[j] = 0.5;
    const W0 = W.slice();
    await wandaPrune(W, rows, cols, acc.scaler, { sparsity: s });
    const k = Math.floor(cols * s);
    for (let r = 0; r < rows; r++) {
      const idx = Array.from({ length: cols }, (_, j) => j);
      const sc = idx.map((j) => Math.abs(W0[r * cols + j]!) * Math.sqrt(acc.scaler[j]!));
      const order = idx.slice().sort((a, b) => sc[a]! - sc[b]! || a - b); // stable
      const want = new Set(order.slice(0, k));
      for (let j = 0; j < cols; j++) assert.equal(W[r * cols + j] === 0, want.has(j), `row ${r} col ${j}`);
    }
  }
});

test('bad specs and sizes reject', async () => {
  const W = new Float32Array(16);
  await assert.rejects(magnitudePrune(W, 4, 4, { sparsity: 1 }), RangeError);
  await assert.rejects(magnitudePrune(W, 4, 4, { prunen: 4, prunem: 4 }), RangeError);
  await assert.rejects(magnitudePrune(W, 4, 4, { prunen: 2, prunem: 3 }), RangeError);
  await assert.rejects(magnitudePrune(W, 5, 4, { sparsity: 0.5 }), RangeError);
  await assert.rejects(wandaPrune(W, 4, 4, new Float32Array(3), { sparsity: 0.5 }), RangeError);
  const bad = new Float32Array(16).fill(NaN);
  await assert.rejects(magnitudePrune(bad, 4, 4, { sparsity: 0.5 }), /NaN/);
});
