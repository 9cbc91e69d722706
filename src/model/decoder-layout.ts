// Finds the decoder blocks of a loaded ONNX model and the linear layers (MatMul + weight
// initializer) inside each, with their roles. Exports name MatMul weights anonymously
// (`onnx::MatMul_123`), so a linear is identified by its node's scope
// (`/model/decoder/layers.0/fc1/MatMul`, `/model/layers.0/attn/q_proj/MatMul`), falling back to
// the weight name (`model.layers.0.mlp.up_proj.MatMul.weight`).
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { UserError } from '../errors.js';
import { FAMILIES, type Architecture, type FamilySpec } from './families/registry.js';
import { readModelConfig, type ModelConfig } from './model-config.js';
import { dtypeName, type OnnxModel } from './onnx-file.js';

export interface LinearLayer {
  block: number;
  role: string;
  /** Name of the MatMul node computing `input @ weight`. */
  matmulNode: string;
  /** Initializer holding the weight, ONNX orientation [in, out]. */
  weightName: string;
  /** The MatMul's data input tensor ([..., in]). */
  inputName: string;
  /** The MatMul's output tensor ([..., out]), before any bias. */
  outputName: string;
  /** Bias initializer [out] added right after the MatMul, or null. */
  biasName: string | null;
  inFeatures: number;
  outFeatures: number;
  /** Storage dtype of the weight: 'float32' | 'float16' | ... */
  dtype: string;
}

export interface DecoderBlock {
  index: number;
  linears: LinearLayer[];
}

export interface DecoderLayout {
  architecture: Architecture;
  family: FamilySpec;
  /** config.json (or genai_config.json) normalised; `{}` when the model has neither. */
  config: ModelConfig;
  /** How the architecture was decided. */
  detectedFrom: 'config.json' | 'genai_config.json' | 'graph';
  blocks: DecoderBlock[];
}

const BLOCK_SCOPE = /(?:^|\/)layers\.(\d+)\//;
const BLOCK_IN_WEIGHT_NAME = /(?:^|\.)layers\.(\d+)\.(?:.+\.)?([A-Za-z0-9_]+)\.(?:MatMul\.)?weight$/;

/** Block index from a node name's `layers.<i>/` scope, or null. */
export function blockOfNodeName(name: string): number | null {
  const m = BLOCK_SCOPE.exec(name);
  return m ? Number(m[1]) : null;
}

export function analyzeDecoder(model: OnnxModel): DecoderLayout {
  refuseMergedDecoder(model);
  const { family, config, detectedFrom } = detectFamily(model);
  const roles = new Set(family.linears);

  const found = new Map<number, Map<string, LinearLayer>>();
  for (const node of model.graph.node) {
    if (node.opType !== 'MatMul' || node.domain !== '' || node.input.length !== 2) continue;
    const [inputName, weightName] = node.input as [string, string];
    if (!model.hasInitializer(weightName) || model.dims(weightName).length !== 2) continue;
    const place = linearPlace(node.name, weightName, roles);
    if (!place) continue;
    const [inFeatures, outFeatures] = model.dims(weightName) as [number, number];
    const linear: LinearLayer = {
      block: place.block, role: place.role, matmulNode: node.name, weightName, inputName, outputName: node.output[0]!,
      biasName: findBias(model, node.output[0]!, outFeatures), inFeatures, outFeatures, dtype: dtypeName(model.dataType(weightName)),
    };
    const inBlock = found.get(place.block) ?? new Map<string, LinearLayer>();
    if (inBlock.has(place.role)) throw new UserError(`${model.path}: two MatMuls claim layers.${place.block} ${place.role}; unsupported export layout`);
    inBlock.set(place.role, linear);
    found.set(place.block, inBlock);
  }

  if (found.size === 0) {
    throw new UserError(`${model.path} is not a decoder LM this tool understands: no ${family.architecture} decoder-block linears (${family.linears.join(', ')}) found`);
  }
  const numBlocks = Math.max(...found.keys()) + 1;
  const blocks: DecoderBlock[] = [];
  for (let i = 0; i < numBlocks; i++) {
    const inBlock = found.get(i);
    const missing = family.linears.filter((role) => !inBlock?.has(role));
    if (missing.length) throw new UserError(`${model.path}: decoder block ${i} lacks ${missing.join(', ')}; unsupported export layout`);
    blocks.push({ index: i, linears: family.linears.map((role) => inBlock!.get(role)!) });
  }
  refuseSharedWeights(model, blocks);
  return { architecture: family.architecture, family, config, detectedFrom, blocks };
}

