// Tokenizers: tokenizer.json, vocab.json + merges.txt, SentencePiece tokenizer.model (ALGORITHMS.md §0.1: one BOS).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { UserError } from '../src/errors.js';
import { BUNDLED_STORIES, needsShared, shared } from './helpers.js';

const optDir = shared('models', 'tiny-random-opt');
const paragraph =
  ' = Robert Boulter = \n\n Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role ' +
  "on the television series The Bill in 2000 .\n\nIt's 3.5% cheaper — naïve café “quotes” 日本語 🤖  double  spaces\ttab end";

test('OPT tokenizer.json: "Hello world" → [2, 31414, 232] (one BOS </s>)', { skip: needsShared(optDir) }, () => {
  const tok = loadTokenizer(join(optDir, 'onnx', 'model.onnx'));
  assert.deepEqual(tok.encode('Hello world'), [2, 31414, 232]);
  assert.equal(tok.bosId, 2);
  assert.deepEqual(tok.encode(''), [2]);
});

test('vocab.json + merges.txt gives the same ids as tokenizer.json', { skip: needsShared(optDir, 'data/tokenizers/opt') }, () => {
  const fromJson = loadTokenizer(optDir).encode(paragraph);
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-bpe-'));
  copyFileSync(join(optDir, 'vocab.json'), join(dir, 'vocab.json'));
  copyFileSync(join(optDir, 'merges.txt'), join(dir, 'merges.txt'));
  const fromFiles = loadTokenizer(dir);
  assert.match(fromFiles.source, /merges/);
  assert.deepEqual(fromFiles.encode(paragraph), fromJson);
  // The metaseq OPT files in shared/data (no tokenizer_config.json) also give </s> = 2 as BOS.
  assert.deepEqual(loadTokenizer(shared('data', 'tokenizers', 'opt')).encode(paragraph), fromJson);
  // Slow-tokenizer rule: only configured specials are kept whole (`</s>`), PTB's literal `<unk>` is text.
  copyFileSync(join(optDir, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  const special = 'a </s> b <unk> c';
  const ids = loadTokenizer(optDir).encode(special);
  assert.deepEqual(loadTokenizer(dir).encode(special), ids);
  assert.equal(ids.filter((id) => id === 2).length, 2);
  assert.ok(!ids.includes(3));
});

test('SentencePiece (stories260K tokenizer.model): BOS 1, byte fallback, round trip', () => {
  const tok = loadTokenizer(BUNDLED_STORIES);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.vocabSize, 512);
  const s = 'Once upon a time, there was a little girl named Lily.\nShe loved to play!';
  const ids = tok.encode(s);
  // BOS 1, then the pieces of "Once upon a time," as this tokenizer.model encodes them (a regression value; the
  // decode round trip below checks that the ids are the text)
  assert.deepEqual(ids.slice(0, 8), [1, 403, 407, 261, 378, 432, 383, 286]);
  assert.ok(ids.includes(13)); // "\n" is not a piece: byte fallback <0x0A> = 3 + 10
  assert.equal(tok.decode!(ids), s);
});

test('SentencePiece encoder equals the HF tokenizer.json of the LLaMA 32k model', { skip: needsShared('data/tokenizers/llama') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-sp-'));
  copyFileSync(shared('data', 'tokenizers', 'llama', 'tokenizer.model'), join(dir, 'tokenizer.model'));
  const sp = loadTokenizer(dir);
  const hf = loadTokenizer(shared('data', 'tokenizers', 'llama'));
  assert.equal(sp.bosId, 1);
  assert.equal(hf.bosId, 1);
  assert.deepEqual(sp.encode(paragraph), hf.encode(paragraph));
});

test('missing or corrupt tokenizer files give a UserError naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-none-'));
  assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof UserError && /tokenizer\.json/.test(e.message));
  writeFileSync(join(dir, 'tokenizer.json'), '{ not json');
  assert.throws(() => loadTokenizer(dir), (e: unknown) => e instanceof UserError && e.message.includes(join(dir, 'tokenizer.json')));
  const dir2 = mkdtempSync(join(tmpdir(), 'sparsellm-badsp-'));
  writeFileSync(join(dir2, 'tokenizer.model'), Buffer.from([0x0a, 0xff, 0xff, 0xff]));
  assert.throws(() => loadTokenizer(dir2), (e: unknown) => e instanceof UserError && /tokenizer\.model/.test(e.message));
});
