// The array conversions of src/model/float16.ts and the tiled transpose of src/model/weights.ts are the fast paths
// of the per-value definitions (halfToFloat, floatToHalf, out[c·rows + r] = src[r·cols + c]): checked here against
// them, every fp16 bit pattern, and float32 bit patterns around every rounding boundary plus random ones.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { float32ToHalfArray, floatToHalf, halfArrayToFloat32, halfToFloat } from '../src/model/float16.js';
import { transpose, transposeHalf, transposeToHalf } from '../src/model/weights.js';

test('halfArrayToFloat32 gives halfToFloat for all 65536 bit patterns', () => {
  const all = new Uint16Array(65536).map((_, h) => h);
  const f = halfArrayToFloat32(all);
  for (let h = 0; h < 65536; h++) assert.ok(Object.is(f[h], Math.fround(halfToFloat(h))) || (Number.isNaN(f[h]) && Number.isNaN(halfToFloat(h))), `bits ${h}`);
});

test('float32ToHalfArray gives floatToHalf: every half boundary ± 1 ulp, specials, and 2²⁰ random bit patterns', () => {
  const bits: number[] = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0x00000001, 0x387fffff, 0x38800000, 0x477fe000, 0x477ff000, 0x477fefff];
  // each float32 exponent, with the mantissa at, just below and just above the half-way and carry points
  for (let e = 0; e < 256; e++) {
    for (const m of [0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x7fe000, 0x7ff000, 0x7fefff, 0x7fffff]) {
      bits.push((e << 23) | m, ((e << 23) | m | 0x80000000) >>> 0);
    }
  }
  let a = 12345;
  for (let k = 0; k < 1 << 20; k++) {
    a = (Math.imul(a, 1103515245) + 12345) >>> 0;
    bits.push((a ^ (a << 7)) >>> 0);
  }
  const src = new Float32Array(new Uint32Array(bits).buffer);
  const fast = float32ToHalfArray(src);
  for (let i = 0; i < src.length; i++) if (fast[i] !== floatToHalf(src[i]!)) assert.fail(`bits 0x${bits[i]!.toString(16)}: ${fast[i]} against ${floatToHalf(src[i]!)}`);
  // a plain array takes the per-value path
  assert.deepEqual([...float32ToHalfArray([1, -2, 65520])], [floatToHalf(1), floatToHalf(-2), floatToHalf(65520)]);
});

test('transpose matches the plain definition on shapes around the tile size', () => {
  for (const [rows, cols] of [[1, 1], [3, 200], [64, 64], [65, 130], [129, 7]] as const) {
    const src = Float32Array.from({ length: rows * cols }, (_, k) => k * 0.5 - 3);
    const t = transpose(src, rows, cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) assert.equal(t[c * rows + r], src[r * cols + c]);
    // fp16 in: decode and transpose in one pass
    const half = float32ToHalfArray(src);
    assert.deepEqual(transposeHalf(half, rows, cols), transpose(halfArrayToFloat32(half), rows, cols));
    // float32 out to fp16: transpose and encode in one pass (values off the fp16 grid, so the rounding is exercised)
    const fine = Float32Array.from({ length: rows * cols }, (_, k) => Math.sin(k) * 70000 * 2 ** -(k % 30));
    assert.deepEqual(transposeToHalf(fine, rows, cols), float32ToHalfArray(transpose(fine, rows, cols)));
  }
});
