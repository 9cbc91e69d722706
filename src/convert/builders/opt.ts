// OPT (transformers' OPTForCausalLM) as an ONNX decoder graph: learned positions with offset 2 taken from the
// attention mask's cumulative sum, LayerNorm before (do_layer_norm_before, default) or after (OPT-350m) each
// sub-block, ReLU FFN, biases, OPT-350m's project_in / project_out (word_embed_proj_dim ≠ hidden_size), and a
// tied or untied lm_head. Inputs input_ids, attention_mask, past_key_values.N.{key,value} (no position_ids, as
// optimum's OPT exports); outputs logits, present.N.*.
import { UserError } from '../../errors.js';
import { optFamily } from '../../model/families/opt.js';
import type { GraphBuilder } from '../onnx-graph.js';
import {
  causalMask, declareIo, intField, layerNorm, linear, lmHead, maskedSoftmax, mergeHeads, splitHeads, requiredInt,
  type FamilyConverter, type ParamSpec,
} from './common.js';

export interface OptShape {
  hidden: number;
  ffn: number;
  layers: number;
  heads: number;
  vocab: number;
  /** Size of the token embeddings; ≠ hidden means project_in / project_out exist (OPT-350m). */
  embedDim: number;
  positions: number;
  layerNormBefore: boolean;
  /** decoder.final_layer_norm exists only with pre-LayerNorm (transformers' OPTDecoder). */
  finalLayerNorm: boolean;
  bias: boolean;
  tied: boolean;
}

/** OPTLearnedPositionalEmbedding: position p is row p + 2 of embed_positions. */
const POSITION_OFFSET = 2;
/** nn.LayerNorm's default epsilon, which OPT uses. */
const LAYER_NORM_EPS = 1e-5;

