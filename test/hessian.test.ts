import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HessianAccumulator } from '../src/native/hessian.js';
import { mulberry32, relativeError } from './helpers.js';

/** Naive H = (2/n) Σ_j X_jᵀ X_j in float64. */
function naiveHessian(batches: Float32Array[], rowsPer: number[], cols: number): Float64Array {
  const H = new Float64Array(cols * cols);
  for (let b = 0; b < batches.length; b++) {
    const X = batches[b]!;
    for (let r = 0; r < rowsPer[b]!; r++)
      for (let i = 0; i < cols; i++) {
        const xi = X[r * cols + i]!;
        for (let j = 0; j < cols; j++) H[i * cols + j] += xi * X[r * cols + j]!;
      }
  }
  for (let i = 0; i < H.length; i++) H[i] = (2 * H[i]!) / batches.length;
  return H;
}

for (const [cols, rowsList] of [
  [64, [32, 32, 32]],
  [37, [1, 1, 1, 1]], // awkward: not a multiple of 8, one row per batch
  [13, [517, 3]], // many rows, then few
  [129, [200]],
] as const) {
  test(`streaming Hessian matches naive XᵀX (cols=${cols}, rows=${rowsList.join('+')}) to 1e-5`, async () => {
    const rand = mulberry32(cols);
    const batches = rowsList.map((rows) => Float32Array.from({ length: rows * cols }, () => rand() * 2 - 1));
    const acc = new HessianAccumulator(cols);
    for (let b = 0; b < batches.length; b++) await acc.add(batches[b]!, rowsList[b]!);
    assert.equal(acc.nsamples, batches.length);
    const want = naiveHessian(batches, [...rowsList], cols);
    const err = relativeError(acc.H, want);
    assert.ok(err < 1e-5, `relative error ${err}`);
    // symmetric in both triangles
    for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) assert.equal(acc.H[i * cols + j], acc.H[j * cols + i]);
  });
}

test('Hessian call runs off the JavaScript thread', async () => {
  const cols = 1024, rows = 4096;
  const X = new Float32Array(rows * cols).fill(0.5);
  const acc = new HessianAccumulator(cols);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  await acc.add(X, rows);
  await acc.add(X, rows);
  clearInterval(timer);
  assert.ok(ticks > 0, 'the event loop kept running during the native call');
  assert.ok(Math.abs(acc.H[0]! - rows * 0.25 * 2 * 2 / 2) / (rows * 0.5) < 1e-3);
});

test('bad sizes are refused with a RangeError, not a crash', async () => {
  const acc = new HessianAccumulator(4);
  await assert.rejects(acc.add(new Float32Array(7), 2), RangeError);
});

test('the addon reports the OpenBLAS kernel set it runs, the one $OPENBLAS_CORETYPE names when set', async () => {
  const { native } = await import('../src/native/addon.js');
  const core = native().blasCore();
  assert.match(core, /^[A-Za-z0-9_]+$/, `unexpected core name ${JSON.stringify(core)}`);
  const forced = process.env.OPENBLAS_CORETYPE;
  if (forced) assert.equal(core.toLowerCase(), forced.toLowerCase());
});
