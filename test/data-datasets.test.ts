// Dataset text construction, offline behaviour and calibration sampling (ALGORITHMS.md §0.2/§0.3).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { calibrationWindows, prepareCalibration } from '../src/data/calibration.js';
import { evalTokens, resolveDataset, splitRows, splitText } from '../src/data/datasets.js';
import { PythonRandom } from '../src/data/python-random.js';
import { loadTokenizer, type TextTokenizer } from '../src/data/tokenizer.js';
import { UserError } from '../src/errors.js';
import { BUNDLED_STORIES, needsShared, shared } from './helpers.js';

const dataDir = shared('data');
const optDir = shared('models', 'tiny-random-opt');
const optTokenizer = () => loadTokenizer(optDir);

/** Toy tokenizer (also written in Python to derive the expected draws): BOS 1, one id per whitespace word. */
const wordTok: TextTokenizer = {
  bosId: 1,
  vocabSize: 100,
  source: 'test',
  encode: (t) => [1, ...t.split(/\s+/).filter(Boolean).map((w) => (w.length % 97) + 3)],
};

test('wikitext2 test: HF rows reproduced, "\\n\\n"-joined, 287,645 OPT tokens (≈287.6k)', { skip: needsShared('data/wikitext2', optDir) }, async () => {
  const def = resolveDataset('wikitext2');
  const rows = await splitRows(def, 'test', dataDir);
  assert.equal(rows.length, 4358); // rows of HF wikitext-2-raw-v1 test
  assert.deepEqual(rows.slice(0, 3), ['', ' = Robert Boulter = \n', '']);
  const ids = await evalTokens(def, optTokenizer(), 2048, dataDir);
  assert.equal(ids.length, 287645); // the SparseGPT/SparseLLM reference's OPT token count for WikiText-2 test
  assert.equal(ids[0], 2);
  assert.equal(Math.floor(ids.length / 2048), 140); // the 140 windows of 2048 the SparseGPT/SparseLLM reference scores on OPT
});

test('ptb test: stripped lines joined with " "', { skip: needsShared('data/ptb') }, async () => {
  const def = resolveDataset('ptb');
  const rows = await splitRows(def, 'test', dataDir);
  assert.equal(rows.length, 3761); // lines of ptb.test.txt
  assert.equal(rows[0], "no it was n't black monday");
  const text = await splitText(def, 'test', dataDir);
  assert.ok(text.startsWith("no it was n't black monday but while"));
  assert.equal(text.split(/\s+/).length, 78669); // words of ptb.test.txt (wc -w)
});

test('wikitext2 train is missing offline: one-line UserError naming the file and where to put it', { skip: needsShared('data/wikitext2') }, async () => {
  const saved = { HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE, HF_HOME: process.env.HF_HOME };
  process.env.HF_HUB_OFFLINE = '1';
  process.env.HF_HOME = mkdtempSync(join(tmpdir(), 'sparsellm-hf-'));
  try {
    await assert.rejects(splitText(resolveDataset('wikitext2'), 'train', dataDir), (e: unknown) =>
      e instanceof UserError && /wiki\.train\.raw/.test(e.message) && /offline/.test(e.message) && !e.message.includes('\n'));
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
});

test('unknown dataset names and unsupported files are UserErrors', () => {
  assert.throws(() => resolveDataset('wikitext3'), (e: unknown) => e instanceof UserError && /wikitext2/.test(e.message));
  assert.throws(() => resolveDataset(join(BUNDLED_STORIES, 'onnx', 'model.onnx')), UserError);
});

test('text calibration: windows are ids[i:i+seqlen] with i = randint(0, ntok-seqlen-1) after seed(seed)', { skip: needsShared('data/ptb', optDir) }, async () => {
  const opt = optTokenizer();
  const def = resolveDataset('ptb');
  const all = opt.encode(await splitText(def, 'test', dataDir));
  const testDef = { ...def, calibrationSplit: 'test' };
  const rng = new PythonRandom(7);
  let n = 0;
  for await (const w of calibrationWindows(testDef, opt, { nsamples: 3, seqlen: 64, seed: 7, dataDir })) {
    const i = rng.randint(0, all.length - 64 - 1);
    assert.ok(w instanceof BigInt64Array && w.length === 64);
    assert.deepEqual(Array.from(w, Number), all.slice(i, i + 64));
    n++;
  }
  assert.equal(n, 3);
});

test('text shorter than one window: UserError with the token count', async () => {
  const stories = loadTokenizer(BUNDLED_STORIES);
  const src = await prepareCalibration('tinystories', stories);
  assert.ok(src.tokenCount! > 1000 && src.tokenCount! < 2500);
  await assert.rejects(async () => {
    for await (const _ of src.windows(1, 4096)) void _;
  }, (e: unknown) => e instanceof UserError && new RegExp(`has ${src.tokenCount} tokens, fewer than one window of 4096`).test(e.message));
});

test('c4 calibration: document draws with rejection (> seqlen tokens) match CPython', { skip: needsShared('data/c4') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-c4-'));
  mkdirSync(join(dir, 'c4'));
  const fixtures = ['01', '02', '03'].map((k) =>
    gunzipSync(readFileSync(join(dataDir, 'c4', 'olmo_test_fixtures', `c4-sample.${k}.json.gz`))).toString('utf8').trimEnd());
  writeFileSync(join(dir, 'c4', 'c4-train.00000-of-01024.json.gz'), gzipSync(fixtures.join('\n') + '\n'));
  const got: number[][] = [];
  for await (const w of calibrationWindows('c4', wordTok, { nsamples: 4, seqlen: 300, seed: 3, dataDir: dir })) {
    got.push(Array.from(w.subarray(0, 5), Number));
  }
  // From CPython: random.seed(3); draws (doc, start) = (18,139) (11,60) (18,16) (19,1), with rejections.
  assert.deepEqual(got, [[8, 5, 6, 10, 5], [12, 5, 17, 5, 16], [8, 5, 10, 5, 5], [6, 7, 8, 7, 11]]);
});

test('c4 validation: first 1100 documents joined with " ", cut to 256 windows', { skip: needsShared('data/c4') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-c4v-'));
  mkdirSync(join(dir, 'c4'));
  const five = readFileSync(join(dataDir, 'c4', 'c4-train.00000-of-01024.first5.json'));
  writeFileSync(join(dir, 'c4', 'c4-validation.00000-of-00008.json.gz'), gzipSync(five));
  const def = resolveDataset('c4');
  const docs = (await splitRows(def, 'validation', dir));
  assert.equal(docs.length, 5);
  const full = wordTok.encode(docs.join(' '));
  const ids = await evalTokens(def, wordTok, 2, dir);
  assert.ok(full.length > 512);
  assert.deepEqual(Array.from(ids), full.slice(0, 256 * 2));
});
