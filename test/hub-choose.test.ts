// Which files of a repository sparsellm picks (src/hub/choose.ts), on the listings of the real repositories
// that models/registry.json records and on the layouts transformers.js / optimum produce.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chooseModelFiles, QUANTIZED_SUFFIXES } from '../src/hub/choose.js';
import { loadRegistry } from '../src/hub/registry.js';

const reg = loadRegistry();
const files = (repo: string) => reg.repos[repo]!.files;

test('Xenova layout: the plain decoder_model.onnx, no merged, with-past or quantized file', () => {
  const c = chooseModelFiles('Xenova/opt-125m', files('Xenova/opt-125m'));
  assert.equal(c.kind, 'onnx');
  assert.equal(c.entry, 'onnx/decoder_model.onnx');
  assert.deepEqual(c.required, ['onnx/decoder_model.onnx']);
  for (const f of ['config.json', 'tokenizer.json', 'vocab.json', 'merges.txt']) assert.ok(c.optional.includes(f), f);
  assert.ok(![...c.required, ...c.optional].some((f) => /quantized|merged|with_past|quantize_config/.test(f)));
});

test('onnx-community layout: onnx/model.onnx with its external data, not the _fp16 data', () => {
  const c = chooseModelFiles('onnx-community/Llama-3.2-1B', files('onnx-community/Llama-3.2-1B'));
  assert.equal(c.entry, 'onnx/model.onnx');
  assert.deepEqual(c.required, ['onnx/model.onnx', 'onnx/model.onnx_data']);
});

test('model.onnx beats decoder_model.onnx; a checkpoint is taken only without a plain ONNX decoder', () => {
  assert.equal(chooseModelFiles('r', ['config.json', 'onnx/decoder_model.onnx', 'onnx/model.onnx', 'model.safetensors']).entry, 'onnx/model.onnx');
  assert.equal(chooseModelFiles('r', ['config.json', 'decoder_model.onnx', 'model.safetensors']).entry, 'decoder_model.onnx');
  const c = chooseModelFiles('r', ['config.json', 'onnx/decoder_model_merged.onnx', 'onnx/model_quantized.onnx', 'model.safetensors']);
  assert.equal(c.kind, 'checkpoint');
});

test('checkpoint repos: config + safetensors (+ index), never the .bin copies or original/', () => {
  const l2 = chooseModelFiles('meta-llama/Llama-2-7b-hf', files('meta-llama/Llama-2-7b-hf'));
  assert.equal(l2.kind, 'checkpoint');
  assert.deepEqual(l2.required, ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  assert.ok(l2.optional.includes('tokenizer.model') && !l2.optional.some((f) => f.endsWith('.bin')));
  const l32 = chooseModelFiles('meta-llama/Llama-3.2-1B', [...files('meta-llama/Llama-3.2-1B'), 'original/consolidated.00.pth', 'original/params.json']);
  assert.deepEqual(l32.required, ['config.json', 'model.safetensors']);
  assert.ok(!l32.optional.some((f) => f.startsWith('original/')));
});

test('every registry repository gets a choice made of its own files; .bin only when it has no safetensors', () => {
  for (const [repo, facts] of Object.entries(reg.repos)) {
    const listing = new Set(facts.files);
    const c = chooseModelFiles(repo, facts.files);
    assert.equal(c.kind, facts.format, repo);
    for (const f of [...c.required, ...c.optional]) assert.ok(listing.has(f), `${repo}: ${f}`);
    if (c.kind !== 'checkpoint') continue;
    const hasSafetensors = facts.files.some((f) => f.endsWith('.safetensors'));
    // safetensors preferred; the OPT checkpoints (pytorch_model.bin only) get the .bin files and, when sharded, their index
    assert.equal(c.required.some((f) => f.endsWith('.bin')), !hasSafetensors, repo);
    const bins = facts.files.filter((f) => /^pytorch_model.*\.bin$/.test(f));
    if (!hasSafetensors) assert.deepEqual(c.required, ['config.json', ...bins, ...(bins.length > 1 ? ['pytorch_model.bin.index.json'] : [])], repo);
  }
  for (const entry of Object.values(reg.models)) assert.ok(entry.bundled || reg.repos[entry.repo!], `${entry.repo} has no files in registry.json`);
});

test('--model-file: a quantized variant is refused, naming the file that works', () => {
  const listing = files('onnx-community/Llama-3.2-1B');
  for (const suffix of QUANTIZED_SUFFIXES) {
    const asked = `onnx/model${suffix}.onnx`;
    assert.ok(listing.includes(asked), asked);
    assert.throws(() => chooseModelFiles('onnx-community/Llama-3.2-1B', listing, asked), /is a quantized export: pruning needs the full-precision weights, use onnx\/model\.onnx/);
  }
  assert.throws(() => chooseModelFiles('Xenova/opt-125m', files('Xenova/opt-125m'), 'onnx/decoder_model_merged_quantized.onnx'), /quantized export.*use onnx\/decoder_model\.onnx/);
});

test('--model-file: _fp16 when asked, with its own data file; a merged decoder gives way to its sibling', () => {
  const fp16 = chooseModelFiles('onnx-community/Llama-3.2-1B', files('onnx-community/Llama-3.2-1B'), 'onnx/model_fp16.onnx');
  assert.deepEqual(fp16.required, ['onnx/model_fp16.onnx', 'onnx/model_fp16.onnx_data']);
  const merged = chooseModelFiles('Xenova/opt-125m', files('Xenova/opt-125m'), 'onnx/decoder_model_merged.onnx');
  assert.equal(merged.entry, 'onnx/decoder_model.onnx');
  assert.match(merged.notes[0]!, /merged decoder.*non-merged sibling onnx\/decoder_model\.onnx/);
  assert.throws(() => chooseModelFiles('r', ['onnx/decoder_model_merged.onnx'], 'onnx/decoder_model_merged.onnx'), /merged decoder.*no non-merged onnx\/decoder_model\.onnx/);
  assert.throws(() => chooseModelFiles('r', ['onnx/model.onnx'], 'onnx/nope.onnx'), /--model-file onnx\/nope\.onnx: r has no such file \(its ONNX files are onnx\/model\.onnx\)/);
});

test('repos sparsellm cannot use: fp16 only, merged only, nothing', () => {
  assert.throws(() => chooseModelFiles('r', ['config.json', 'onnx/model_fp16.onnx', 'onnx/model_q4.onnx']), /only onnx\/model_fp16\.onnx: pass --model-file onnx\/model_fp16\.onnx/);
  assert.throws(() => chooseModelFiles('r', ['config.json', 'onnx/decoder_model_merged.onnx']), /no ONNX decoder sparsellm can prune.*it has onnx\/decoder_model_merged\.onnx/);
  assert.throws(() => chooseModelFiles('r', ['README.md']), /neither an ONNX decoder .* nor a checkpoint/);
});
