// Checkpoint folder (config.json + safetensors or pytorch_model.bin) -> ONNX decoder folder (onnx/model.onnx + model.onnx_data, config,
// tokenizer), written by sparsellm's own graph builders, tensor by tensor. Also: ensureOnnxModel(), which lets
// prune / eval / inspect take a checkpoint folder directly by converting it once into a cache.
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError } from '../errors.js';
import type { Progress } from '../pipeline/progress.js';
import { llamaConverter } from './builders/llama.js';
import { optConverter } from './builders/opt.js';
import type { FamilyConverter, ParamSpec, WeightSource } from './builders/common.js';
import { GraphBuilder, type OutputDtype } from './onnx-graph.js';
import type { CheckpointReader } from './checkpoint-reader.js';
import { BIN_INDEX_FILE, BIN_SINGLE_FILE, PytorchBinCheckpoint } from './pytorch-bin.js';
import { INDEX_FILE, SINGLE_FILE, SafetensorsCheckpoint, TORCH_DTYPE_OF, type FloatDtype } from './safetensors.js';

/** Bumped whenever the graph a conversion writes changes: part of the cache key. */
export const CONVERTER_VERSION = 1;

/** One graph builder per family; adding one = writing builders/<family>.ts and listing it here. */
export const CONVERTERS: readonly FamilyConverter<any>[] = [optConverter, llamaConverter];

/** Files copied next to the converted / exported model so tokenizers and transformers find them. */
export const CHECKPOINT_COMPANIONS = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'tokenizer.model', 'vocab.json', 'merges.txt', 'added_tokens.json',
];

const ONNX_LAYOUTS = ['onnx/model.onnx', 'model.onnx', 'onnx/decoder_model.onnx', 'decoder_model.onnx', 'onnx/decoder_model_merged.onnx', 'decoder_model_merged.onnx'];

export function converterFor(modelType: unknown, where: string): FamilyConverter<any> {
  const t = typeof modelType === 'string' ? modelType.toLowerCase() : '';
  const c = CONVERTERS.find((f) => f.modelTypes.includes(t));
  if (!c) {
    const supported = CONVERTERS.flatMap((f) => f.modelTypes).join(', ');
    throw new UserError(`${where}: model_type ${JSON.stringify(modelType ?? null)} is not supported by sparsellm's converter (supported: ${supported})`);
  }
  return c;
}

export function readConfig(folder: string): { config: Record<string, unknown>; path: string } {
  const path = join(folder, 'config.json');
  if (!existsSync(path)) throw new UserError(`${folder} has no config.json: a Hugging Face checkpoint needs its config.json beside the weights (download it with the model)`);
  try {
    const config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new Error('not an object');
    return { config, path };
  } catch {
    throw new UserError(`${path} is not valid JSON: re-download it`);
  }
}

/** Whether `folder` looks like a HF checkpoint (weights in safetensors or PyTorch format). */
export function isCheckpointFolder(folder: string): boolean {
  return existsSync(folder) && statSync(folder).isDirectory() && weightFiles(folder).length > 0;
}

function weightFiles(folder: string): string[] {
  return readdirSync(folder).filter((f) => /\.safetensors$|^model\.safetensors\.index\.json$|^pytorch_model.*\.bin$|^pytorch_model\.bin\.index\.json$/.test(f));
}

/**
 * The checkpoint's weights (safetensors preferred; else PyTorch pytorch_model.bin or its shards), or a one-line
 * refusal (shards without their index, nothing, no config).
 */
export function openCheckpoint(folder: string): { checkpoint: CheckpointReader; config: Record<string, unknown>; configPath: string } {
  const files = weightFiles(folder);
  const hasSafetensors = files.some((f) => f === SINGLE_FILE || f === INDEX_FILE);
  const hasBin = files.some((f) => f === BIN_SINGLE_FILE || f === BIN_INDEX_FILE);
  if (!hasSafetensors && !hasBin) {
    const shards = files.filter((f) => f.endsWith('.safetensors'));
    if (shards.length) throw new UserError(`${folder} has ${shards.join(', ')} but no ${INDEX_FILE} (or ${SINGLE_FILE}): download the index file too`);
    const binShards = files.filter((f) => f.endsWith('.bin'));
    if (binShards.length) throw new UserError(`${folder} has ${binShards.join(', ')} but no ${BIN_INDEX_FILE} (or ${BIN_SINGLE_FILE}): download the index file too`);
    throw new UserError(`${folder} holds no model weights (${SINGLE_FILE}, ${INDEX_FILE}, ${BIN_SINGLE_FILE} or ${BIN_INDEX_FILE})`);
  }
  const { config, path } = readConfig(folder);
  const checkpoint = hasSafetensors ? SafetensorsCheckpoint.open(folder) : PytorchBinCheckpoint.open(folder);
  return { checkpoint, config, configPath: path };
}

