// The model's configuration, read once from the file beside the .onnx (or in the folder above `onnx/`):
// config.json (transformers) or genai_config.json (onnxruntime-genai), normalised to one ModelConfig by the
// family's table (src/model/families), as transformers.js normalises configs per model_type.
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { UserError } from '../errors.js';
import { num, str } from './families/config-values.js';
import { familyForModelType, type FamilySpec, type ModelConfig } from './families/registry.js';

export type { ModelConfig };

export interface ModelConfigFile {
  config: ModelConfig;
  /** the family its model type names, undefined when unsupported or not stated */
  family?: FamilySpec;
  /** config.json or genai_config.json, undefined when there is neither */
  kind?: 'config.json' | 'genai_config.json';
}

/** Keys every transformers config uses, for model types without a family table (perplexity of any decoder). */
function genericConfig(c: Record<string, unknown>): Omit<ModelConfig, 'file' | 'modelType'> {
  const heads = num(c.num_attention_heads);
  return {
    hidden: num(c.hidden_size), layers: num(c.num_hidden_layers), heads, kvHeads: num(c.num_key_value_heads) ?? heads,
    vocab: num(c.vocab_size), maxPositions: num(c.max_position_embeddings), dtype: str(c.torch_dtype),
  };
}

/** genai_config.json: `model.type`, `model.context_length`, `model.vocab_size`, `model.decoder.*`. */
function genaiConfig(j: Record<string, unknown>): { modelType?: string; config: Omit<ModelConfig, 'file' | 'modelType'> } {
  const model = (j.model ?? {}) as Record<string, unknown>;
  const decoder = (model.decoder ?? {}) as Record<string, unknown>;
  const heads = num(decoder.num_attention_heads);
  return {
    modelType: str(model.type),
    config: {
      hidden: num(decoder.hidden_size), layers: num(decoder.num_hidden_layers), heads, kvHeads: num(decoder.num_key_value_heads) ?? heads,
      headDim: num(decoder.head_size), vocab: num(model.vocab_size), maxPositions: num(model.context_length),
    },
  };
}

/** Reads and normalises the model's config; `{config: {}}` when there is none. Invalid JSON is a UserError. */
export function readModelConfig(onnxPath: string): ModelConfigFile {
  const dir = dirname(onnxPath);
  let typeless: ModelConfigFile | undefined;
  for (const d of basename(dir) === 'onnx' ? [dir, dirname(dir)] : [dir]) {
    for (const kind of ['config.json', 'genai_config.json'] as const) {
      const file = join(d, kind);
      if (!existsSync(file)) continue;
      let json: Record<string, unknown>;
      try {
        json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      } catch {
        throw new UserError(`${file} is not valid JSON`);
      }
      if (json === null || typeof json !== 'object') throw new UserError(`${file} is not a JSON object`);
      const genai = kind === 'genai_config.json' ? genaiConfig(json) : undefined;
      const modelType = (genai ? genai.modelType : str(json.model_type))?.toLowerCase();
      // a config without a model type says nothing about the family: look on (genai_config.json, the folder above)
      if (modelType === undefined) {
        typeless ??= { config: { ...(genai?.config ?? genericConfig(json)), maxPositions: genai ? genai.config.maxPositions : num(json.max_position_embeddings) ?? num(json.n_positions), file }, kind };
        continue;
      }
      const family = familyForModelType(modelType);
      const values = genai?.config ?? (family ? family.normalizeConfig(json) : genericConfig(json));
      const maxPositions = values.maxPositions ?? (genai ? undefined : num(json.n_positions));
      return { config: { ...values, maxPositions, file, modelType }, family, kind };
    }
  }
  return typeless ?? { config: {} };
}
