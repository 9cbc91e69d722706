// LLaMA and its close relatives: RMSNorm, RoPE, SwiGLU FFN, optional grouped-query attention
// (k_proj / v_proj with fewer outputs than q_proj). No biases in the reference models.
import type { FamilySpec } from './types.js';

export const llamaFamily: FamilySpec = {
  architecture: 'llama',
  modelTypes: ['llama', 'mistral'],
  linears: [
    { role: 'q_proj', aliases: ['q_proj'], part: 'attention' },
    { role: 'k_proj', aliases: ['k_proj'], part: 'attention' },
    { role: 'v_proj', aliases: ['v_proj'], part: 'attention' },
    { role: 'o_proj', aliases: ['o_proj'], part: 'attention' },
    { role: 'gate_proj', aliases: ['gate_proj'], part: 'mlp' },
    { role: 'up_proj', aliases: ['up_proj'], part: 'mlp' },
    { role: 'down_proj', aliases: ['down_proj'], part: 'mlp' },
  ],
  ffn: 'swiglu',
  biases: false,
  signatureRoles: ['gate_proj', 'up_proj', 'down_proj'],
};
