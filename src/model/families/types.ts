// What distinguishes one decoder family from another, as data: the linear roles of a block and
// how they are named in exported graphs. Everything else (block splitting, weights I/O) is generic.

export type Architecture = 'opt' | 'llama';

/** How the block's feed-forward network combines its linears. */
export type FfnKind =
  | 'relu-fc' // OPT: fc2(relu(fc1 x + b1)) + b2
  | 'swiglu'; // LLaMA: down(silu(gate x) * up x)

export interface LinearRoleSpec {
  /** Canonical role name reported everywhere (q_proj, fc1, down_proj, ...). */
  role: string;
  /** Module names this role has in node scopes / weight names across exporters (first is canonical). */
  aliases: readonly string[];
  /** Which sub-module of the block it belongs to. */
  part: 'attention' | 'mlp';
}

export interface FamilySpec {
  architecture: Architecture;
  /** config.json `model_type` values (also genai_config.json `model.type`) that map to this family. */
  modelTypes: readonly string[];
  /** Linear layers of one decoder block, in execution order. */
  linears: readonly LinearRoleSpec[];
  ffn: FfnKind;
  /** Whether the linears carry biases (added by a following Add node). */
  biases: boolean;
  /** Roles whose presence in a graph identifies this family when there is no config.json. */
  signatureRoles: readonly string[];
}
