// FedSpaLLM server-side aggregation of the clients' pruned matrices (PAPERS.md §2.2–2.4).
//
// A client's upload for one linear is its masked weight M_i ⊙ W_i: a zero entry is a pruned entry (a kept weight
// that is exactly 0.0 in float32 counts as pruned; it contributes nothing to either rule). Every function works on
// one matrix at a time, so the server aggregates a block as soon as its uploads are in.
//
// Choices where the paper is silent (README "FedSpaLLM"):
// - the ℓ0 denominator is element-wise: position j is divided by n_j, the number of clients that kept it; n_j = 0
//   (0/0) gives 0;
// - k in Eq. 4.20 is per matrix, with d the matrix's size and s its target sparsity;
// - ties in the prune-vote count C_j are broken by the aggregated magnitude |W_g[j]| (smaller pruned first), then by
//   position (lower first), so the result does not depend on upload order;
// - if the clients already agree on more than ceil(s·d) pruned positions (k < 0) nothing is restored: the matrix
//   stays at its intersection's sparsity, which is above the target.

// - 'standalone' (the paper's baseline, no aggregation): the global matrix is the first upload's, unchanged; the
//   server orders a block's uploads by join order for it, so the global model is the earliest-joined client's own
//   model ("client 0"; with layer sampling, per block: the earliest-joined client that pruned that block).

export type AggregationRule = 'fedspallm' | 'mean' | 'standalone';

export const AGGREGATION_RULES: readonly AggregationRule[] = ['fedspallm', 'mean', 'standalone'];

export interface AggregateResult {
  /** the global matrix, same layout as the uploads */
  weights: Float32Array;
  /** entries that are zero in the global matrix */
  zeros: number;
  /** entries pruned by every client (C_j = N) */
  unanimous: number;
  /** entries pruned by mask expansion (Eq. 4.20's k, clamped at 0); 0 for 'mean' and 'standalone' */
  expanded: number;
}

function checkUploads(uploads: readonly Float32Array[]): number {
  if (uploads.length === 0) throw new RangeError('aggregate: no uploads');
  const d = uploads[0]!.length;
  for (const u of uploads) if (u.length !== d) throw new RangeError(`aggregate: uploads of different sizes (${d} and ${u.length})`);
  return d;
}

/**
 * ℓ0-norm averaging, Eq. 4.18 read element-wise: W_g[j] = Σ_i M_i[j] W_i[j] / Σ_i M_i[j], and 0 where no client
 * kept j. Returns W_g and the prune-vote count C_j = Σ_i 𝟙(M_i[j] = 0) of Eq. 4.19.
 */
export function l0Average(uploads: readonly Float32Array[]): { weights: Float32Array; votes: Uint32Array } {
  const d = checkUploads(uploads);
  const sum = new Float64Array(d);
  const kept = new Uint32Array(d);
  for (const u of uploads) {
    for (let j = 0; j < d; j++) {
      const w = u[j]!;
      if (w !== 0) {
        sum[j] += w;
        kept[j]++;
      }
    }
  }
  const weights = new Float32Array(d);
  const votes = new Uint32Array(d);
  const n = uploads.length;
  for (let j = 0; j < d; j++) {
    weights[j] = kept[j]! > 0 ? sum[j]! / kept[j]! : 0;
    votes[j] = n - kept[j]!;
  }
  return { weights, votes };
}

/**
 * Mask expansion, Eqs. 4.19–4.20, in place on the ℓ0 average: besides the positions every client pruned
 * (C_j = N, already 0), prune the k = ceil(s·d) − #{C_j = N} remaining positions with the most prune votes.
 */
export function expandMask(weights: Float32Array, votes: Uint32Array, clients: number, sparsity: number): { unanimous: number; expanded: number } {
  const d = weights.length;
  let unanimous = 0;
  const candidates: number[] = [];
  for (let j = 0; j < d; j++) {
    if (votes[j] === clients) unanimous++;
    else candidates.push(j);
  }
  const k = Math.max(0, Math.min(candidates.length, Math.ceil(sparsity * d) - unanimous));
  if (k > 0) {
    // most votes first; ties: smaller aggregated magnitude first, then lower position
    candidates.sort((a, b) => votes[b]! - votes[a]! || Math.abs(weights[a]!) - Math.abs(weights[b]!) || a - b);
    for (let t = 0; t < k; t++) weights[candidates[t]!] = 0;
  }
  return { unanimous, expanded: k };
}

/** Plain unweighted mean (FedAvg-style, for comparison): pruned clients pull kept weights toward 0, and the union of the masks is kept. */
export function plainMean(uploads: readonly Float32Array[]): Float32Array {
  const d = checkUploads(uploads);
  const sum = new Float64Array(d);
  for (const u of uploads) for (let j = 0; j < d; j++) sum[j] += u[j]!;
  const out = new Float32Array(d);
  for (let j = 0; j < d; j++) out[j] = sum[j]! / uploads.length;
  return out;
}

function countZeros(w: Float32Array): number {
  let z = 0;
  for (let j = 0; j < w.length; j++) if (w[j] === 0) z++;
  return z;
}

/** Positions every upload pruned (C_j = N). */
function countUnanimous(uploads: readonly Float32Array[]): number {
  let unanimous = 0;
  for (let j = 0; j < uploads[0]!.length; j++) if (uploads.every((u) => u[j] === 0)) unanimous++;
  return unanimous;
}

/** One matrix's global value from its uploads under a rule; `sparsity` is the matrix's target (for mask expansion). */
export function aggregateMatrix(uploads: readonly Float32Array[], rule: AggregationRule, sparsity: number): AggregateResult {
  if (!(sparsity >= 0 && sparsity < 1)) throw new RangeError(`aggregate: sparsity ${sparsity} outside [0, 1)`);
  if (rule === 'standalone') {
    checkUploads(uploads);
    const weights = uploads[0]!.slice();
    const zeros = countZeros(weights);
    return { weights, zeros, unanimous: uploads.length === 1 ? zeros : countUnanimous(uploads), expanded: 0 };
  }
  if (rule === 'mean') {
    const weights = plainMean(uploads);
    return { weights, zeros: countZeros(weights), unanimous: countUnanimous(uploads), expanded: 0 };
  }
  const { weights, votes } = l0Average(uploads);
  const { unanimous, expanded } = expandMask(weights, votes, uploads.length, sparsity);
  return { weights, zeros: countZeros(weights), unanimous, expanded };
}
