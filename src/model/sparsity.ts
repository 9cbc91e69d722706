// Sparsity statistics of a weight matrix in [out, in] orientation.

/** Fraction of entries that are exactly zero. */
export function zeroFraction(values: ArrayLike<number>): number {
  let zeros = 0;
  for (let i = 0; i < values.length; i++) if (values[i] === 0) zeros++;
  return values.length ? zeros / values.length : 0;
}

/**
 * Largest N such that every group of M consecutive input weights in every output row has at
 * least N zeros (SparseGPT's convention: "2:4" = 2 of every 4 pruned). 0 if some group is dense.
 */
export function minZerosPerGroup(weightOutIn: ArrayLike<number>, outFeatures: number, inFeatures: number, m: number): number {
  if (inFeatures % m !== 0) return 0;
  let min = m;
  for (let r = 0; r < outFeatures && min > 0; r++) {
    for (let g = r * inFeatures; g < (r + 1) * inFeatures; g += m) {
      let zeros = 0;
      for (let k = 0; k < m; k++) if (weightOutIn[g + k] === 0) zeros++;
      if (zeros < min) min = zeros;
    }
  }
  return min;
}

/**
 * The N:M pattern (M = 4 or 8) with the highest guaranteed zero ratio N/M, ties going to M = 4;
 * null when some group of 8 has no zero at all (no N:M structure).
 */
export function detectNM(weightOutIn: ArrayLike<number>, outFeatures: number, inFeatures: number): string | null {
  let best: { n: number; m: number } | null = null;
  for (const m of [4, 8]) {
    const n = minZerosPerGroup(weightOutIn, outFeatures, inFeatures, m);
    if (n > 0 && (!best || n / m > best.n / best.m)) best = { n, m };
  }
  return best ? `${best.n}:${best.m}` : null;
}
