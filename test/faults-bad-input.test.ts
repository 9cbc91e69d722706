// Issue #8: every bad input gives exactly one clear stderr line and a non-zero exit, never a stack trace,
// leaves its inputs untouched and leaves no output behind (neither <out> nor <out>.partial).
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, renameSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema, TensorProtoSchema, TensorProto_DataType,
  ValueInfoProtoSchema,
} from 'onnx-buf';
import { OnnxModel, analyzeDecoder } from '../src/model/index.js';
import { checkMemory, estimatePeakMemory, forwardBatchSize, forwardShape, modelShape } from '../src/pipeline/memory.js';
import { copyStories, hashTree, oneLine, pool, runCli, STORIES, tempRoot, type CliResult, assertRefused, type RefusedCase } from './faults-helpers.js';

const root = tempRoot('sparsellm-faults-');
const fx = (name: string) => join(root, name);

/** A valid ONNX model that is no decoder LM: Y = X @ W. */
function singleMatMulModel(): Uint8Array {
  const tensorType = (dims: number[]) => ({
    value: { case: 'tensorType' as const, value: { elemType: TensorProto_DataType.FLOAT, shape: { dim: dims.map((d) => ({ value: { case: 'dimValue' as const, value: BigInt(d) } })) } } },
  });
  const graph = create(GraphProtoSchema, {
    name: 'one-matmul',
    node: [create(NodeProtoSchema, { name: '/proj/MatMul', opType: 'MatMul', input: ['X', 'W'], output: ['Y'] })],
    initializer: [create(TensorProtoSchema, { name: 'W', dims: [4n, 4n], dataType: TensorProto_DataType.FLOAT, floatData: Array.from({ length: 16 }, (_, k) => k / 16) })],
    input: [create(ValueInfoProtoSchema, { name: 'X', type: tensorType([1, 4]) })],
    output: [create(ValueInfoProtoSchema, { name: 'Y', type: tensorType([1, 4]) })],
  });
  return toBinary(ModelProtoSchema, create(ModelProtoSchema, { irVersion: 8n, opsetImport: [create(OperatorSetIdProtoSchema, { version: 17n })], graph }));
}

function buildFixtures(): void {
  const storiesOnnx = join(STORIES, 'onnx', 'model.onnx');
  writeFileSync(fx('truncated.onnx'), readFileSync(storiesOnnx).subarray(0, 5000));
  writeFileSync(fx('not-onnx.onnx'), 'this is a text file, not an ONNX protobuf\n');
  mkdirSync(fx('matmul'));
  writeFileSync(fx('matmul/model.onnx'), singleMatMulModel());
  copyStories(fx('neox'));
  writeFileSync(fx('neox/config.json'), readFileSync(fx('neox/config.json'), 'utf8').replace('"llama"', '"gpt_neox"'));
  mkdirSync(fx('no-data'));
  // stories260K written with its weights in external data, then the data file left out
  OnnxModel.load(storiesOnnx).save(fx('no-data/model.onnx'));
  renameSync(fx('no-data/model.onnx_data'), fx('no-data-weights.bin'));
  mkdirSync(fx('merged/onnx'), { recursive: true });
  copyFileSync(storiesOnnx, fx('merged/onnx/decoder_model_merged.onnx'));
  copyFileSync(join(STORIES, 'config.json'), fx('merged/config.json'));
  copyStories(fx('no-tokenizer'), ['tokenizer.model', 'tokenizer_config.json']);
  copyStories(fx('bad-tokenizer'));
  writeFileSync(fx('bad-tokenizer/tokenizer.json'), '{"version": "1.0", "model": {"type": "BPE", "vocab": ');
  writeFileSync(fx('empty.txt'), '');
  writeFileSync(fx('short.txt'), 'Once upon a time there was a cat.\n');
  writeFileSync(fx('a-file'), 'a regular file\n');
  mkdirSync(fx('existing-out'));
  writeFileSync(fx('existing-out/keep.txt'), 'user data\n');
  mkdirSync(fx('stale.partial/.checkpoint'), { recursive: true });
  mkdirSync(fx('complete-out'));
  // a copy of stories260K with one NaN in block 1's up_proj weight
  copyStories(fx('nan'));
  const m = OnnxModel.load(fx('nan/onnx/model.onnx'));
  const up = analyzeDecoder(m).blocks[1]!.linears.find((l) => l.role === 'up_proj')!;
  const w = m.readFloat32(up.weightName);
  w[7] = Number.NaN;
  m.writeFloat32(up.weightName, w);
  m.save(fx('nan/onnx/model.new.onnx'), { sizeThreshold: Number.MAX_SAFE_INTEGER });
  renameSync(fx('nan/onnx/model.new.onnx'), fx('nan/onnx/model.onnx'));
  // block 1's k_proj MatMul reads block 0's k_proj weight: one initializer, two linears
  copyStories(fx('tied'));
  const tied = OnnxModel.load(fx('tied/onnx/model.onnx'));
  const kProj = analyzeDecoder(tied).blocks.map((b) => b.linears.find((l) => l.role === 'k_proj')!);
  tied.graph.node.find((n) => n.name === kProj[1]!.matmulNode)!.input[1] = kProj[0]!.weightName;
  tied.save(fx('tied/onnx/model.new.onnx'), { sizeThreshold: Number.MAX_SAFE_INTEGER });
  renameSync(fx('tied/onnx/model.new.onnx'), fx('tied/onnx/model.onnx'));
  // a LLaMA config with biases on the FFN linears (mlp_bias), which SparseLLM's SwiGLU solver cannot carry
  copyStories(fx('mlp-bias'));
  writeFileSync(fx('mlp-bias/config.json'), readFileSync(fx('mlp-bias/config.json'), 'utf8').replace('"mlp_bias": false', '"mlp_bias": true'));
  // an eval model folder whose .onnx is cut short (tokenizer present)
  copyStories(fx('eval-truncated'));
  writeFileSync(fx('eval-truncated/onnx/model.onnx'), readFileSync(storiesOnnx).subarray(0, 5000));
}

