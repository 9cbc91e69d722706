import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aggregateMatrix, expandMask, l0Average, plainMean } from '../src/federate/aggregate.js';
import { assignBlocks, blocksForCapacity } from '../src/federate/sampling.js';
import { mulberry32 } from './helpers.js';

/** A client's masked upload: W with a random fraction s of entries zeroed (its own mask). */
function maskedUpload(W: Float32Array, s: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const order = Array.from(W, (_, j) => j).sort(() => rand() - 0.5);
  const out = W.slice();
  for (const j of order.slice(0, Math.ceil(s * W.length))) out[j] = 0;
  return out;
}

function randomWeights(d: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length: d }, () => rand() * 2 - 1 || 0.5);
}

test('ℓ0 average (Eq. 4.18): each entry is the mean over the clients that kept it; 0/0 gives 0', () => {
  // hand-worked 2-client, 4-entry case
  const a = Float32Array.from([1, 0, 3, 0]);
  const b = Float32Array.from([3, 2, 0, 0]);
  const { weights, votes } = l0Average([a, b]);
  assert.deepEqual(Array.from(weights), [2, 2, 3, 0]);
  assert.deepEqual(Array.from(votes), [0, 1, 1, 2]);
  // plain mean of the same: kept weights shrink toward 0
  assert.deepEqual(Array.from(plainMean([a, b])), [2, 1, 1.5, 0]);
});

test('mask expansion (Eqs. 4.19–4.20): the global matrix is at ceil(s·d) zeros, most-voted pruned first', () => {
  // naive re-computation, written independently: rank the positions by (votes desc, |w| asc, index asc)
  const d = 997, s = 0.7;
  for (const clients of [2, 4, 8]) {
    const W = randomWeights(d, clients);
    // clients share part of the pattern (the small |w|) and differ elsewhere, as SparseGPT clients do
    const uploads = Array.from({ length: clients }, (_, i) => maskedUpload(W, s, 100 + i));
    const r = aggregateMatrix(uploads, 'fedspallm', s);
    assert.equal(r.zeros, Math.ceil(s * d), `${clients} clients: zeros at the target`);
    const votes = Array.from({ length: d }, (_, j) => uploads.filter((u) => u[j] === 0).length);
    const avg = Array.from({ length: d }, (_, j) => {
      const kept = uploads.filter((u) => u[j] !== 0);
      return kept.length ? kept.reduce((t, u) => t + u[j]!, 0) / kept.length : 0;
    });
    const order = Array.from({ length: d }, (_, j) => j).sort((x, y) => votes[y]! - votes[x]! || Math.abs(avg[x]!) - Math.abs(avg[y]!) || x - y);
    const pruned = new Set(order.slice(0, Math.ceil(s * d)));
    for (let j = 0; j < d; j++) {
      if (pruned.has(j)) assert.equal(r.weights[j], 0, `entry ${j} should be pruned`);
      else assert.ok(Math.abs(r.weights[j]! - avg[j]!) < 1e-6, `entry ${j}: ${r.weights[j]} vs ${avg[j]}`);
    }
    assert.equal(r.unanimous + r.expanded, r.zeros);
  }
});

test('mask expansion keeps a sparser-than-target intersection (k < 0 clamps to 0)', () => {
  const w = Float32Array.from([0, 0, 0, 5]);
  const votes = Uint32Array.from([2, 2, 2, 0]);
  assert.deepEqual(expandMask(w, votes, 2, 0.5), { unanimous: 3, expanded: 0 });
  assert.deepEqual(Array.from(w), [0, 0, 0, 5]);
});

test('identical clients: ℓ0 aggregation returns the common model unchanged; plain mean too', () => {
  const u = maskedUpload(randomWeights(500, 7), 0.8, 9);
  const r = aggregateMatrix([u, u.slice(), u.slice()], 'fedspallm', 0.8);
  assert.deepEqual(r.weights, u);
  assert.deepEqual(aggregateMatrix([u, u.slice()], 'mean', 0.8).weights, u);
});

test('plain mean is denser than the target when the masks differ', () => {
  const W = randomWeights(1000, 3);
  const uploads = [0, 1, 2, 3].map((i) => maskedUpload(W, 0.7, 50 + i));
  const mean = aggregateMatrix(uploads, 'mean', 0.7);
  assert.ok(mean.zeros < 0.7 * 1000 * 0.5, `mean keeps the union: ${mean.zeros} zeros`);
});

test('layer sampling: k_i follows capacity, no duplicates, full coverage when Σk_i ≥ m, equal selection rates', () => {
  assert.equal(blocksForCapacity(1, 12), 12);
  assert.equal(blocksForCapacity(0.25, 12), 3);
  assert.equal(blocksForCapacity(0.01, 12), 1);
  assert.throws(() => blocksForCapacity(0, 12), RangeError);
  const m = 10, capacities = [0.5, 0.3, 0.2];
  const hits = new Array<number>(m).fill(0);
  const rounds = 4000;
  for (let seed = 0; seed < rounds; seed++) {
    const a = assignBlocks(m, capacities, seed);
    assert.deepEqual(a.map((x) => x.length), [5, 3, 2]);
    for (const x of a) assert.equal(new Set(x).size, x.length);
    const covered = new Set(a.flat());
    assert.equal(covered.size, m, 'Σ k_i = m covers every block');
    for (const x of a[0]!) hits[x]!++;
  }
  // client 0 samples 5 of 10 blocks: each block with probability 1/2 (binomial sd over 4000 rounds ≈ 32)
  for (const h of hits) assert.ok(Math.abs(h - rounds / 2) < 6 * 32, `selection count ${h} vs ${rounds / 2}`);
  assert.deepEqual(assignBlocks(m, capacities, 42), assignBlocks(m, capacities, 42), 'replays from the seed');
});

test('standalone rule: the first upload unchanged (a copy), its zeros, positions every upload pruned, nothing expanded', () => {
  const a = Float32Array.from([0, 1, 0, 2]), b = Float32Array.from([0, 0, 3, 4]);
  const r = aggregateMatrix([a, b], 'standalone', 0.5);
  assert.deepEqual(r.weights, a);
  assert.notEqual(r.weights, a, 'a copy, not the upload itself');
  assert.deepEqual({ zeros: r.zeros, unanimous: r.unanimous, expanded: r.expanded }, { zeros: 2, unanimous: 1, expanded: 0 });
});
