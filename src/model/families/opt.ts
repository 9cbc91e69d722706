// OPT (facebook/opt-*): pre-LayerNorm, learned positions, ReLU FFN, biases on every linear.
import { bool, num, str } from './config-values.js';
import type { FamilySpec } from './types.js';

export const optFamily: FamilySpec = {
  architecture: 'opt',
  modelTypes: ['opt'],
  linears: ['q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2'],
  ffn: 'relu-fc',
  ffnRoles: { input: 'fc1', global: ['fc1', 'fc2'] },
  // the reference's OPT script: α = β = γ = 0.1
  sparsellm: { alpha: 0.1, beta: 0.1, gamma: 0.1 },
  // z and fc1's pre-activation
  sparsellmFfnBuffers: 2,
  signatureRoles: ['fc1', 'fc2'],
  // transformers OPTConfig: enable_bias (default true) covers every linear; embeddings tied by default
  normalizeConfig: (c) => {
    const hidden = num(c.hidden_size), heads = num(c.num_attention_heads), bias = bool(c.enable_bias) ?? true;
    return {
      hidden, layers: num(c.num_hidden_layers), heads, kvHeads: heads,
      headDim: hidden !== undefined && heads ? hidden / heads : undefined,
      ffn: num(c.ffn_dim), vocab: num(c.vocab_size), maxPositions: num(c.max_position_embeddings), dtype: str(c.torch_dtype),
      tieWordEmbeddings: bool(c.tie_word_embeddings) ?? true, attentionBias: bias, mlpBias: bias,
    };
  },
};
