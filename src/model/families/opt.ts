// OPT (facebook/opt-*): pre-LayerNorm, learned positions, ReLU FFN, biases on every linear.
import type { FamilySpec } from './types.js';

export const optFamily: FamilySpec = {
  architecture: 'opt',
  modelTypes: ['opt'],
  linears: [
    { role: 'q_proj', aliases: ['q_proj'], part: 'attention' },
    { role: 'k_proj', aliases: ['k_proj'], part: 'attention' },
    { role: 'v_proj', aliases: ['v_proj'], part: 'attention' },
    { role: 'out_proj', aliases: ['out_proj'], part: 'attention' },
    { role: 'fc1', aliases: ['fc1'], part: 'mlp' },
    { role: 'fc2', aliases: ['fc2'], part: 'mlp' },
  ],
  ffn: 'relu-fc',
  biases: true,
  signatureRoles: ['fc1', 'fc2'],
};
