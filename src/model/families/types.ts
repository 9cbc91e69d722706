// What distinguishes one decoder family from another, as data: the linear roles of a block, how its FFN combines
// them, its config.json keys, and SparseLLM's per-family defaults. Everything else (block splitting, weights I/O) is
// generic.

export type Architecture = 'opt' | 'llama';

/** How the block's feed-forward network combines its linears. */
export type FfnKind =
  | 'relu-fc' // OPT: fc2(relu(fc1 x + b1)) + b2
  | 'swiglu'; // LLaMA: down(silu(gate x) * up x)

/**
 * A model's config.json normalised to one set of names (transformers.js does the same per model_type). Fields are
 * undefined where the config does not say and the family has no documented default.
 */
export interface ModelConfig {
  /** the file it was read from, or undefined when the model has none (family detected from the graph) */
  file?: string;
  /** config.json `model_type` / genai_config.json `model.type`, lower case */
  modelType?: string;
  hidden?: number;
  layers?: number;
  heads?: number;
  /** key/value heads (grouped-query attention); = heads without GQA */
  kvHeads?: number;
  headDim?: number;
  /** FFN width (OPT ffn_dim, LLaMA intermediate_size) */
  ffn?: number;
  vocab?: number;
  maxPositions?: number;
  /** config.json torch_dtype */
  dtype?: string;
  tieWordEmbeddings?: boolean;
  /** biases on the attention projections / on the FFN linears */
  attentionBias?: boolean;
  mlpBias?: boolean;
}

/** The FFN's linears as SparseLLM sees them (ALGORITHMS.md §1.4–1.5). */
export interface FfnRoles {
  /** the role whose input is the FFN input (SparseLLM keeps it whole) */
  input: string;
  /** the roles SparseLLM prunes jointly, in the order the solver takes them */
  global: readonly string[];
}

export interface FamilySpec {
  architecture: Architecture;
  /** config.json `model_type` values (also genai_config.json `model.type`) that map to this family. */
  modelTypes: readonly string[];
  /** Linear roles of one decoder block, in execution order; also the module names in node scopes / weight names. */
  linears: readonly string[];
  ffn: FfnKind;
  ffnRoles: FfnRoles;
  /** SparseLLM penalty weights α, β, γ of the reference code for this family (PAPERS.md §3.2). */
  sparsellm: { alpha: number; beta: number; gamma: number };
  /**
   * Tokens × FFN-width float arrays the SparseLLM solver holds for the whole call (native/src/solvers/sparsellm.cc,
   * SparseLlmFfn): the auxiliary targets (z; LLaMA also s) and each input layer's pre-activation. p and the
   * activations exist one token block at a time.
   */
  sparsellmFfnBuffers: number;
  /** Roles whose presence in a graph identifies this family when there is no config.json. */
  signatureRoles: readonly string[];
  /** config.json -> ModelConfig, with the family's documented defaults (e.g. OPT biases on, LLaMA GQA off). */
  normalizeConfig(raw: Record<string, unknown>): Omit<ModelConfig, 'file' | 'modelType'>;
}
