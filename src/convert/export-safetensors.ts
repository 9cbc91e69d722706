// A (pruned) ONNX decoder -> a Hugging Face checkpoint in the input family's layout: transformers' parameter
// names, Linear weights [out, in], the model's dtype (config.json `torch_dtype` / `dtype`), sharded like hub
// checkpoints above a size. Each tensor is located in the graph through the family's parameter table
// (builders/*.ts): Linear weights by their MatMul's module scope (`/model/layers.0/mlp/up_proj/MatMul`; works for
// optimum exports with anonymous `onnx::MatMul_N` weights and for sparsellm's own), everything else by name.
import type { NodeProto } from 'onnx-buf';
import { UserError } from '../errors.js';
import { readModelConfig } from '../model/full-session.js';
import { dtypeName, type OnnxModel } from '../model/onnx-file.js';
import { transpose } from '../model/weights.js';
import { matmulNodeOf, matmulWeightName } from './builders/common.js';
import { converterFor } from './convert.js';
import { DEFAULT_MAX_SHARD_BYTES, TORCH_DTYPE_OF, writeSafetensorsCheckpoint, type FloatDtype, type TensorToWrite } from './safetensors.js';

export interface SafetensorsPlan {
  dtype: FloatDtype;
  tensors: TensorToWrite[];
}

const DTYPE_OF_TORCH = Object.fromEntries(Object.entries(TORCH_DTYPE_OF).map(([k, v]) => [v, k])) as Record<string, FloatDtype>;
const DTYPE_OF_ONNX: Record<string, FloatDtype> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

/** Where every checkpoint tensor comes from in `model`; refuses (one line) what cannot be mapped. Reads no weights. */
export function planSafetensorsExport(model: OnnxModel): SafetensorsPlan {
  const config = readModelConfig(model.path);
  if (!config) throw new UserError(`--format safetensors needs the model's config.json (beside ${model.path} or in the folder above onnx/): it names the architecture and its parameters`);
  const where = 'config.json';
  const converter = converterFor(config.model_type, where);
  const params = converter.parameters(converter.parseConfig(config, where));
  const nodes = new Map<string, NodeProto>(model.graph.node.map((n) => [n.name, n]));
  const tensors: TensorToWrite[] = [];
  let onnxDtype: string | undefined;
  for (const p of params) {
    let source: string | undefined, transposed = false;
    if (p.kind === 'linear') {
      const node = nodes.get(matmulNodeOf(p.name));
      const w = node?.opType === 'MatMul' ? node.input[1] : undefined;
      if (w && model.hasInitializer(w)) source = w;
      else if (model.hasInitializer(matmulWeightName(p.name))) source = matmulWeightName(p.name);
      transposed = true;
      if (source) onnxDtype ??= dtypeName(model.dataType(source));
    } else if (model.hasInitializer(p.name)) {
      source = p.name;
    } else if (p.name.endsWith('.bias')) {
      source = biasAfter(model, nodes.get(matmulNodeOf(p.name.replace(/\.bias$/, '.weight'))), p.shape[0]!);
    }
    if (!source) throw new UserError(`${model.path}: cannot find ${p.name} in the ONNX graph (expected ${p.kind === 'linear' ? `the weight of MatMul ${matmulNodeOf(p.name)}` : 'an initializer of that name'}); --format safetensors supports sparsellm's and optimum's decoder layouts`);
    const dims = model.dims(source);
    const want = transposed ? [p.shape[1], p.shape[0]] : p.shape;
    if (dims.join() !== want.join()) throw new UserError(`${model.path}: ${source} has shape [${dims}], ${p.name} needs [${want}]${transposed ? ' (a MatMul weight, [in, out])' : ''}`);
    const name = source;
    tensors.push({
      name: p.name,
      shape: p.shape,
      values: () => (transposed ? transpose(model.readFloat32(name), p.shape[1]!, p.shape[0]!) : model.readFloat32(name)),
    });
  }
  const declared = config.torch_dtype ?? config.dtype;
  const dtype = (typeof declared === 'string' ? DTYPE_OF_TORCH[declared] : undefined) ?? DTYPE_OF_ONNX[onnxDtype ?? 'float32'] ?? 'F32';
  return { dtype, tensors };
}

/** The [out] initializer added to the MatMul's output (optimum names biases like transformers; this also finds renamed ones). */
function biasAfter(model: OnnxModel, matmul: NodeProto | undefined, out: number): string | undefined {
  const y = matmul?.output[0];
  if (!y) return undefined;
  for (const n of model.graph.node) {
    if (n.opType !== 'Add' || !n.input.includes(y)) continue;
    const other = n.input.find((x) => x !== y);
    if (other && model.hasInitializer(other) && model.dims(other).join() === String(out)) return other;
  }
  return undefined;
}

/** Write the plan into `folder`; returns the files written. NaN/Inf are refused before anything is written for that tensor. */
export function writeSafetensorsExport(plan: SafetensorsPlan, folder: string, maxShardBytes = DEFAULT_MAX_SHARD_BYTES): string[] {
  const checked = plan.tensors.map((t) => ({
    ...t,
    values: () => {
      const v = t.values();
      for (let k = 0; k < v.length; k++) if (!Number.isFinite(v[k]!)) throw new UserError(`${t.name} contains NaN or Inf (element ${k}): refusing to write a broken model`);
      return v;
    },
  }));
  return writeSafetensorsCheckpoint(folder, checked, { dtype: plan.dtype, maxShardBytes });
}

/** "5GB", "200MB", "300KiB", "1000000" -> bytes (decimal units as transformers' max_shard_size; KiB/MiB/GiB binary). */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB)?\s*$/i.exec(text);
  if (!m) throw new UserError(`--max-shard-size ${JSON.stringify(text)} is not a size: use e.g. 5GB, 500MB or a number of bytes`);
  const unit = (m[2] ?? 'B').toUpperCase();
  const scale: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };
  const bytes = Math.floor(Number(m[1]) * scale[unit]!);
  if (bytes < 1) throw new UserError(`--max-shard-size must be positive, got ${text}`);
  return bytes;
}
