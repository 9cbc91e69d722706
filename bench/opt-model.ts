/**
 * Generates OPT-shaped decoder models with random weights for the benchmark, in the layout of the optimum/HF OPT
 * export (the one of /work/shared/models/tiny-random-opt): node scopes `/model/decoder/layers.<i>/self_attn/q_proj/MatMul`,
 * `/model/decoder/layers.<i>/fc1/MatMul`, MatMul weights as anonymous [in, out] initializers (`onnx::MatMul_<n>`), biases
 * through a following Add, pre-LayerNorm, learned positions with offset 2 (cumsum of the mask), additive causal mask,
 * inputs input_ids / attention_mask, output logits. No past key/values (the pipeline does not need them).
 *
 * The graph is written from scratch rather than by rewriting tiny-random-opt, because changing the hidden size changes
 * the head-count / head-dim reshape constants and the attention scale in every block. Large weights go to an
 * external data file (`model.onnx_data`), as in real exports. The folder gets config.json (model_type opt) and the
 * stories260K SentencePiece tokenizer (vocab 512), so the embedded `tinystories` calibration set works.
 */
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema, AttributeProto_AttributeType, GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema, TensorProtoSchema, TensorProto_DataLocation, TensorProto_DataType, TensorShapeProto_DimensionSchema,
  ValueInfoProtoSchema, type AttributeProto, type NodeProto, type TensorProto,
} from 'onnx-buf';
import { float32ToHalfArray } from '../src/model/float16.js';

export interface OptShape {
  hidden: number;
  layers: number;
  /** default 4 × hidden */
  ffn?: number;
  /** default hidden / 64 (at least 4 heads below 256) */
  heads?: number;
  /** default 512 (the stories260K tokenizer) */
  vocab?: number;
  /** default 2048 */
  maxPositions?: number;
  seed?: number;
  /** storage and compute type of every float tensor (default float32); float16 as real-size exports ship */
  dtype?: 'float32' | 'float16';
}

export interface GeneratedModel {
  dir: string;
  shape: Required<OptShape>;
  /** weights of the decoder blocks' linears (the prunable parameters) */
  linearParams: number;
  params: number;
}

const DT = TensorProto_DataType;
// the bundled stories260K's SentencePiece tokenizer (vocab 512), so generated models stay small
const TOKENIZER_FROM = join(dirname(fileURLToPath(import.meta.url)), '..', 'models', 'stories260K');

export function fillShape(s: OptShape): Required<OptShape> {
  const heads = s.heads ?? (s.hidden >= 256 ? s.hidden / 64 : 4);
  if (s.hidden % heads !== 0) throw new Error(`hidden ${s.hidden} is not a multiple of ${heads} heads`);
  return { hidden: s.hidden, layers: s.layers, ffn: s.ffn ?? 4 * s.hidden, heads, vocab: s.vocab ?? 512, maxPositions: s.maxPositions ?? 2048, seed: s.seed ?? 1, dtype: s.dtype ?? 'float32' };
}

export function modelName(s: OptShape): string {
  const f = fillShape(s);
  return `opt-h${f.hidden}-l${f.layers}-p${f.maxPositions}${f.ffn !== 4 * f.hidden ? `-f${f.ffn}` : ''}${f.dtype === 'float16' ? '-fp16' : ''}`;
}