export interface ConvertOptions {
  /** Output dtype; default: the checkpoint's (bf16 -> fp32: onnxruntime's CPU provider has no bf16 MatMul). */
  dtype?: OutputDtype;
  force?: boolean;
  progress?: Progress;
}

export interface ConvertReport {
  source: string;
  output: string;
  architecture: 'opt' | 'llama';
  sourceDtype: string;
  dtype: OutputDtype;
  tensors: number;
  seconds: number;
}

/** The output dtype for a checkpoint dtype: fp32 and fp16 kept, bf16 widened to fp32 (exact). */
export function defaultOutputDtype(source: FloatDtype): OutputDtype {
  return source === 'F16' ? 'fp16' : 'fp32';
}

/**
 * The checkpoint's name for a transformers parameter: the name itself, or without the `model.` prefix (checkpoints
 * saved from the base model, e.g. OPT's original `decoder.layers.0...`, which transformers also accepts).
 */
function storedName(checkpoint: CheckpointReader, name: string): string {
  if (checkpoint.has(name) || !name.startsWith('model.')) return name;
  return checkpoint.has(name.slice('model.'.length)) ? name.slice('model.'.length) : name;
}

/** Check the checkpoint holds every tensor the family needs, with the shapes config.json implies. */
function checkParameters(checkpoint: CheckpointReader, params: ParamSpec[], folder: string): void {
  for (const p of params) {
    const name = storedName(checkpoint, p.name);
    if (!checkpoint.has(name)) throw new UserError(`${folder}: the checkpoint lacks ${p.name}, which config.json's architecture needs (incomplete download or a different model)`);
    const t = checkpoint.info(name);
    if (t.shape.join(',') !== p.shape.join(',')) throw new UserError(`${folder}: ${p.name} has shape [${t.shape}], config.json implies [${p.shape}]`);
    if (!['F32', 'F16', 'BF16'].includes(t.dtype)) throw new UserError(`${folder}: ${p.name} is ${t.dtype}; only F32, F16 and BF16 weights are supported`);
  }
}

/**
 * Convert the checkpoint in `source` into an ONNX model folder `out` (`out.partial` first, renamed at the end; an
 * existing `out` is refused unless force). Weights are read, converted and written one tensor at a time.
 */
/** Everything about a checkpoint that can be refused, checked from headers and config alone (no weights read). */
export function checkCheckpoint(folder: string) {
  const { checkpoint, config, configPath } = openCheckpoint(folder);
  const converter = converterFor(config.model_type, configPath);
  const shape = converter.parseConfig(config, configPath);
  const params = converter.parameters(shape);
  checkParameters(checkpoint, params, folder);
  return { checkpoint, converter, shape, params, sourceDtype: checkpoint.dtype };
}

