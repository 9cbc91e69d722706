// FedSpaLLM layer sampling, Eqs. 4.21–4.22: each round, client i prunes only a sample L_i of the m decoder blocks,
// with |L_i| = k_i proportional to its capacity r_i. The paper states neither how k_i follows r_i nor how the sample is
// drawn. Our choice (README "FedSpaLLM"):
// - r_i ∈ (0, 1] is the fraction of the model's blocks the client can prune in a round: k_i = max(1, round(r_i · m));
// - systematic sampling: one random permutation of the blocks per round, and the clients take consecutive runs of
//   k_i positions of it, placed one after the other around the cycle from a random start. Every block then has the
//   same selection probability (what Theorem 4.2.2 assumes), no client gets a block twice, and when Σ k_i ≥ m every
//   block is sampled by at least one client (what Corollary 4.2.1 assumes).

/** Deterministic 32-bit generator (mulberry32), so a round's assignment replays from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Blocks a client of capacity r prunes per round, out of m. */
export function blocksForCapacity(capacity: number, blocks: number): number {
  if (!(capacity > 0 && capacity <= 1)) throw new RangeError(`capacity ${capacity} outside (0, 1]`);
  return Math.min(blocks, Math.max(1, Math.round(capacity * blocks)));
}

/**
 * The blocks each client prunes this round (sorted ascending), for clients with the given capacities.
 * With every capacity 1 each client gets every block (no sampling).
 */
export function assignBlocks(blocks: number, capacities: readonly number[], seed: number): number[][] {
  const rand = seededRandom(seed);
  const perm = Array.from({ length: blocks }, (_, j) => j);
  for (let j = blocks - 1; j > 0; j--) {
    const r = Math.floor(rand() * (j + 1));
    [perm[j], perm[r]] = [perm[r]!, perm[j]!];
  }
  let cursor = Math.floor(rand() * blocks);
  return capacities.map((c) => {
    const k = blocksForCapacity(c, blocks);
    const mine: number[] = [];
    for (let t = 0; t < k; t++) mine.push(perm[(cursor + t) % blocks]!);
    cursor = (cursor + k) % blocks;
    return mine.sort((a, b) => a - b);
  });
}
