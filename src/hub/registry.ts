// Resolves the MODEL argument: a folder, an .onnx file, a registry name (models/registry.json) or a hub id
// owner/name. Hub models go through the Hugging Face cache (hub-model.ts), shared with Python tools.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureOnnxModel } from '../convert/convert.js';
import { UserError } from '../errors.js';
import { createProgress, type Progress } from '../pipeline/progress.js';
import { listFolderFiles } from './cache.js';
import { chooseModelFiles } from './choose.js';
import { fetchHubModel } from './hub-model.js';

export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface RegistryEntry {
  /** Hub repository the name stands for. */
  repo?: string;
  /** The original checkpoint when `repo` is an ONNX export of it (what `convert` downloads). */
  checkpoint?: string;
  /** A model shipped in this repository (path from its root). */
  bundled?: string;
  family: 'opt' | 'llama';
  params: string;
}
export interface RepoFacts {
  format: 'onnx' | 'checkpoint';
  gated?: boolean;
  /** The files the repository is known to hold (README/licence files left out). */
  files: string[];
}
export interface Registry {
  models: Record<string, RegistryEntry>;
  repos: Record<string, RepoFacts>;
}

export function loadRegistry(): Registry {
  return JSON.parse(readFileSync(join(projectRoot, 'models', 'registry.json'), 'utf8')) as Registry;
}

export interface ModelSourceOptions {
  /** Hub revision: branch, tag or commit (default main). */
  revision?: string;
  /** --model-file: which file of the repository or folder to load. */
  modelFile?: string;
  /** Where download bars go (default: stderr). */
  progress?: Progress;
}

/**
 * A local model folder or file. A checkpoint folder (config.json + safetensors or pytorch_model.bin, no ONNX) is converted once
 * into the cache (src/convert/convert.ts); ONNX folders and files are used as they are. --model-file picks
 * one file of the folder by the hub's rules (choose.ts).
 */
export async function localModel(path: string, o: ModelSourceOptions = {}): Promise<string> {
  if (statSync(path).isFile()) return path;
  if (o.modelFile === undefined) return ensureOnnxModel(path, { progress: o.progress });
  const choice = chooseModelFiles(path, listFolderFiles(path), o.modelFile);
  for (const note of choice.notes) (o.progress ?? createProgress(true)).log(note);
  return choice.entry ? join(path, choice.entry) : ensureOnnxModel(path, { progress: o.progress });
}

/** Turns the user's MODEL argument into a local path (folder or .onnx file). */
export async function resolveModelArgument(model: string, o: ModelSourceOptions = {}): Promise<string> {
  if (existsSync(model)) return localModel(resolve(model), o);
  if (isAbsolute(model) || /^\.{1,2}\//.test(model) || model.endsWith('.onnx') || model.split('/').length > 2) {
    throw new UserError(`model not found: ${model} (no such file or folder)`);
  }
  const reg = loadRegistry();
  const entry = reg.models[model];
  if (entry?.bundled) return localModel(join(projectRoot, entry.bundled), o);
  const repo = entry?.repo ?? (/^[\w.-]+\/[\w.-]+$/.test(model) ? model : undefined);
  if (!repo) {
    const names = Object.keys(reg.models).join(', ');
    throw new UserError(`model "${model}" is neither a path nor a known name (${names}) nor a hub id like owner/name`);
  }
  const hub = await fetchHubModel(repo, {
    revision: o.revision, modelFile: o.modelFile, progress: o.progress ?? createProgress(true), knownFiles: reg.repos[repo]?.files,
  });
  return hub.choice.kind === 'checkpoint' ? localModel(hub.path, { progress: o.progress }) : hub.path;
}

/**
 * The checkpoint folder behind the MODEL argument, for `convert`: a local folder as it is, a hub model as its
 * snapshot folder with config, weights (safetensors, else pytorch_model.bin) and tokenizer (an ONNX export in the same repo is not what is asked).
 */
export async function resolveCheckpointArgument(model: string, o: ModelSourceOptions = {}): Promise<string> {
  if (existsSync(model)) return resolve(model);
  const reg = loadRegistry();
  const entry = reg.models[model];
  const repo = (entry?.repo && reg.repos[entry.repo]?.format === 'checkpoint' ? entry.repo : entry?.checkpoint) ?? (/^[\w.-]+\/[\w.-]+$/.test(model) ? model : undefined);
  if (!repo) throw new UserError(`model "${model}" is neither a checkpoint folder nor a known name with a checkpoint nor a hub id like owner/name`);
  const hub = await fetchHubModel(repo, {
    revision: o.revision, modelFile: o.modelFile ?? 'config.json', progress: o.progress ?? createProgress(true), knownFiles: reg.repos[repo]?.files,
  });
  return hub.path;
}
