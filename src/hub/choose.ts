// Which files of a model repository (hub or local) sparsellm needs, and which of its ONNX exports it prunes.
// Order of preference: the plain decoder onnx/model.onnx, then decoder_model.onnx; never a quantized variant;
// _fp16 only when asked (--model-file); a merged decoder gives way to its non-merged sibling; a repo without a
// plain ONNX decoder but with a checkpoint is converted: safetensors when it has them, else PyTorch pytorch_model.bin
// (read without Python by src/convert/pytorch-bin.ts). Only the chosen files are downloaded.
import { posix } from 'node:path';
import { UserError } from '../errors.js';

export interface ModelChoice {
  kind: 'onnx' | 'checkpoint';
  /** The .onnx file to load (kind 'onnx'). */
  entry?: string;
  /** Files without which the model cannot be used: the graph and its external data, or config + weights. */
  required: string[];
  /** Files used when present: config, generation config, tokenizer. */
  optional: string[];
  /** Lines for the user (e.g. a merged decoder replaced by its sibling). */
  notes: string[];
}

/** The plain decoders, best first (transformers.js / optimum layouts). */
export const PLAIN_DECODERS = ['onnx/model.onnx', 'model.onnx', 'onnx/decoder_model.onnx', 'decoder_model.onnx'];
/** Suffixes of the quantized exports transformers.js repos carry next to the full-precision one. */
export const QUANTIZED_SUFFIXES = ['_quantized', '_q4', '_q4f16', '_int8', '_uint8', '_bnb4'];
/** Config and tokenizer files, copied next to whichever weights are chosen. */
export const SUPPORT_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'tokenizer.model',
  'special_tokens_map.json', 'added_tokens.json', 'vocab.json', 'merges.txt',
];
const SAFETENSORS = /^model(-\d+-of-\d+)?\.safetensors$/;
const SAFETENSORS_INDEX = 'model.safetensors.index.json';
const PYTORCH_BIN = /^pytorch_model(-\d+-of-\d+)?\.bin$/;
const PYTORCH_BIN_INDEX = 'pytorch_model.bin.index.json';

const stem = (path: string) => posix.basename(path).replace(/\.onnx$/, '');
export const isQuantized = (path: string) => QUANTIZED_SUFFIXES.some((s) => stem(path).endsWith(s));
const isMerged = (path: string) => stem(path).includes('_merged');
const isFp16 = (path: string) => stem(path).endsWith('_fp16');

/** The ONNX file's external data: <file>_data, <file>.data and their numbered parts, beside it. */
function externalData(entry: string, files: Set<string>): string[] {
  return [...files].filter((f) => f.startsWith(`${entry}_data`) || f.startsWith(`${entry}.data`)).sort();
}

function onnxChoice(entry: string, files: Set<string>, notes: string[]): ModelChoice {
  const dir = posix.dirname(entry);
  // config and tokenizer live in the repo root (transformers.js layout) or beside the graph
  const support = SUPPORT_FILES.flatMap((f) => [f, dir === '.' ? f : `${dir}/${f}`, `${posix.dirname(dir)}/${f}`.replace(/^\.\//, '')]);
  return { kind: 'onnx', entry, required: [entry, ...externalData(entry, files)], optional: [...new Set(support)].filter((f) => files.has(f)), notes };
}

function checkpointChoice(files: Set<string>): ModelChoice | undefined {
  const rootFiles = root(files);
  const optional = SUPPORT_FILES.filter((f) => f !== 'config.json' && files.has(f));
  const safetensors = rootFiles.filter((f) => SAFETENSORS.test(f)).sort();
  if (safetensors.length > 0) {
    const single = safetensors.includes('model.safetensors');
    return { kind: 'checkpoint', required: ['config.json', ...(single ? ['model.safetensors'] : [...safetensors, SAFETENSORS_INDEX])], optional, notes: [] };
  }
  const bins = rootFiles.filter((f) => PYTORCH_BIN.test(f)).sort();
  if (bins.length > 0) {
    const single = bins.includes('pytorch_model.bin');
    return { kind: 'checkpoint', required: ['config.json', ...(single ? ['pytorch_model.bin'] : [...bins, PYTORCH_BIN_INDEX])], optional, notes: [] };
  }
  return undefined;
}

/** The plain decoder a refused file should be replaced with, if the repo has one. */
function plainAlternative(files: Set<string>): string | undefined {
  return PLAIN_DECODERS.find((f) => files.has(f));
}

/**
 * Chooses what to load from a repository listing. `where` names the repository in messages,
 * `modelFile` is the user's --model-file.
 */
export function chooseModelFiles(where: string, listing: Iterable<string>, modelFile?: string): ModelChoice {
  const files = new Set(listing);
  const onnxFiles = [...files].filter((f) => f.endsWith('.onnx')).sort();
  if (modelFile !== undefined) return chooseAsked(where, files, onnxFiles, modelFile.replace(/^\.?\//, ''));

  const plain = plainAlternative(files);
  if (plain) return onnxChoice(plain, files, []);
  const checkpoint = checkpointChoice(files);
  if (checkpoint) return checkpoint;

  const fp16 = onnxFiles.find((f) => isFp16(f) && !isQuantized(f) && !isMerged(f));
  if (fp16) throw new UserError(`${where} has no fp32 ONNX decoder, only ${fp16}: pass --model-file ${fp16} to prune the fp16 export`);
  if (onnxFiles.length > 0) {
    throw new UserError(`${where} has no ONNX decoder sparsellm can prune (it needs ${PLAIN_DECODERS.join(' or ')}, full precision, not merged); it has ${onnxFiles.join(', ')}`);
  }
  throw new UserError(`${where} has neither an ONNX decoder (${PLAIN_DECODERS.join(', ')}) nor a checkpoint (config.json + model.safetensors, model-*-of-*.safetensors or pytorch_model*.bin)`);
}

function root(files: Set<string>): string[] {
  return [...files].filter((f) => !f.includes('/'));
}

function chooseAsked(where: string, files: Set<string>, onnxFiles: string[], asked: string): ModelChoice {
  if (!files.has(asked)) {
    const have = onnxFiles.length ? `its ONNX files are ${onnxFiles.join(', ')}` : 'it has no ONNX file';
    throw new UserError(`--model-file ${asked}: ${where} has no such file (${have})`);
  }
  if (asked.endsWith('.onnx')) {
    const plain = plainAlternative(files);
    if (isQuantized(asked)) {
      const instead = plain ? `use ${plain} (the default; leave out --model-file)` : 'use a full-precision export';
      throw new UserError(`--model-file ${asked} is a quantized export: pruning needs the full-precision weights, ${instead}`);
    }
    if (isMerged(asked)) {
      const sibling = asked.replace('_merged', '');
      if (files.has(sibling)) return onnxChoice(sibling, files, [`${asked} is a merged decoder (an If graph over two decoders): using its non-merged sibling ${sibling}`]);
      throw new UserError(`--model-file ${asked} is a merged decoder (an If graph) and ${where} has no non-merged ${sibling}: export decoder_model.onnx / model.onnx without merging`);
    }
    return onnxChoice(asked, files, []);
  }
  if (SAFETENSORS.test(asked) || asked === SAFETENSORS_INDEX || PYTORCH_BIN.test(asked) || asked === PYTORCH_BIN_INDEX || asked === 'config.json') {
    const checkpoint = checkpointChoice(files);
    if (checkpoint) return checkpoint;
  }
  throw new UserError(`--model-file ${asked} is neither an .onnx file nor a checkpoint file (safetensors, pytorch_model.bin) of ${where}`);
}