type Case = RefusedCase;

const fast = ['--method', 'sparsegpt', '--calib', 'tinystories', '--nsamples', '4', '--seqlen', '64', '--quiet'];

function pruneCases(): Case[] {
  const p = (name: string, model: string, extra: string[], expect: RegExp, more: Partial<Case> = {}): Case => {
    const out = more.out ?? fx(`out-${name}`);
    return { name, args: ['prune', '--model', model, ...fast, ...extra, '--out', out], expect, out, ...more };
  };
  return [
    p('missing path', fx('does-not-exist'), [], /model not found: .*does-not-exist \(no such file or folder\)/),
    p('missing .onnx file', 'nowhere/model.onnx', [], /model not found: nowhere\/model\.onnx \(no such file or folder\)/),
    p('truncated onnx', fx('truncated.onnx'), [], /truncated\.onnx is not a valid ONNX model \(truncated or not ONNX/),
    p('not onnx', fx('not-onnx.onnx'), [], /not-onnx\.onnx is not a valid ONNX model/),
    p('not a decoder LM', fx('matmul'), [], /is not a decoder LM this tool understands/),
    p('unknown architecture', fx('neox'), [], /model_type "gpt_neox", which sparsellm does not support \(supported: opt, llama/),
    p('missing external data', fx('no-data'), [], /external data file missing: .*model\.onnx_data .*keep it beside the model/),
    p('merged decoder folder', fx('merged'), [], /holds only onnx\/decoder_model_merged\.onnx, an optimum merged decoder; export decoder_model\.onnx/),
    p('merged decoder file', fx('merged/onnx/decoder_model_merged.onnx'), [], /is an optimum merged decoder .*use decoder_model\.onnx or model\.onnx/),
    p('sparsity 1', STORIES, ['--sparsity', '1'], /--sparsity 1 is outside \[0, 1\)/),
    p('sparsity negative', STORIES, ['--sparsity', '-0.1'], /--sparsity -0\.1 is outside \[0, 1\)/),
    p('N >= M', STORIES, ['--prunen', '4', '--prunem', '4'], /--prunen 4 --prunem 4 is not a valid N:M pattern: need integers 0 < N < M/),
    p('M not dividing blocksize', STORIES, ['--prunen', '2', '--prunem', '3'], /--prunem 3 must divide SparseGPT's --blocksize 128/),
    p('M not dividing inputs', STORIES, ['--prunen', '2', '--prunem', '8'], /N:M with M = 8 needs every input size to be a multiple of 8, but block 0 down_proj has 172 inputs/),
    p('M not dividing inputs (magnitude)', STORIES, ['--method', 'magnitude', '--prunen', '1', '--prunem', '3'], /multiple of 3, but block 0 q_proj has 64 inputs/),
    p('unknown method', STORIES, ['--method', 'obs'], /Invalid values: Argument: method, Given: "obs", Choices: "magnitude", "wanda", "sparsegpt", "sparsellm"/),
    p('unknown dataset', STORIES, ['--calib', 'wikitext3'], /unknown dataset "wikitext3": use c4, .*tinystories, wikitext2 or the path of a \.txt \/ \.jsonl file/),
    p('missing tokenizer', fx('no-tokenizer'), [], /no tokenizer for .*put tokenizer\.json \(or vocab\.json \+ merges\.txt, or a SentencePiece tokenizer\.model\)/),
    p('corrupt tokenizer.json', fx('bad-tokenizer'), [], /bad-tokenizer\/tokenizer\.json is not valid JSON .*replace it with the model's original file/),
    p('empty calibration text', STORIES, ['--calib', fx('empty.txt')], /calibration text .*empty\.txt has \d+ tokens, fewer than one window of 64: use a longer text or a shorter --seqlen/),
    p('too-short calibration text', STORIES, ['--calib', fx('short.txt')], /calibration text .*short\.txt has \d+ tokens, fewer than one window of 64/),
    p('seqlen above positions', STORIES, ['--seqlen', '1000'], /--seqlen 1000 is longer than the model's 512 positions/),
    p('nsamples 0', STORIES, ['--nsamples', '0'], /--nsamples must be a positive integer, got 0/),
    { name: 'no --quiet: still one line', args: ['prune', '--model', STORIES, '--calib', fx('short.txt'), '--out', fx('out-verbose')], expect: /calibration text .*short\.txt has \d+ tokens, fewer than one window of 512/, out: fx('out-verbose') },
    p('output exists', STORIES, [], /output folder .*existing-out already exists: choose another --out or pass --force/, { out: fx('existing-out'), outExisted: true }),
    p('output under a file', STORIES, [], /cannot create --out .*a-file\/sub: .*a-file is a file, not a folder/, { out: fx('a-file/sub') }),
    p('output in /proc', STORIES, [], /cannot write to \/proc: choose an --out folder you can write to/, { out: '/proc/sparsellm-out' }),
    p('unknown registry name', 'opt-7b', [], /model "opt-7b" is neither a path nor a known name \(stories260K, opt-125m/),
    p('known name offline, not cached', 'opt-125m', [], /Xenova\/opt-125m is not in the Hugging Face cache \(.*empty-cache\/models--Xenova--opt-125m\) and HF_HUB_OFFLINE is set/, { env: { HF_HUB_CACHE: fx('empty-cache'), HF_HUB_OFFLINE: '1' } }),
    p('layers out of range', STORIES, ['--layers', '3-7'], /--layers "3-7" is out of range: the model has 5 blocks \(0-4\)/),
    p('layers not understood', STORIES, ['--layers', 'odd'], /--layers "odd" is not understood/),
    p('one initializer, two linears', fx('tied'), ['--method', 'magnitude'], /block 0 k_proj and block 1 k_proj share one weight initializer \(onnx::MatMul_\d+\), which cannot be pruned twice/),
    p('sparsellm with LLaMA FFN biases', fx('mlp-bias'), ['--method', 'sparsellm'], /sparsellm does not support LLaMA FFN biases \(mlp_bias in config\.json\): use --method sparsegpt/),
    p('NaN in input weights', fx('nan'), [], /input weight onnx::MatMul_\d+ \(block 1 up_proj\) contains NaN or Inf \(at element 7\)/),
    p('stale partial without --resume', STORIES, [], /stale\.partial holds an interrupted run: add --resume to continue it, or --force to start over/, { out: fx('stale'), partialExisted: true }),
    p('resume of a complete output', STORIES, ['--resume'], /nothing to resume: .*complete-out is already complete/, { out: fx('complete-out'), outExisted: true }),
    p('unknown eval dataset', STORIES, ['--eval', 'tinystories,nosuch'], /unknown dataset "nosuch"/),
    p('eval window above positions', STORIES, ['--eval', 'tinystories', '--eval-seqlen', '4096'], /--eval-seqlen 4096 is longer than the model's 512 positions/),
    p('memory estimate over --max-memory', STORIES, ['--max-memory', '0.001'], /estimated peak memory \d+ MB \(.*\) exceeds the --max-memory 0.001 GB: no --nsamples, --seqlen or --offload brings it under/),
  ];
}

function evalInspectCases(): Case[] {
  return [
    { name: 'eval: missing model', args: ['eval', '--model', fx('nothing-here'), '--dataset', 'tinystories'], expect: /model not found: .*nothing-here \(no such file or folder\)/ },
    { name: 'eval: unknown dataset', args: ['eval', '--model', STORIES, '--dataset', 'wiki'], expect: /unknown dataset "wiki"/ },
    { name: 'eval: window above positions', args: ['eval', '--model', STORIES, '--dataset', 'tinystories', '--seqlen', '5000'], expect: /--seqlen 5000 is longer than the model's 512 positions/ },
    { name: 'eval: text shorter than a window', args: ['eval', '--model', STORIES, '--dataset', fx('short.txt'), '--seqlen', '64'], expect: /short\.txt has \d+ tokens, fewer than one window of 64; use a shorter --seqlen or --per-document/ },
    { name: 'eval: truncated model', args: ['eval', '--model', fx('eval-truncated'), '--dataset', 'tinystories'], expect: /cannot load .*eval-truncated\/onnx\/model\.onnx in onnxruntime/ },
    { name: 'eval: bad --batch', args: ['eval', '--model', STORIES, '--batch', '0'], expect: /--batch must be a positive integer, got 0/ },
    { name: 'inspect: not ONNX', args: ['inspect', fx('not-onnx.onnx')], expect: /not-onnx\.onnx is not a valid ONNX model/ },
    { name: 'inspect: missing external data', args: ['inspect', fx('no-data')], expect: /external data file missing/ },
    { name: 'inspect: not a decoder LM', args: ['inspect', fx('matmul/model.onnx')], expect: /is not a decoder LM this tool understands/ },
    { name: 'inspect: missing path', args: ['inspect', fx('nothing-here')], expect: /model not found: .*nothing-here/ },
  ];
}

describe('bad inputs: one line, non-zero exit, inputs untouched, no output', () => {
  const results = new Map<string, CliResult>();
  const cases = [...pruneCases(), ...evalInspectCases()];
  let inputsBefore: Map<string, string>;
  let inputsAfter: Map<string, string>;

  before(async () => {
    buildFixtures();
    const inputs = [root, STORIES];
    inputsBefore = hashTree(...inputs);
    const done = await pool(cases.map((c) => () => runCli(c.args, c.env)), 4);
    cases.forEach((c, k) => results.set(c.name, done[k]!));
    inputsAfter = hashTree(...inputs);
  });

  for (const c of cases) {
    it(c.name, () => {
      assertRefused(c, results.get(c.name)!);
    });
  }

  it('leaves every input file as it was (content hashes, no files added or removed)', () => {
    // the fixtures root also holds the outputs that must not appear; compare the input files only
    const isOutput = (p: string) => /\/(out-|existing-out|stale\.partial|complete-out)/.test(p);
    const before = [...inputsBefore].filter(([p]) => !isOutput(p));
    const after = [...inputsAfter].filter(([p]) => !isOutput(p));
    assert.deepEqual(after, before);
    assert.equal(readFileSync(fx('existing-out/keep.txt'), 'utf8'), 'user data\n');
  });
});

describe('memory estimate', () => {
  const model = OnnxModel.load(join(STORIES, 'onnx', 'model.onnx'));
  const layout = analyzeDecoder(model);
  const shape = modelShape(model, layout);

  it('a normal run passes the check (estimate well below available memory)', () => {
    for (const method of ['wanda', 'sparsegpt', 'sparsellm'] as const) {
      const run = { nsamples: 8, seqlen: 128, offload: false };
      const estimate = (r: typeof run) => estimatePeakMemory(layout, r, shape, method);
      assert.ok(estimate(run).bytes > 0);
      assert.doesNotThrow(() => checkMemory(estimate, run));
      assert.doesNotThrow(() => checkMemory(estimate, run, 4));
    }
  });

  it('--allocation search adds its held-out states and the dense log-probs (held-out × seqlen × vocab floats)', () => {
    const run = { nsamples: 8, seqlen: 128, offload: false };
    const plain = estimatePeakMemory(layout, run, shape, 'sparsegpt');
    const search = estimatePeakMemory(layout, run, shape, 'sparsegpt', { heldOut: 8, vocab: 512 });
    // 8 × (one sequence's state + 128 × 512 × 4) + 2 × 128 × 512 × 4, the rest unchanged
    const state = shape.statePerSequence.a * 128 + shape.statePerSequence.b * 128 * 128;
    assert.equal(search.parts.search, 8 * (state + 128 * 512 * 4) + 2 * 128 * 512 * 4);
    assert.equal(search.bytes - plain.bytes, search.parts.search);
    assert.equal(plain.parts.search, 0);
  });

  it('a budget below the estimate stops with the figure and the knobs that fit, each with a value that does fit', () => {
    // activations dominate: 4096 sequences of 256 tokens; the budget admits the offloaded run
    const run = { nsamples: 4096, seqlen: 256, offload: false };
    const estimate = (r: typeof run) => estimatePeakMemory(layout, r, shape, 'sparsegpt');
    const limitGb = Math.round((estimate({ ...run, offload: true }).bytes / 2 ** 30) * 1.05 * 1000) / 1000;
    assert.throws(() => checkMemory(estimate, run, limitGb), (err: Error) => {
      assert.match(err.message, /^estimated peak memory [\d.]+ [GM]B \(.+\) exceeds the --max-memory [\d.]+ GB: use --offload DIR \(estimate \d+ MB\), or --nsamples \d+, or --seqlen \d+$/);
      const n = Number(/--nsamples (\d+)/.exec(err.message)![1]), s = Number(/--seqlen (\d+)/.exec(err.message)![1]);
      const limit = limitGb * 2 ** 30;
      // each suggestion fits, and one more does not (the largest value that fits)
      assert.ok(estimate({ ...run, nsamples: n }).bytes <= limit && estimate({ ...run, nsamples: n + 1 }).bytes > limit, `--nsamples ${n}`);
      assert.ok(estimate({ ...run, seqlen: s }).bytes <= limit && s < 256, `--seqlen ${s}`);
      assert.ok(estimate({ ...run, offload: true }).bytes <= limit);
      return true;
    });
  });

  it('a budget no knob can meet says so, with what one block needs', () => {
    const run = { nsamples: 8, seqlen: 128, offload: false };
    const estimate = (r: typeof run) => estimatePeakMemory(layout, r, shape, 'sparsegpt');
    assert.throws(() => checkMemory(estimate, run, 0.01), /exceeds the --max-memory 0.01 GB: no --nsamples, --seqlen or --offload brings it under \(1 sample of 1 token, offloaded, still needs \d+ MB: the runtime and one block\)$/);
  });

  it('offloaded, the activations part is one forward batch, not the whole calibration set', () => {
    const a = estimatePeakMemory(layout, { nsamples: 512, seqlen: 256, offload: false }, shape, 'sparsegpt').parts.activations!;
    const b = estimatePeakMemory(layout, { nsamples: 512, seqlen: 256, offload: true }, shape, 'sparsegpt').parts.activations!;
    // forward batch f (forwardBatchSize): (512 + f) states against (f + f)
    const f = forwardBatchSize(512, 256, forwardShape(layout, shape.heads));
    assert.ok(f > 1 && f < 512, `forward batch ${f}`);
    assert.ok(Math.abs(a / b - (512 + f) / (2 * f)) < 1e-9, `${a} / ${b}`);
  });
});
