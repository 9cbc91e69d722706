// Shared fixtures for the model-layer tests: model paths, token batches, and whole-graph ORT
// reference runs (optionally with intermediate tensors tapped as extra graph outputs).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, ValueInfoProtoSchema } from 'onnx-buf';
import { OnnxModel, sessionOptions, toFloat32 } from '../src/model/index.js';
import { BUNDLED_STORIES, mulberry32, shared } from './helpers.js';

process.env.ORT_DISABLE_TELEMETRY = '1';

/** Test models: stories260K ships with the repository; the others are in ../shared (guard with needsShared). */
export const MODELS = {
  stories: join(BUNDLED_STORIES, 'onnx', 'model.onnx'),
  tinyOpt: shared('models/tiny-random-opt/onnx/model.onnx'),
  wikitextOpt: shared('models/tiny-wikitext-opt/onnx/model.onnx'),
  genai: shared('models-src/onnx-layout-ref-tiny-random-llama/model.onnx'),
};

const tempDirs: string[] = [];
process.on('exit', () => tempDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A fresh temporary folder, removed when the test process exits. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-model-'));
  tempDirs.push(dir);
  return dir;
}

export function tokenBatch(batch: number, seqlen: number, vocab: number, seed = 1): BigInt64Array {
  const rand = mulberry32(seed);
  return BigInt64Array.from({ length: batch * seqlen }, () => BigInt(Math.floor(rand() * vocab)));
}

/**
 * Run the whole model file in one ORT session (external data loaded from memory), with
 * `taps` appended to graph.output. Returns logits (float32) and the tapped tensors (float32).
 */
export async function runFullModel(path: string, ids: BigInt64Array, batch: number, seqlen: number, taps: string[] = []) {
  const model = OnnxModel.load(path);
  const proto = fromBinary(ModelProtoSchema, readFileSync(path));
  for (const name of taps) proto.graph!.output.push(create(ValueInfoProtoSchema, { name }));
  const externalData = model.externalDataFiles.map((f) => ({ path: f, data: readFileSync(join(model.dir, f)) }));
  const session = await ort.InferenceSession.create(toBinary(ModelProtoSchema, proto), { ...sessionOptions(), externalData });
  const out = await session.run(plainFeeds(session, ids, batch, seqlen), ['logits', ...taps]);
  await session.release();
  return { logits: toFloat32(out.logits!), taps: new Map(taps.map((t) => [t, toFloat32(out[t]!)])) };
}

/** Run a model file as ORT loads it from disk (path-relative external data). */
export async function runModelFile(path: string, ids: BigInt64Array, batch: number, seqlen: number): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(path, sessionOptions());
  const out = await session.run(plainFeeds(session, ids, batch, seqlen), ['logits']);
  await session.release();
  return toFloat32(out.logits!);
}

/** Reference feeds built independently of the code under test: ones mask, arange positions, empty past. */
function plainFeeds(session: ort.InferenceSession, ids: BigInt64Array, batch: number, seqlen: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const meta of session.inputMetadata) {
    const name = meta.name;
    if (name === 'input_ids') feeds[name] = new ort.Tensor('int64', ids, [batch, seqlen]);
    else if (name === 'attention_mask') feeds[name] = new ort.Tensor('int64', new BigInt64Array(batch * seqlen).fill(1n), [batch, seqlen]);
    else if (name === 'position_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from({ length: batch * seqlen }, (_, i) => BigInt(i % seqlen)), [batch, seqlen]);
    else {
      if (!meta.isTensor) throw new Error(`unexpected input ${name}`);
      const dims = meta.shape.map((d, k) => (k === 0 ? batch : typeof d === 'number' ? d : 0));
      feeds[name] = meta.type === 'float16' ? new ort.Tensor('float16', new Uint16Array(0), dims) : new ort.Tensor('float32', new Float32Array(0), dims);
    }
  }
  return feeds;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Greedy generation of `maxNewTokens` tokens after `prompt` in transformers.js, from the ONNX model folder `dir`. */
export async function transformersGreedy(dir: string, prompt: bigint[], maxNewTokens: number): Promise<bigint[]> {
  const { env, AutoModelForCausalLM, Tensor } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.useFSCache = false;
  const model = await AutoModelForCausalLM.from_pretrained(dir, { dtype: 'fp32' });
  const ids = (await model.generate({
    input_ids: new Tensor('int64', BigInt64Array.from(prompt), [1, prompt.length]),
    attention_mask: new Tensor('int64', BigInt64Array.from(prompt.map(() => 1n)), [1, prompt.length]),
    max_new_tokens: maxNewTokens,
    do_sample: false,
  }) as { tolist(): bigint[][] }).tolist()[0]!;
  await (model as unknown as { dispose(): Promise<void> }).dispose();
  return ids;
}

/** Prefill logits of a converted model folder (onnx/model.onnx) for one sequence, with empty past tensors; graph optimisations off. */
export async function onnxLogits(dir: string, ids: number[], withPositions: boolean): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(join(dir, 'onnx', 'model.onnx'), { graphOptimizationLevel: 'disabled' });
  const S = ids.length;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, S]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(S).fill(1n), [1, S]),
  };
  if (withPositions) feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from({ length: S }, (_, i) => BigInt(i)), [1, S]);
  for (const m of s.inputMetadata) if (m.name.startsWith('past_') && m.isTensor) feeds[m.name] = new ort.Tensor('float32', new Float32Array(0), [1, m.shape[1] as number, 0, m.shape[3] as number]);
  const out = (await s.run(feeds, ['logits'])).logits!.data as Float32Array;
  await s.release();
  return out;
}