/** Deterministic N(0, std²) values (mulberry32 + Box–Muller). */
export function normal(n: number, seed: number, std: number): Float32Array {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u())) * std, th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** Writes the model folder (skipped when it already exists with a model). Returns its description. */
export function generateOptModel(root: string, shapeIn: OptShape): GeneratedModel {
  const s = fillShape(shapeIn);
  const dir = join(root, modelName(s));
  const onnxDir = join(dir, 'onnx');
  const d = s.hidden, f = s.ffn, H = s.heads, hd = d / H;
  const linearParams = s.layers * (4 * d * d + 2 * d * f);
  const params = linearParams + s.layers * (4 * d + 5 * d + f) + s.vocab * d * 2 + (s.maxPositions + 2) * d + 2 * d;
  const result = { dir, shape: s, linearParams, params };
  if (existsSync(join(onnxDir, 'model.onnx')) && existsSync(join(dir, 'config.json'))) return result;
  mkdirSync(onnxDir, { recursive: true });

  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const dataName = 'model.onnx_data';
  const fd = openSync(join(onnxDir, dataName), 'w');
  let offset = 0, seed = s.seed * 1000, anon = 100;

  const fp16 = s.dtype === 'float16';
  const FT = fp16 ? DT.FLOAT16 : DT.FLOAT;
  const floatInit = (name: string, dims: number[], values32: Float32Array) => {
    const values = fp16 ? float32ToHalfArray(values32) : values32;
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    if (bytes.byteLength < 1024) {
      inits.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: FT, rawData: bytes.slice() }));
      return name;
    }
    offset = Math.ceil(offset / 64) * 64;
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, offset + done);
    inits.push(create(TensorProtoSchema, {
      name, dims: dims.map(BigInt), dataType: FT, dataLocation: TensorProto_DataLocation.EXTERNAL,
      externalData: [
        create(StringStringEntryProtoSchema, { key: 'location', value: dataName }),
        create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
        create(StringStringEntryProtoSchema, { key: 'length', value: String(bytes.byteLength) }),
      ],
    }));
    offset += bytes.byteLength;
    return name;
  };
  const intInit = (name: string, values: number[], scalar = false) => {
    const a = BigInt64Array.from(values.map(BigInt));
    inits.push(create(TensorProtoSchema, { name, dims: scalar ? [] : [BigInt(values.length)], dataType: DT.INT64, rawData: new Uint8Array(a.buffer) }));
    return name;
  };
  const scalarF = (name: string, v: number) => {
    const raw = new Uint8Array((fp16 ? float32ToHalfArray(Float32Array.of(v)) : Float32Array.of(v)).buffer as ArrayBuffer);
    inits.push(create(TensorProtoSchema, { name, dims: [], dataType: FT, rawData: raw.slice() }));
    return name;
  };
  const attrI = (name: string, i: number): AttributeProto => create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(i) });
  const attrF = (name: string, v: number): AttributeProto => create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOAT, f: v });
  const attrInts = (name: string, v: number[]): AttributeProto => create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: v.map(BigInt) });
  /** Adds a node `<scope>/<op>[_k]` and returns its output name. */
  const used = new Map<string, number>();
  const node = (scope: string, op: string, inputs: string[], attribute: AttributeProto[] = [], output?: string) => {
    const base = `${scope}/${op}`;
    const k = used.get(base) ?? 0;
    used.set(base, k + 1);
    const name = k ? `${base}_${k}` : base;
    const out = output ?? `${name}_output_0`;
    nodes.push(create(NodeProtoSchema, { name, opType: op, input: inputs, output: [out], attribute }));
    return out;
  };
  const ones = (n: number) => new Float32Array(n).fill(1);
  const zeros = (n: number) => new Float32Array(n);
  const layerNorm = (scope: string, x: string, prefix: string) =>
    node(scope, 'LayerNormalization', [x, floatInit(`${prefix}.weight`, [d], ones(d)), floatInit(`${prefix}.bias`, [d], zeros(d))], [attrI('axis', -1), attrF('epsilon', 1e-5)]);
  const linear = (scope: string, x: string, inF: number, outF: number, biasName: string) => {
    const w = floatInit(`onnx::MatMul_${anon++}`, [inF, outF], normal(inF * outF, seed++, 0.02));
    const mm = node(scope, 'MatMul', [x, w]);
    return node(scope, 'Add', [floatInit(biasName, [outF], normal(outF, seed++, 0.02)), mm]);
  };

  // Prologue: embeddings, positions (cumsum(mask)·mask − 1 + 2), causal + padding mask [b, 1, s, s].
  const D = '/model/decoder';
  const c0 = intInit('const_zero', [0], true), c1 = intInit('const_one', [1], true), c2 = intInit('const_two', [2], true);
  const ax1 = intInit('const_axis1', [1], true);
  const emb = node(`${D}/embed_tokens`, 'Gather', [floatInit('model.decoder.embed_tokens.weight', [s.vocab, d], normal(s.vocab * d, seed++, 0.02)), 'input_ids']);
  const cum = node(D, 'CumSum', ['attention_mask', ax1]);
  const masked = node(D, 'Mul', [cum, 'attention_mask']);
  const pos = node(D, 'Add', [node(D, 'Sub', [masked, c1]), c2]);
  const pe = node(`${D}/embed_positions`, 'Gather', [floatInit('model.decoder.embed_positions.weight', [s.maxPositions + 2, d], normal((s.maxPositions + 2) * d, seed++, 0.02)), pos]);
  let h = node(D, 'Add', [emb, pe]);
  const seq = node(D, 'Gather', [node(D, 'Shape', ['input_ids']), c1], [attrI('axis', 0)]);
  const range = node(D, 'Range', [c0, seq, c1]);
  const rows = node(D, 'Unsqueeze', [range, intInit('const_axes_1', [1])]);
  const cols = node(D, 'Unsqueeze', [range, intInit('const_axes_0', [0])]);
  const causal = node(D, 'LessOrEqual', [cols, rows]); // [s, s]: key j visible from query i when j <= i
  const keyOk = node(D, 'Greater', [node(D, 'Unsqueeze', ['attention_mask', intInit('const_axes_12', [1, 2])]), c0]); // [b, 1, 1, s]
  const mask = node(D, 'Where', [node(D, 'And', [causal, keyOk]), scalarF('const_mask_keep', 0), scalarF('const_mask_drop', fp16 ? -65504 : -3.4028234663852886e38)]);

  // Blocks.
  const headsShape = intInit('const_shape_heads', [0, 0, H, hd]);
  const hiddenShape = intInit('const_shape_hidden', [0, 0, d]);
  const scale = scalarF('const_attn_scale', 1 / Math.sqrt(hd));
  for (let i = 0; i < s.layers; i++) {
    const L = `${D}/layers.${i}`, P = `model.decoder.layers.${i}`, A = `${L}/self_attn`;
    const x = layerNorm(`${L}/self_attn_layer_norm`, h, `${P}.self_attn_layer_norm`);
    const q = node(A, 'Mul', [linear(`${A}/q_proj`, x, d, d, `${P}.self_attn.q_proj.bias`), scale]);
    const k = linear(`${A}/k_proj`, x, d, d, `${P}.self_attn.k_proj.bias`);
    const v = linear(`${A}/v_proj`, x, d, d, `${P}.self_attn.v_proj.bias`);
    const qh = node(A, 'Transpose', [node(A, 'Reshape', [q, headsShape])], [attrInts('perm', [0, 2, 1, 3])]);
    const kt = node(A, 'Transpose', [node(A, 'Reshape', [k, headsShape])], [attrInts('perm', [0, 2, 3, 1])]);
    const vh = node(A, 'Transpose', [node(A, 'Reshape', [v, headsShape])], [attrInts('perm', [0, 2, 1, 3])]);
    const scores = node(A, 'Add', [node(A, 'MatMul', [qh, kt]), mask]);
    const ctx = node(A, 'MatMul', [node(A, 'Softmax', [scores], [attrI('axis', -1)]), vh]);
    const merged = node(A, 'Reshape', [node(A, 'Transpose', [ctx], [attrInts('perm', [0, 2, 1, 3])]), hiddenShape]);
    h = node(L, 'Add', [h, linear(`${A}/out_proj`, merged, d, d, `${P}.self_attn.out_proj.bias`)]);
    const y = layerNorm(`${L}/final_layer_norm`, h, `${P}.final_layer_norm`);
    const a = node(L, 'Relu', [linear(`${L}/fc1`, y, d, f, `${P}.fc1.bias`)]);
    h = node(L, 'Add', [h, linear(`${L}/fc2`, a, f, d, `${P}.fc2.bias`)]);
  }

  // Epilogue.
  const z = layerNorm(`${D}/final_layer_norm`, h, 'model.decoder.final_layer_norm');
  node('/lm_head', 'MatMul', [z, floatInit(`onnx::MatMul_${anon++}`, [d, s.vocab], normal(d * s.vocab, seed++, 0.02))], [], 'logits');
  closeSync(fd);

  const dim = (v: string | number) => create(TensorShapeProto_DimensionSchema, { value: typeof v === 'number' ? { case: 'dimValue', value: BigInt(v) } : { case: 'dimParam', value: v } });
  const vi = (name: string, elemType: number, dims: (string | number)[]) =>
    create(ValueInfoProtoSchema, { name, type: { value: { case: 'tensorType', value: { elemType, shape: { dim: dims.map(dim) } } } } });
  const graph = create(GraphProtoSchema, {
    name: 'main_graph',
    node: nodes,
    initializer: inits,
    input: [vi('input_ids', DT.INT64, ['batch_size', 'sequence_length']), vi('attention_mask', DT.INT64, ['batch_size', 'total_sequence_length'])],
    output: [vi('logits', FT, ['batch_size', 'sequence_length', s.vocab])],
  });
  const model = create(ModelProtoSchema, {
    irVersion: 8n, producerName: 'sparsellm-bench', opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 17n })], graph,
  });
  writeFileSync(join(onnxDir, 'model.onnx'), toBinary(ModelProtoSchema, model));
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({
    architectures: ['OPTForCausalLM'], model_type: 'opt', hidden_size: d, ffn_dim: f, num_hidden_layers: s.layers, num_attention_heads: H,
    vocab_size: s.vocab, max_position_embeddings: s.maxPositions, word_embed_proj_dim: d, do_layer_norm_before: true,
    activation_function: 'relu', enable_bias: true, bos_token_id: 1, eos_token_id: 2, pad_token_id: 0, torch_dtype: s.dtype,
    _note: 'sparsellm bench: random weights (normal, std 0.02), stories260K tokenizer; a timing fixture, not a language model',
  }, null, 2)}\n`);
  for (const file of ['tokenizer.model', 'tokenizer_config.json']) copyFileSync(join(TOKENIZER_FROM, file), join(dir, file));
  return result;
}
