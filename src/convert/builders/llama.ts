// LLaMA (transformers' LlamaForCausalLM) as an ONNX decoder graph: RMSNorm, RoPE in the rotate-half layout with
// rope_theta and the `llama3` frequency scaling, grouped-query attention, SwiGLU, tied or untied lm_head.
// Inputs input_ids, attention_mask, position_ids, past_key_values.N.{key,value}; outputs logits, present.N.*.
import { UserError } from '../../errors.js';
import { DT, type GraphBuilder } from '../onnx-graph.js';
import { llamaFamily } from '../../model/families/llama.js';
import {
  causalMask, requiredInt, declareIo, fromFloat32, linear, lmHead, maskedSoftmax, mergeHeads, numberField, rmsNorm, splitHeads,
  type FamilyConverter, type ParamSpec, type WeightSource,
} from './common.js';

export interface LlamaShape {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  eps: number;
  /** RoPE inverse frequencies (head_dim / 2), rope_scaling applied. */
  invFreq: Float64Array;
  tied: boolean;
}

/** The linears of one block: transformers' module path and whether the block reads it as attention or MLP. */
const BLOCK_LINEARS = [
  'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj',
] as const;

/**
 * RoPE inverse frequencies θ^(−2i/d), i < d/2, with rope_scaling `llama3` (LLaMA-3.1/3.2): wavelengths longer than
 * original_max_position_embeddings / low_freq_factor are divided by `factor`, those shorter than
 * original / high_freq_factor kept, and the band between interpolated smoothly
 * (s = (original/λ − low)/(high − low), f = (1−s)·f/factor + s·f).
 */
export function ropeInverseFrequencies(headDim: number, theta: number, scaling: Record<string, unknown> | null | undefined, where: string): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  // transformers computes base ** (arange(0, d, 2) / d) in float32
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / headDim))));
  const type = scaling ? (scaling.rope_type ?? scaling.type) : undefined;
  if (!scaling || type === undefined || type === 'default') return inv;
  if (type !== 'llama3') throw new UserError(`${where}: rope_scaling type "${String(type)}" is not supported (supported: none, "llama3")`);
  const factor = Number(scaling.factor), low = Number(scaling.low_freq_factor), high = Number(scaling.high_freq_factor);
  const original = Number(scaling.original_max_position_embeddings);
  if (![factor, low, high, original].every((v) => Number.isFinite(v) && v > 0) || high <= low) {
    throw new UserError(`${where}: rope_scaling "llama3" needs positive factor, low_freq_factor < high_freq_factor and original_max_position_embeddings`);
  }
  const lowWavelen = original / low, highWavelen = original / high;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i]!;
    if (wavelen > lowWavelen) inv[i] = inv[i]! / factor;
    else if (wavelen >= highWavelen) {
      const smooth = (original / wavelen - low) / (high - low);
      inv[i] = (1 - smooth) * (inv[i]! / factor) + smooth * inv[i]!;
    }
  }
  return inv;
}

