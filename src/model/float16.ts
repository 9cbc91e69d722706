// IEEE half (fp16) and bfloat16 <-> float32 conversion. Node 20 has no Float16Array, so 16-bit
// values travel as Uint16Array bit patterns.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero / subnormal
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** float32 -> fp16 bits, round to nearest even (as numpy / torch do). */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> signed zero
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m; // may carry into the smallest normal, which is correct
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // carry may bump the exponent: correct
  return h;
}

/** float32 value of every fp16 bit pattern (halfToFloat's), built on first use: 256 KB. */
let halfTable: Float32Array | null = null;

export function halfToFloat32Table(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
  }
  return halfTable;
}

export function halfArrayToFloat32(src: Uint16Array): Float32Array {
  const table = halfToFloat32Table();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}

/**
 * floatToHalf of a float32 given by its bits, with the normal-range case inline (the same rounding as floatToHalf,
 * which handles the rest): a 7B checkpoint has 6.5 G values.
 */
export function halfOfFloatBits(x: number, value: number): number {
  const exp = (x >>> 23) & 0xff;
  // half exponents 1..30: float exponents 113..142
  if (exp >= 113 && exp <= 142) {
    let h = ((x >>> 16) & 0x8000) | ((exp - 112) << 10) | ((x & 0x7fffff) >>> 13);
    const rest = x & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
    return h;
  }
  return floatToHalf(value);
}

/** floatToHalf over an array (a Float32Array is read through a Uint32Array view of its bits, halfOfFloatBits). */
export function float32ToHalfArray(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  if (!(src instanceof Float32Array)) {
    for (let i = 0; i < src.length; i++) out[i] = floatToHalf(src[i]!);
    return out;
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = halfOfFloatBits(bits[i]!, src[i]!);
  return out;
}

export function bfloat16ArrayToFloat32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
}

export function float32ToBfloat16Array(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i]!;
    const x = u32[0]!;
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) { out[i] = (x >>> 16) | 0x40; continue; }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16; // round to nearest even
  }
  return out;
}
