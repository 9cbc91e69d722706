// What a per-family graph builder is, and the pieces OPT and LLaMA share: linears (MatMul + bias named as
// torch.onnx names them, so decoder-layout.ts finds them by scope), norms and softmax computed in float32,
// the causal + padding mask, graph inputs/outputs in the optimum decoder layout.
import { UserError } from '../../errors.js';
import { transpose } from '../../model/weights.js';
import { DT, type GraphBuilder } from '../onnx-graph.js';

/** A tensor of the HF checkpoint the model reads: transformers' parameter name, its shape, and whether it is a Linear weight ([out, in]). */
export interface ParamSpec {
  name: string;
  shape: number[];
  kind: 'linear' | 'tensor';
}

/** The checkpoint's tensors, as float32 in transformers' layout. */
export interface WeightSource {
  has(name: string): boolean;
  shape(name: string): number[];
  read(name: string): Float32Array;
}

export interface FamilyConverter<S = unknown> {
  architecture: 'opt' | 'llama';
  modelTypes: readonly string[];
  /** Sizes and options from config.json; refuses what the builder does not implement (one line). */
  parseConfig(config: Record<string, unknown>, configPath: string): S;
  /** Every checkpoint tensor the model reads (lm_head.weight only when it is not tied). */
  parameters(shape: S): ParamSpec[];
  /** Writes the whole graph (inputs, prologue, blocks, epilogue, outputs) and its weights. */
  build(g: GraphBuilder, shape: S, weights: WeightSource): void;
}

/** `model.layers.3.self_attn.q_proj.weight` -> `/model/layers.3/self_attn/q_proj/MatMul` (the torch.onnx scope of that Linear). */
export function matmulNodeOf(paramName: string): string {
  const parts = paramName.replace(/\.weight$/, '').split('.');
  const scopes: string[] = [];
  for (const p of parts) {
    if (/^\d+$/.test(p) && scopes.length) scopes[scopes.length - 1] += `.${p}`;
    else scopes.push(p);
  }
  return `/${scopes.join('/')}/MatMul`;
}

/** Name of the ONNX initializer holding a Linear's weight as [in, out] (the onnxruntime-genai naming, which decoder-layout.ts also reads). */
export function matmulWeightName(paramName: string): string {
  return paramName.replace(/\.weight$/, '.MatMul.weight');
}

/**
 * A size the builder needs, taken from the family's normalised ModelConfig (src/model/families: the one owner of
 * config.json keys and their defaults), as a positive integer, or a one-line refusal naming the config.json key.
 * A key that is present but mistyped is refused rather than defaulted.
 */
export function requiredInt(value: number | undefined, key: string, config: Record<string, unknown>, configPath: string): number {
  const raw = config[key];
  const ok = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;
  if ((raw !== undefined && raw !== null && !ok(raw)) || !ok(value)) throw new UserError(`${configPath}: ${key} is ${JSON.stringify(raw)}, expected a positive integer`);
  return value!;
}