export const llamaConverter: FamilyConverter<LlamaShape> = {
  architecture: 'llama',
  modelTypes: ['llama'],

  parseConfig(c, where) {
    // sizes and defaults from the family table; only the graph's own keys (activation, RoPE, eps) are read here
    const m = llamaFamily.normalizeConfig(c);
    if (m.attentionBias || m.mlpBias) throw new UserError(`${where}: ${m.attentionBias ? 'attention_bias' : 'mlp_bias'} is true; sparsellm converts LLaMA checkpoints without biases only`);
    const act = c.hidden_act ?? 'silu';
    if (act !== 'silu') throw new UserError(`${where}: hidden_act "${String(act)}" is not supported for LLaMA (only silu)`);
    const hidden = requiredInt(m.hidden, 'hidden_size', c, where);
    const heads = requiredInt(m.heads, 'num_attention_heads', c, where);
    const kvHeads = requiredInt(m.kvHeads, 'num_key_value_heads', c, where);
    const headDim = requiredInt(m.headDim, 'head_dim', c, where);
    if (heads % kvHeads !== 0) throw new UserError(`${where}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
    if (headDim % 2 !== 0) throw new UserError(`${where}: head_dim ${headDim} is odd; RoPE needs an even head size`);
    const theta = numberField(c, 'rope_theta', where, 10000);
    return {
      hidden, heads, kvHeads, headDim,
      intermediate: requiredInt(m.ffn, 'intermediate_size', c, where),
      layers: requiredInt(m.layers, 'num_hidden_layers', c, where),
      vocab: requiredInt(m.vocab, 'vocab_size', c, where),
      eps: numberField(c, 'rms_norm_eps', where, 1e-6),
      invFreq: ropeInverseFrequencies(headDim, theta, c.rope_scaling as Record<string, unknown> | null, where),
      tied: m.tieWordEmbeddings!,
    };
  },

  parameters(s) {
    const p: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [s.vocab, s.hidden], kind: 'tensor' }];
    const outIn: Record<(typeof BLOCK_LINEARS)[number], [number, number]> = {
      'self_attn.q_proj': [s.heads * s.headDim, s.hidden], 'self_attn.k_proj': [s.kvHeads * s.headDim, s.hidden],
      'self_attn.v_proj': [s.kvHeads * s.headDim, s.hidden], 'self_attn.o_proj': [s.hidden, s.heads * s.headDim],
      'mlp.gate_proj': [s.intermediate, s.hidden], 'mlp.up_proj': [s.intermediate, s.hidden], 'mlp.down_proj': [s.hidden, s.intermediate],
    };
    for (let i = 0; i < s.layers; i++) {
      const b = `model.layers.${i}`;
      p.push({ name: `${b}.input_layernorm.weight`, shape: [s.hidden], kind: 'tensor' });
      p.push({ name: `${b}.post_attention_layernorm.weight`, shape: [s.hidden], kind: 'tensor' });
      for (const l of BLOCK_LINEARS) p.push({ name: `${b}.${l}.weight`, shape: outIn[l], kind: 'linear' });
    }
    p.push({ name: 'model.norm.weight', shape: [s.hidden], kind: 'tensor' });
    if (!s.tied) p.push({ name: 'lm_head.weight', shape: [s.vocab, s.hidden], kind: 'linear' });
    return p;
  },

  build(g, s, w) {
    const io = declareIo(g, s.layers, s.kvHeads, s.headDim, s.vocab, true);
    // prologue: embeddings, mask [B,1,1,S,T] (an extra axis for the query groups of GQA), cos/sin [B,1,S,hd]
    const embed = g.weight('model.embed_tokens.weight', [s.vocab, s.hidden], w.read('model.embed_tokens.weight'));
    let h = g.op1('Gather', '/model/embed_tokens/Gather', [embed, io.inputIds]);
    const { mask } = causalMask(g, '/model', io);
    const mask5 = g.op1('Unsqueeze', '/model/Unsqueeze_mask_groups', [mask, g.int64('/model/axes_groups', [1])]);
    const { cos, sin } = rotaryTables(g, s, io.positionIds!);

    const nRep = s.heads / s.kvHeads;
    for (let i = 0; i < s.layers; i++) {
      const scope = `/model/layers.${i}`, p = `model.layers.${i}`, attn = `${scope}/self_attn`;
      const x = rmsNorm(g, w, `${scope}/input_layernorm`, `${p}.input_layernorm.weight`, h, s.eps);
      const q = rope(g, `${attn}/q_rotary`, splitHeads(g, attn, linear(g, w, `${p}.self_attn.q_proj.weight`, x, false), s.heads, s.headDim, 'q'), cos, sin, s.headDim);
      const k = rope(g, `${attn}/k_rotary`, splitHeads(g, attn, linear(g, w, `${p}.self_attn.k_proj.weight`, x, false), s.kvHeads, s.headDim, 'k'), cos, sin, s.headDim);
      const v = splitHeads(g, attn, linear(g, w, `${p}.self_attn.v_proj.weight`, x, false), s.kvHeads, s.headDim, 'v');
      const key = g.opNamed('Concat', `${attn}/Concat_present_key`, [io.pastKey[i]!, k], `present.${i}.key`, { axis: 2 });
      const value = g.opNamed('Concat', `${attn}/Concat_present_value`, [io.pastValue[i]!, v], `present.${i}.value`, { axis: 2 });
      // GQA without copying K/V: queries [B, kv, nRep, S, hd] against keys [B, kv, 1, T, hd] (query head = kv·nRep + r, as repeat_kv)
      const q5 = g.op1('Reshape', `${attn}/Reshape_q_groups`, [q, g.int64(`${attn}/shape_q_groups`, [0, s.kvHeads, nRep, -1, s.headDim])]);
      const k5 = g.op1('Unsqueeze', `${attn}/Unsqueeze_k`, [key, g.int64(`${attn}/axes_k`, [2])]);
      const v5 = g.op1('Unsqueeze', `${attn}/Unsqueeze_v`, [value, g.int64(`${attn}/axes_v`, [2])]);
      const scores = g.op1('MatMul', `${attn}/MatMul`, [q5, g.op1('Transpose', `${attn}/Transpose_keyT`, [k5], { perm: [0, 1, 2, 4, 3] })]);
      const probs = maskedSoftmax(g, attn, scores, 1 / Math.sqrt(s.headDim), mask5);
      const ctx5 = g.op1('MatMul', `${attn}/MatMul_1`, [probs, v5]);
      const ctx = g.op1('Reshape', `${attn}/Reshape_ctx`, [ctx5, g.int64(`${attn}/shape_ctx`, [0, s.heads, -1, s.headDim])]);
      const o = linear(g, w, `${p}.self_attn.o_proj.weight`, mergeHeads(g, attn, ctx, s.heads, s.headDim), false);
      h = g.op1('Add', `${scope}/Add`, [h, o]);

      const y = rmsNorm(g, w, `${scope}/post_attention_layernorm`, `${p}.post_attention_layernorm.weight`, h, s.eps);
      const gate = linear(g, w, `${p}.mlp.gate_proj.weight`, y, false);
      const act = g.op1('Mul', `${scope}/mlp/act_fn/Mul`, [gate, g.op1('Sigmoid', `${scope}/mlp/act_fn/Sigmoid`, [gate])]); // SiLU
      const up = linear(g, w, `${p}.mlp.up_proj.weight`, y, false);
      const down = linear(g, w, `${p}.mlp.down_proj.weight`, g.op1('Mul', `${scope}/mlp/Mul`, [act, up]), false);
      h = g.op1('Add', `${scope}/Add_1`, [h, down]);
    }
    const final = rmsNorm(g, w, '/model/norm', 'model.norm.weight', h, s.eps);
    lmHead(g, w, final, s.tied, embed);
  },
};

/** cos/sin of position · inv_freq, duplicated over both halves (rotate-half layout): [B, 1, S, hd]. */
function rotaryTables(g: GraphBuilder, s: LlamaShape, positionIds: string): { cos: string; sin: string } {
  const scope = '/model/rotary_emb';
  const pos = g.op1('Unsqueeze', `${scope}/Unsqueeze`, [g.op1('Cast', `${scope}/Cast`, [positionIds], { to: DT.FLOAT }), g.int64(`${scope}/axes_2`, [2])]);
  const freqs = g.op1('Mul', `${scope}/Mul`, [pos, g.float(`${scope}/inv_freq`, Float32Array.from(s.invFreq), [s.headDim / 2])]);
  const emb = g.op1('Concat', `${scope}/Concat`, [freqs, freqs], { axis: -1 });
  const axes = g.int64(`${scope}/axes_1`, [1]);
  const cos = fromFloat32(g, `${scope}/cos`, g.op1('Unsqueeze', `${scope}/Unsqueeze_cos`, [g.op1('Cos', `${scope}/Cos`, [emb]), axes]));
  const sin = fromFloat32(g, `${scope}/sin`, g.op1('Unsqueeze', `${scope}/Unsqueeze_sin`, [g.op1('Sin', `${scope}/Sin`, [emb]), axes]));
  return { cos, sin };
}

/** x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁] with x₁, x₂ the halves of the head dimension. */
function rope(g: GraphBuilder, scope: string, x: string, cos: string, sin: string, headDim: number): string {
  const half = headDim / 2;
  const axes = g.int64(`${scope}/axes`, [3]);
  const x1 = g.op1('Slice', `${scope}/Slice`, [x, g.int64(`${scope}/start_1`, [0]), g.int64(`${scope}/end_1`, [half]), axes]);
  const x2 = g.op1('Slice', `${scope}/Slice_1`, [x, g.int64(`${scope}/start_2`, [half]), g.int64(`${scope}/end_2`, [headDim]), axes]);
  const rotated = g.op1('Concat', `${scope}/Concat`, [g.op1('Neg', `${scope}/Neg`, [x2]), x1], { axis: 3 });
  return g.op1('Add', `${scope}/Add`, [g.op1('Mul', `${scope}/Mul`, [x, cos]), g.op1('Mul', `${scope}/Mul_1`, [rotated, sin])]);
}

export type { WeightSource };