export const optConverter: FamilyConverter<OptShape> = {
  architecture: 'opt',
  modelTypes: ['opt'],

  parseConfig(c, where) {
    // sizes and defaults from the family table; only the graph's own keys (activation, LayerNorm placement,
    // project_in/out) are read here
    const m = optFamily.normalizeConfig(c);
    const act = c.activation_function ?? 'relu';
    if (act !== 'relu') throw new UserError(`${where}: activation_function "${String(act)}" is not supported for OPT (only relu)`);
    if (c.layer_norm_elementwise_affine === false) throw new UserError(`${where}: layer_norm_elementwise_affine false is not supported`);
    const hidden = requiredInt(m.hidden, 'hidden_size', c, where);
    const heads = requiredInt(m.heads, 'num_attention_heads', c, where);
    if (hidden % heads !== 0) throw new UserError(`${where}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
    const layerNormBefore = c.do_layer_norm_before !== false;
    return {
      hidden, heads,
      ffn: requiredInt(m.ffn, 'ffn_dim', c, where),
      layers: requiredInt(m.layers, 'num_hidden_layers', c, where),
      vocab: requiredInt(m.vocab, 'vocab_size', c, where),
      embedDim: intField(c, 'word_embed_proj_dim', where, hidden),
      positions: requiredInt(m.maxPositions, 'max_position_embeddings', c, where),
      layerNormBefore,
      finalLayerNorm: layerNormBefore && c._remove_final_layer_norm !== true,
      bias: m.mlpBias!,
      tied: m.tieWordEmbeddings!,
    };
  },

  parameters(s) {
    const d = 'model.decoder';
    const p: ParamSpec[] = [
      { name: `${d}.embed_tokens.weight`, shape: [s.vocab, s.embedDim], kind: 'tensor' },
      { name: `${d}.embed_positions.weight`, shape: [s.positions + POSITION_OFFSET, s.hidden], kind: 'tensor' },
    ];
    if (s.embedDim !== s.hidden) p.push({ name: `${d}.project_in.weight`, shape: [s.hidden, s.embedDim], kind: 'linear' });
    const ln = (name: string) => p.push({ name: `${name}.weight`, shape: [s.hidden], kind: 'tensor' }, { name: `${name}.bias`, shape: [s.hidden], kind: 'tensor' });
    const lin = (name: string, out: number, inF: number) => {
      p.push({ name: `${name}.weight`, shape: [out, inF], kind: 'linear' });
      if (s.bias) p.push({ name: `${name}.bias`, shape: [out], kind: 'tensor' });
    };
    for (let i = 0; i < s.layers; i++) {
      const b = `${d}.layers.${i}`;
      ln(`${b}.self_attn_layer_norm`);
      for (const r of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) lin(`${b}.self_attn.${r}`, s.hidden, s.hidden);
      ln(`${b}.final_layer_norm`);
      lin(`${b}.fc1`, s.ffn, s.hidden);
      lin(`${b}.fc2`, s.hidden, s.ffn);
    }
    if (s.finalLayerNorm) ln(`${d}.final_layer_norm`);
    if (s.embedDim !== s.hidden) p.push({ name: `${d}.project_out.weight`, shape: [s.embedDim, s.hidden], kind: 'linear' });
    if (!s.tied) p.push({ name: 'lm_head.weight', shape: [s.vocab, s.embedDim], kind: 'linear' });
    return p;
  },

  build(g, s, w) {
    const headDim = s.hidden / s.heads;
    const io = declareIo(g, s.layers, s.heads, headDim, s.vocab, false);
    const d = 'model.decoder', top = '/model/decoder';
    // prologue: positions = cumsum(mask)·mask − 1 from the past length on, + 2; tokens (projected in) + positions
    const { mask, past } = causalMask(g, top, io);
    const cumsum = g.op1('CumSum', `${top}/CumSum`, [io.attentionMask, g.int64(`${top}/axis_1`, [1], [])]);
    const positions = g.op1('Sub', `${top}/Sub`, [g.op1('Mul', `${top}/Mul`, [cumsum, io.attentionMask]), g.int64(`${top}/one_pos`, [1], [])]);
    const pastStart = g.op1('Unsqueeze', `${top}/Unsqueeze_past`, [past, g.int64(`${top}/axes_0`, [0])]);
    const current = g.op1('Slice', `${top}/Slice`, [positions, pastStart, g.int64(`${top}/end_max`, [Number.MAX_SAFE_INTEGER]), g.int64(`${top}/axes_slice`, [1])]);
    const rows = g.op1('Add', `${top}/Add_offset`, [current, g.int64(`${top}/offset`, [POSITION_OFFSET], [])]);
    const embed = g.weight(`${d}.embed_tokens.weight`, [s.vocab, s.embedDim], w.read(`${d}.embed_tokens.weight`));
    let tokens = g.op1('Gather', `${top}/embed_tokens/Gather`, [embed, io.inputIds]);
    if (s.embedDim !== s.hidden) tokens = linear(g, w, `${d}.project_in.weight`, tokens, false);
    const posTable = g.weight(`${d}.embed_positions.weight`, w.shape(`${d}.embed_positions.weight`), w.read(`${d}.embed_positions.weight`));
    let h = g.op1('Add', `${top}/Add_embed`, [tokens, g.op1('Gather', `${top}/embed_positions/Gather`, [posTable, rows])]);

    for (let i = 0; i < s.layers; i++) {
      const scope = `${top}/layers.${i}`, p = `${d}.layers.${i}`, attn = `${scope}/self_attn`;
      // attention: softmax(q kᵀ·(1/√hd) + mask) v, the scaling applied to q after its bias (as transformers does)
      let x = s.layerNormBefore ? layerNorm(g, w, `${scope}/self_attn_layer_norm`, `${p}.self_attn_layer_norm`, h, LAYER_NORM_EPS) : h;
      const qScaled = g.op1('Mul', `${attn}/Mul`, [linear(g, w, `${p}.self_attn.q_proj.weight`, x, s.bias), g.float(`${attn}/scaling`, [headDim ** -0.5], [], g.floatType)]);
      const q = splitHeads(g, attn, qScaled, s.heads, headDim, 'q');
      const k = splitHeads(g, attn, linear(g, w, `${p}.self_attn.k_proj.weight`, x, s.bias), s.heads, headDim, 'k');
      const v = splitHeads(g, attn, linear(g, w, `${p}.self_attn.v_proj.weight`, x, s.bias), s.heads, headDim, 'v');
      const key = g.opNamed('Concat', `${attn}/Concat_present_key`, [io.pastKey[i]!, k], `present.${i}.key`, { axis: 2 });
      const value = g.opNamed('Concat', `${attn}/Concat_present_value`, [io.pastValue[i]!, v], `present.${i}.value`, { axis: 2 });
      const scores = g.op1('MatMul', `${attn}/MatMul`, [q, g.op1('Transpose', `${attn}/Transpose_key`, [key], { perm: [0, 1, 3, 2] })]);
      const probs = maskedSoftmax(g, attn, scores, null, mask);
      const ctx = mergeHeads(g, attn, g.op1('MatMul', `${attn}/MatMul_1`, [probs, value]), s.heads, headDim);
      h = g.op1('Add', `${scope}/Add`, [h, linear(g, w, `${p}.self_attn.out_proj.weight`, ctx, s.bias)]);
      if (!s.layerNormBefore) h = layerNorm(g, w, `${scope}/self_attn_layer_norm`, `${p}.self_attn_layer_norm`, h, LAYER_NORM_EPS);
      // FFN: fc2(relu(fc1 x))
      x = s.layerNormBefore ? layerNorm(g, w, `${scope}/final_layer_norm`, `${p}.final_layer_norm`, h, LAYER_NORM_EPS) : h;
      const hiddenAct = g.op1('Relu', `${scope}/Relu`, [linear(g, w, `${p}.fc1.weight`, x, s.bias)]);
      h = g.op1('Add', `${scope}/Add_1`, [h, linear(g, w, `${p}.fc2.weight`, hiddenAct, s.bias)]);
      if (!s.layerNormBefore) h = layerNorm(g, w, `${scope}/final_layer_norm`, `${p}.final_layer_norm`, h, LAYER_NORM_EPS);
    }
    if (s.finalLayerNorm) h = layerNorm(g, w, `${top}/final_layer_norm`, `${d}.final_layer_norm`, h, LAYER_NORM_EPS);
    if (s.embedDim !== s.hidden) h = linear(g, w, `${d}.project_out.weight`, h, false);
    lmHead(g, w, h, s.tied, embed);
  },
};

export type { GraphBuilder };
