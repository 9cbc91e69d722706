// LLaMA and its close relatives: RMSNorm, RoPE, SwiGLU FFN, optional grouped-query attention
// (k_proj / v_proj with fewer outputs than q_proj). No biases in the reference models.
import { bool, num, str } from './config-values.js';
import type { FamilySpec } from './types.js';

export const llamaFamily: FamilySpec = {
  architecture: 'llama',
  modelTypes: ['llama', 'mistral'],
  linears: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  ffn: 'swiglu',
  ffnRoles: { input: 'up_proj', global: ['gate_proj', 'up_proj', 'down_proj'] },
  // the reference's LLaMA script: α = β = γ = 5
  sparsellm: { alpha: 5, beta: 5, gamma: 5 },
  // z, s and up's and gate's pre-activations
  sparsellmFfnBuffers: 4,
  signatureRoles: ['gate_proj', 'up_proj', 'down_proj'],
  // transformers LlamaConfig: num_key_value_heads defaults to the heads, head_dim to hidden // heads, no biases,
  // embeddings not tied
  normalizeConfig: (c) => {
    const hidden = num(c.hidden_size), heads = num(c.num_attention_heads);
    return {
      hidden, layers: num(c.num_hidden_layers), heads, kvHeads: num(c.num_key_value_heads) ?? heads,
      headDim: num(c.head_dim) ?? (hidden !== undefined && heads ? Math.floor(hidden / heads) : undefined),
      ffn: num(c.intermediate_size), vocab: num(c.vocab_size), maxPositions: num(c.max_position_embeddings), dtype: str(c.torch_dtype),
      tieWordEmbeddings: bool(c.tie_word_embeddings) ?? false, attentionBias: bool(c.attention_bias) ?? false, mlpBias: bool(c.mlp_bias) ?? false,
    };
  },
};
