// CPython `random` compatibility (ALGORITHMS.md §0.2/§0.3). Expected values were printed by CPython 3.11.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PythonRandom } from '../src/data/python-random.js';

test('seed(0) then randint(0, 284951) ×3 matches CPython', () => {
  const r = new PythonRandom(0);
  assert.deepEqual([r.randint(0, 284951), r.randint(0, 284951), r.randint(0, 284951)], [201979, 220500, 21225]);
});

test('getrandbits for k ≤ 32 and k > 32 (words least significant first)', () => {
  const r = new PythonRandom(0);
  // CPython seeds through init_by_array([0]) (not init_genrand(0), which would give 2357136044 as numpy does).
  assert.equal(r.getrandbits(32), 3626764237n);
  assert.equal(r.getrandbits(64), 13981790821421117374n);
  assert.equal(r.getrandbits(5), 28n);
});

test('multi-word seeds, negative seeds and a range above 2^32', () => {
  const r = new PythonRandom(12345678901234567890n);
  assert.equal(r.randint(0, 10 ** 12), 947091906090);
  assert.equal(r.randint(5, 7), 7);
  assert.equal(new PythonRandom(-3).getrandbits(32), 1022050301n);
  assert.equal(new PythonRandom(2 ** 32).getrandbits(32), 485306839n);
});

test('seed(42) small ranges and state regeneration after 624 words', () => {
  const r = new PythonRandom(42);
  assert.deepEqual(Array.from({ length: 5 }, () => r.randint(0, 1000)), [654, 114, 25, 759, 281]);
  const s = new PythonRandom(0);
  for (let i = 0; i < 700; i++) s.getrandbits(32);
  assert.equal(s.getrandbits(32), 2140787315n);
});