export function convertCheckpoint(source: string, out: string, options: ConvertOptions = {}): ConvertReport {
  const t0 = performance.now();
  const src = resolve(source), dest = resolve(out);
  if (!existsSync(src) || !statSync(src).isDirectory()) throw new UserError(`checkpoint folder not found: ${source}`);
  if (dest === src) throw new UserError(`--out ${out} is the checkpoint's own folder: choose a new folder`);
  if (existsSync(dest) && !options.force) throw new UserError(`output folder ${out} already exists: choose another --out or pass --force to replace it`);
  const { checkpoint, converter, shape, params, sourceDtype } = checkCheckpoint(src);
  const dtype = options.dtype ?? defaultOutputDtype(sourceDtype);

  const partial = `${dest}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(join(partial, 'onnx'), { recursive: true });
  const g = new GraphBuilder(join(partial, 'onnx', 'model.onnx_data'), 'model.onnx_data', dtype);
  const progress = options.progress;
  let done = 0;
  const weights: WeightSource = {
    has: (name) => checkpoint.has(storedName(checkpoint, name)),
    shape: (name) => checkpoint.info(storedName(checkpoint, name)).shape,
    read: (name) => {
      const values = checkpoint.readFloat32(storedName(checkpoint, name));
      for (let k = 0; k < values.length; k++) {
        const v = values[k]!;
        if (!Number.isFinite(v)) throw new UserError(`${src}: tensor ${name} contains NaN or Inf (element ${k}): refusing to write a broken model`);
        if (dtype === 'fp16' && Math.abs(v) > 65504) throw new UserError(`${src}: tensor ${name} has ${v}, beyond float16's range: convert with --dtype fp32`);
      }
      progress?.tick(1, name);
      done++;
      return values;
    },
  };
  try {
    progress?.start(`converting ${basename(src)} (${converter.architecture}, ${TORCH_DTYPE_OF[sourceDtype]} -> ${dtype})`, params.length);
    converter.build(g, shape, weights);
    g.save(join(partial, 'onnx', 'model.onnx'), `${converter.architecture} decoder converted by sparsellm`);
    progress?.stop();
    copyCompanions(src, partial);
    writeFileSync(join(partial, 'sparsellm-convert.json'), `${JSON.stringify({ tool: 'sparsellm', converterVersion: CONVERTER_VERSION, source: src, sourceDtype: TORCH_DTYPE_OF[sourceDtype], dtype }, null, 2)}\n`);
    if (existsSync(dest)) rmSync(dest, { recursive: true, force: true });
    renameSync(partial, dest);
  } catch (e) {
    g.abort();
    progress?.stop();
    rmSync(partial, { recursive: true, force: true });
    throw e;
  }
  return { source: src, output: dest, architecture: converter.architecture, sourceDtype: TORCH_DTYPE_OF[sourceDtype], dtype, tensors: done, seconds: (performance.now() - t0) / 1000 };
}

export function copyCompanions(from: string, to: string): string[] {
  const copied: string[] = [];
  for (const f of CHECKPOINT_COMPANIONS) {
    const src = join(from, f);
    if (existsSync(src) && statSync(src).isFile()) {
      copyFileSync(src, join(to, f));
      chmodSync(join(to, f), 0o644);
      copied.push(f);
    }
  }
  return copied;
}

/** Where checkpoint conversions are cached: $SPARSELLM_CACHE/converted, else ~/.cache/sparsellm/converted. */
export function convertedCacheDir(): string {
  if (process.env.SPARSELLM_CACHE) return join(process.env.SPARSELLM_CACHE, 'converted');
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'sparsellm', 'converted');
}

/** Cache key: converter version, dtype, and each config/weight file's name, size and mtime. */
function conversionKey(folder: string, dtype: string): string {
  const files = ['config.json', ...weightFiles(folder)].sort().map((f) => {
    const st = statSync(join(folder, f));
    return [f, st.size, Math.round(st.mtimeMs)];
  });
  return createHash('sha256').update(JSON.stringify({ v: CONVERTER_VERSION, dtype, files })).digest('hex').slice(0, 16);
}

/**
 * MODEL folder -> a folder holding ONNX. An ONNX folder (or an .onnx file) is returned as is; a checkpoint folder is
 * converted once into the cache (convertedCacheDir()/<name>-<key>) and that folder returned, reused on later calls.
 */
export async function ensureOnnxModel(folder: string, options: { progress?: Progress } = {}): Promise<string> {
  if (!existsSync(folder) || !statSync(folder).isDirectory()) return folder;
  if (ONNX_LAYOUTS.some((f) => existsSync(join(folder, f)))) return folder;
  if (!isCheckpointFolder(folder)) return folder; // neither: the ONNX resolver says what it expected
  const dtype = 'default';
  const target = join(convertedCacheDir(), `${basename(resolve(folder)).replace(/[^\w.-]/g, '_')}-${conversionKey(folder, dtype)}`);
  if (existsSync(join(target, 'onnx', 'model.onnx'))) return target;
  // each process converts into its own folder, then renames it into place (a concurrent run may win: then use its copy)
  const mine = `${target}.${process.pid}`;
  checkCheckpoint(folder); // refusals first, before anything is said or written
  mkdirSync(dirname(target), { recursive: true });
  if (!options.progress) process.stderr.write(`converting the checkpoint ${folder} to ONNX in ${target} (once; reused next time)\n`);
  convertCheckpoint(folder, mine, { force: true, progress: options.progress });
  try {
    renameSync(mine, target);
  } catch {
    rmSync(mine, { recursive: true, force: true });
    if (!existsSync(join(target, 'onnx', 'model.onnx'))) throw new UserError(`cannot store the converted model in ${target}: check that ${dirname(target)} is writable`);
  }
  return target;
}
