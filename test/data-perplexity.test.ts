// Perplexity protocol (ALGORITHMS.md §0.4) and per-document scoring, on the real shared models.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { evalDocuments, evalTokens, resolveDataset } from '../src/data/datasets.js';
import { documentChunks, documentPerplexity, logitsAtTemperature, tokenNll, windowPerplexity, type LogitsProvider } from '../src/data/perplexity.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { FullModelSession, halfToFloat } from '../src/model/full-session.js';
import { resolveModelFile } from '../src/model/model-path.js';
import { BUNDLED_STORIES, needsShared, projectRoot, shared } from './helpers.js';

process.env.ORT_DISABLE_TELEMETRY = '1';

test('uniform logits give ppl = vocab; windows drop the remainder', async () => {
  const uniform: LogitsProvider = async (_ids, b, l) => new Float32Array(b * l * 7);
  const r = await windowPerplexity(Int32Array.from({ length: 50 }, (_, i) => i % 7), uniform, { seqlen: 8, batch: 3 });
  assert.equal(r.windows, 6);
  assert.equal(r.tokens, 48);
  assert.ok(Math.abs(r.perplexity - 7) < 1e-9);
});

test('per-window NLLs match a naive log-softmax, in text order, and average to meanNll', async () => {
  const V = 5, L = 6;
  // logits depend on the input token and the position, so every window scores differently
  const logitOf = (input: number, s: number, v: number) => Math.sin(1.3 * v + 0.7 * input) * (1 + 0.2 * s);
  const model: LogitsProvider = async (ids, b, l) => {
    const out = new Float32Array(b * l * V);
    for (let r = 0; r < b * l; r++) for (let v = 0; v < V; v++) out[r * V + v] = logitOf(Number(ids[r]), r % l, v);
    return out;
  };
  const ids = Int32Array.from({ length: 4 * L + 3 }, (_, i) => (i * i + 3 * i) % V);
  const r = await windowPerplexity(ids, model, { seqlen: L, batch: 3 });
  // independent: each window's mean over its L−1 shifted targets of −log softmax, in float64 from the float32 logits
  const naive = Array.from({ length: 4 }, (_, w) => {
    let sum = 0;
    for (let s = 0; s < L - 1; s++) {
      const row = Array.from({ length: V }, (_, v) => Math.fround(logitOf(ids[w * L + s]!, s, v)));
      const lse = Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
      sum += lse - row[ids[w * L + s + 1]!]!;
    }
    return sum / (L - 1);
  });
  assert.equal(r.windowNll!.length, 4);
  for (let w = 0; w < 4; w++) assert.ok(Math.abs(r.windowNll![w]! - naive[w]!) < 1e-5, `window ${w}: ${r.windowNll![w]} vs ${naive[w]}`);
  assert.ok(new Set(naive.map((x) => x.toFixed(6))).size === 4, 'the windows must differ for the order to be checked');
  assert.ok(Math.abs(r.meanNll - naive.reduce((a, b) => a + b, 0) / 4) < 1e-5);
});

test('logits at temperature T: the NLL of softmax(z / T), checked by hand; T = 1 is the identity', () => {
  const z = Float32Array.from([2, -1, 0.5, 3]);
  for (const T of [0.5, 1, 2, 10]) {
    // independent: −log(e^{z_t/T} / Σ e^{z_v/T}) in float64
    const lse = Math.log([...z].reduce((a, x) => a + Math.exp(x / T), 0));
    for (let t = 0; t < z.length; t++) assert.ok(Math.abs(tokenNll(logitsAtTemperature(z, T), 0, 4, t) - (lse - z[t]! / T)) < 1e-6, `T ${T}, token ${t}`);
  }
  assert.deepEqual(logitsAtTemperature(z, 1), z);
  // a large T flattens the distribution towards uniform: NLL → log 4
  assert.ok(Math.abs(tokenNll(logitsAtTemperature(z, 1e6), 0, 4, 1) - Math.log(4)) < 1e-5);
});

test('document chunks overlap by one token so each token after BOS is predicted once', () => {
  const chunks = documentChunks([[1, 2, 3, 4, 5, 6, 7], [1, 9], [1]], 4);
  assert.deepEqual(chunks, [[1, 2, 3, 4], [4, 5, 6, 7], [1, 9]]);
});

test('fp16 logits are widened exactly', () => {
  assert.deepEqual(Array.from(halfToFloat(Uint16Array.from([0x3c00, 0xc000, 0x0001, 0x7c00, 0x3555]))),
    [1, -2, 2 ** -24, Infinity, Math.fround(0.333251953125)]);
});

test('stories260K per document on the TinyStories sample: 1,804 predicted tokens, ppl ≈ 3.548', async () => {
  const dir = BUNDLED_STORIES;
  const session = await FullModelSession.open(resolveModelFile(dir), { threads: 2 });
  assert.equal(session.maxPositions, 512); // config.json max_position_embeddings
  const tok = loadTokenizer(dir);
  const docs = (await evalDocuments(resolveDataset(join(projectRoot, 'calibration', 'data', 'tinystories_sample.txt')))).map((d) => tok.encode(d));
  assert.equal(docs.length, 5);
  const model: LogitsProvider = (ids, b, l) => session.logits(ids, b, l);
  let calls = 0;
  const one = await documentPerplexity(docs, model, { seqlen: 512, batch: 1, onProgress: () => calls++ });
  const batched = await documentPerplexity(docs, model, { seqlen: 512, batch: 5 });
  await session.release();
  assert.equal(one.predictedTokens, 1804); // 5 stories: every token after each BOS (README results table)
  assert.ok(Math.abs(one.perplexity - 3.548) / 3.548 < 0.02, `ppl ${one.perplexity}`);
  assert.ok(Math.abs(batched.perplexity - one.perplexity) < 1e-4, 'right padding must not change the result');
  assert.equal(calls, 5);
});

test('tiny-random-opt on PTB test (seqlen 128): full token count, finite ppl near the vocabulary size', { skip: needsShared('models/tiny-random-opt', 'data/ptb') }, async () => {
  const dir = shared('models', 'tiny-random-opt');
  const session = await FullModelSession.open(resolveModelFile(dir), { threads: 2 });
  assert.equal(session.vocabSize, 50272); // OPT's vocabulary (config.json vocab_size)
  const ids = await evalTokens(resolveDataset('ptb'), loadTokenizer(dir), 128, shared('data'));
  assert.equal(ids.length, 97722); // PTB test, OPT tokenizer: the reference's token count (763 windows of 128)
  // 763 windows would take minutes on 2 cores; the first 12 windows show the behaviour.
  const r = await windowPerplexity(ids, (x, b, l) => session.logits(x, b, l), { seqlen: 128, batch: 4, maxWindows: 12 });
  await session.release();
  assert.equal(r.windows, 12);
  assert.ok(Number.isFinite(r.perplexity) && r.perplexity > 50272 * 0.8 && r.perplexity < 50272 * 1.25, `ppl ${r.perplexity}`);
});