function linearPlace(nodeName: string, weightName: string, roles: Set<string>): { block: number; role: string } | null {
  const block = blockOfNodeName(nodeName);
  if (block !== null) {
    const segments = nodeName.split('/');
    const role = segments[segments.length - 2] ?? '';
    if (roles.has(role)) return { block, role };
  }
  const m = BLOCK_IN_WEIGHT_NAME.exec(weightName);
  return m && roles.has(m[2]!) ? { block: Number(m[1]), role: m[2]! } : null;
}

/**
 * One initializer used as the weight of two linears would be written last-writer-wins (each is pruned with its own
 * statistics): refuse it rather than save a model where one layer silently carries the other's pruning.
 */
function refuseSharedWeights(model: OnnxModel, blocks: DecoderBlock[]): void {
  const owner = new Map<string, LinearLayer>();
  for (const l of blocks.flatMap((b) => b.linears)) {
    const first = owner.get(l.weightName);
    if (first) {
      throw new UserError(`${model.path}: block ${first.block} ${first.role} and block ${l.block} ${l.role} share one weight initializer (${l.weightName}), which cannot be pruned twice; export the model with untied weights`);
    }
    owner.set(l.weightName, l);
  }
}

/** An Add right after the MatMul whose other operand is a [out] initializer. */
function findBias(model: OnnxModel, matmulOutput: string, outFeatures: number): string | null {
  for (const node of model.graph.node) {
    if (node.opType !== 'Add' || !node.input.includes(matmulOutput)) continue;
    const other = node.input.find((x) => x !== matmulOutput);
    if (other && model.hasInitializer(other)) {
      const dims = model.dims(other);
      if (dims.length === 1 && dims[0] === outFeatures) return other;
    }
  }
  return null;
}

function refuseMergedDecoder(model: OnnxModel): void {
  const merged = model.graph.node.some((n) => n.opType === 'If') || model.graph.input.some((i) => i.name === 'use_cache_branch');
  if (!merged && !/decoder_model_merged/.test(basename(model.path))) return;
  const dir = dirname(model.path);
  const alternative = ['decoder_model.onnx', 'model.onnx'].map((f) => join(dir, f)).find(existsSync);
  throw new UserError(
    `${model.path} is an optimum merged decoder (If node / use_cache_branch input), which cannot be pruned block by block: ` +
      `use ${alternative ?? 'decoder_model.onnx or model.onnx from the same export'} instead`,
  );
}

/** The family named by config.json / genai_config.json (beside the .onnx or in the folder above `onnx/`), else graph patterns. */
function detectFamily(model: OnnxModel): { family: FamilySpec; config: ModelConfig; detectedFrom: DecoderLayout['detectedFrom'] } {
  const declared = readModelConfig(model.path);
  const { config } = declared;
  if (config.modelType !== undefined) {
    if (!declared.family) {
      const supported = FAMILIES.flatMap((f) => f.modelTypes).join(', ');
      throw new UserError(`${config.file} says model_type "${config.modelType}", which sparsellm does not support (supported: ${supported})`);
    }
    return { family: declared.family, config, detectedFrom: declared.kind! };
  }
  const segments = new Set<string>();
  for (const n of model.graph.node) if (n.opType === 'MatMul') for (const s of n.name.split('/')) segments.add(s);
  for (const t of model.graph.initializer) for (const s of t.name.split('.')) segments.add(s);
  const family = FAMILIES.find((f) => f.signatureRoles.every((r) => segments.has(r)));
  if (!family) throw new UserError(`${model.path} is not a decoder LM this tool understands: no config.json and no OPT/LLaMA layer names in the graph`);
  return { family, config, detectedFrom: 'graph' };
}