/** config value (a key only the graph builder reads) as a positive integer, or a one-line refusal. */
export function intField(config: Record<string, unknown>, key: string, configPath: string, fallback?: number): number {
  const v = config[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new UserError(`${configPath}: ${key} is ${JSON.stringify(config[key])}, expected a positive integer`);
  return v;
}

export function numberField(config: Record<string, unknown>, key: string, configPath: string, fallback: number): number {
  const v = config[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`${configPath}: ${key} is ${JSON.stringify(config[key])}, expected a number`);
  return v;
}

/** y = x Wᵀ (+ b): MatMul named by the parameter's module scope, weight stored [in, out], bias in an Add right after. */
export function linear(g: GraphBuilder, w: WeightSource, paramName: string, x: string, bias: boolean): string {
  const node = matmulNodeOf(paramName);
  const [out, inF] = w.shape(paramName) as [number, number];
  const weight = g.weight(matmulWeightName(paramName), [inF, out], transpose(w.read(paramName), out, inF));
  let y = g.op1('MatMul', node, [x, weight]);
  if (bias) {
    const biasName = paramName.replace(/\.weight$/, '.bias');
    const b = g.weight(biasName, [out], w.read(biasName));
    y = g.op1('Add', node.replace(/\/MatMul$/, '/Add'), [b, y]);
  }
  return y;
}

/** Cast to float32 when the model is fp16 (norms, softmax run in float32 as transformers upcasts them). */
export function toFloat32(g: GraphBuilder, scope: string, x: string): string {
  return g.dtype === 'fp16' ? g.op1('Cast', `${scope}/Cast`, [x], { to: DT.FLOAT }) : x;
}

export function fromFloat32(g: GraphBuilder, scope: string, x: string): string {
  return g.dtype === 'fp16' ? g.op1('Cast', `${scope}/Cast_1`, [x], { to: DT.FLOAT16 }) : x;
}

/** LayerNorm over the last axis with weight and bias (nn.LayerNorm), in float32. */
export function layerNorm(g: GraphBuilder, w: WeightSource, scope: string, prefix: string, x: string, eps: number): string {
  const gamma = g.weight(`${prefix}.weight`, w.shape(`${prefix}.weight`), w.read(`${prefix}.weight`));
  const beta = g.weight(`${prefix}.bias`, w.shape(`${prefix}.bias`), w.read(`${prefix}.bias`));
  if (g.dtype === 'fp32') return g.op1('LayerNormalization', `${scope}/LayerNormalization`, [x, gamma, beta], { axis: -1, epsilon: eps });
  // fp16: stash_type 1 computes mean and variance in float32
  return g.op1('LayerNormalization', `${scope}/LayerNormalization`, [x, gamma, beta], { axis: -1, epsilon: eps, stash_type: 1 });
}

/** RMSNorm (LlamaRMSNorm): w ⊙ (x / sqrt(mean(x²) + eps)), the normalisation in float32. */
export function rmsNorm(g: GraphBuilder, w: WeightSource, scope: string, weightName: string, x: string, eps: number): string {
  const weight = g.weight(weightName, w.shape(weightName), w.read(weightName));
  const x32 = toFloat32(g, scope, x);
  const sq = g.op1('Pow', `${scope}/Pow`, [x32, g.float(`${scope}/two`, [2])]);
  const mean = g.op1('ReduceMean', `${scope}/ReduceMean`, [sq], { axes: [-1], keepdims: 1 });
  const std = g.op1('Sqrt', `${scope}/Sqrt`, [g.op1('Add', `${scope}/Add`, [mean, g.float(`${scope}/eps`, [eps])])]);
  const inv = g.op1('Div', `${scope}/Div`, [g.float(`${scope}/one`, [1]), std]);
  const normed = fromFloat32(g, scope, g.op1('Mul', `${scope}/Mul`, [x32, inv]));
  return g.op1('Mul', `${scope}/Mul_1`, [weight, normed]);
}

export interface DecoderIo {
  inputIds: string;
  attentionMask: string;
  positionIds?: string;
  /** past_key_values.i.key / .value */
  pastKey: string[];
  pastValue: string[];
}

/** Graph inputs and outputs of the optimum decoder layout (with past), as the reference exports declare them. */
export function declareIo(g: GraphBuilder, layers: number, kvHeads: number, headDim: number, vocab: number, withPositionIds: boolean): DecoderIo {
  const inputIds = g.input('input_ids', DT.INT64, ['batch_size', 'sequence_length']);
  const attentionMask = g.input('attention_mask', DT.INT64, ['batch_size', 'total_sequence_length']);
  const positionIds = withPositionIds ? g.input('position_ids', DT.INT64, ['batch_size', 'sequence_length']) : undefined;
  const pastKey: string[] = [], pastValue: string[] = [];
  for (let i = 0; i < layers; i++) {
    pastKey.push(g.input(`past_key_values.${i}.key`, g.floatType, ['batch_size', kvHeads, 'past_sequence_length', headDim]));
    pastValue.push(g.input(`past_key_values.${i}.value`, g.floatType, ['batch_size', kvHeads, 'past_sequence_length', headDim]));
  }
  g.output('logits', g.floatType, ['batch_size', 'sequence_length', vocab]);
  for (let i = 0; i < layers; i++) {
    g.output(`present.${i}.key`, g.floatType, ['batch_size', kvHeads, 'total_sequence_length', headDim]);
    g.output(`present.${i}.value`, g.floatType, ['batch_size', kvHeads, 'total_sequence_length', headDim]);
  }
  return { inputIds, attentionMask, positionIds, pastKey, pastValue };
}

/** Scalar int64 dimension `axis` of `x`. */
export function dim(g: GraphBuilder, scope: string, x: string, axis: number, tag: string): string {
  const shape = g.op1('Shape', `${scope}/Shape_${tag}`, [x]);
  return g.op1('Gather', `${scope}/Gather_${tag}`, [shape, g.int64(`${scope}/axis_${tag}`, [axis], [])], { axis: 0 });
}

/**
 * Additive attention mask [batch, 1, seq, past+seq], float32: 0 where query i (absolute position past+i) may see key
 * j (j <= past+i and attention_mask[b, j] = 1), the float32 minimum elsewhere (as transformers builds it).
 */
export function causalMask(g: GraphBuilder, scope: string, io: DecoderIo): { mask: string; past: string; seq: string } {
  const past = dim(g, scope, io.pastKey[0]!, 2, 'past');
  const seq = dim(g, scope, io.inputIds, 1, 'seq');
  const total = g.op1('Add', `${scope}/Add_total`, [past, seq]);
  const zero = g.int64(`${scope}/zero`, [0], []), one = g.int64(`${scope}/one`, [1], []);
  const keyPos = g.op1('Range', `${scope}/Range_keys`, [zero, total, one]); // [T]
  const queryPos = g.op1('Add', `${scope}/Add_queries`, [g.op1('Range', `${scope}/Range_queries`, [zero, seq, one]), past]); // [S]
  const queryCol = g.op1('Unsqueeze', `${scope}/Unsqueeze_queries`, [queryPos, g.int64(`${scope}/axes_1`, [1])]); // [S,1]
  const causal = g.op1('LessOrEqual', `${scope}/LessOrEqual`, [keyPos, queryCol]); // [S,T]
  const keep = g.op1('Greater', `${scope}/Greater`, [io.attentionMask, g.int64(`${scope}/zero_mask`, [0], [])]); // [B,T]
  const keep4 = g.op1('Unsqueeze', `${scope}/Unsqueeze_mask`, [keep, g.int64(`${scope}/axes_1_2`, [1, 2])]); // [B,1,1,T]
  const allowed = g.op1('And', `${scope}/And`, [causal, keep4]); // [B,1,S,T]
  const mask = g.op1('Where', `${scope}/Where`, [allowed, g.float(`${scope}/mask_zero`, [0]), g.float(`${scope}/mask_min`, [-3.4028234663852886e38])]);
  return { mask, past, seq };
}

/** softmax(scores · scale + mask) over the last axis, in float32; returns the model's dtype. */
export function maskedSoftmax(g: GraphBuilder, scope: string, scores: string, scale: number | null, mask: string): string {
  let s = toFloat32(g, `${scope}/scores`, scores);
  if (scale !== null) s = g.op1('Mul', `${scope}/Mul_scale`, [s, g.float(`${scope}/scale`, [scale])]);
  const probs = g.op1('Softmax', `${scope}/Softmax`, [g.op1('Add', `${scope}/Add_mask`, [s, mask])], { axis: -1 });
  return fromFloat32(g, `${scope}/probs`, probs);
}

/** [B, S, heads*hd] -> [B, heads, S, hd] */
export function splitHeads(g: GraphBuilder, scope: string, x: string, heads: number, headDim: number, tag: string): string {
  const r = g.op1('Reshape', `${scope}/Reshape_${tag}`, [x, g.int64(`${scope}/shape_${tag}`, [0, 0, heads, headDim])]);
  return g.op1('Transpose', `${scope}/Transpose_${tag}`, [r], { perm: [0, 2, 1, 3] });
}

/** [B, heads, S, hd] -> [B, S, heads*hd] */
export function mergeHeads(g: GraphBuilder, scope: string, x: string, heads: number, headDim: number): string {
  const t = g.op1('Transpose', `${scope}/Transpose_merge`, [x], { perm: [0, 2, 1, 3] });
  return g.op1('Reshape', `${scope}/Reshape_merge`, [t, g.int64(`${scope}/shape_merge`, [0, 0, heads * headDim])]);
}

/** Tied lm_head: logits = h · Eᵀ through a Transpose of the embedding (stored once). */
export function lmHead(g: GraphBuilder, w: WeightSource, h: string, tied: boolean, embedInitializer: string): void {
  if (tied) {
    const et = g.op1('Transpose', '/lm_head/Transpose', [embedInitializer], { perm: [1, 0] });
    g.opNamed('MatMul', '/lm_head/MatMul', [h, et], 'logits');
    return;
  }
  const [out, inF] = w.shape('lm_head.weight') as [number, number];
  const weight = g.weight(matmulWeightName('lm_head.weight'), [inF, out], transpose(w.read('lm_head.weight'), out, inF));
  g.opNamed('MatMul', '/lm_head/MatMul', [h, weight], 'logits');
}

