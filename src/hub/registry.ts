// Resolves the MODEL argument: a folder, an .onnx file, a registry name (models/registry.json) or an HF hub id.
// Hub downloads go to a cache (SPARSELLM_CACHE, else $HF_HOME-like ~/.cache/sparsellm/models) and are reused offline.
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, createWriteStream, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { ensureOnnxModel } from '../convert/convert.js';
import { UserError } from '../errors.js';

export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface RegistryEntry {
  repo?: string;
  bundled?: string;
  family: 'opt' | 'llama';
  params: string;
}
interface Registry {
  models: Record<string, RegistryEntry>;
  files: string[];
  optionalFiles: string[];
}

export function loadRegistry(): Registry {
  return JSON.parse(readFileSync(join(projectRoot, 'models', 'registry.json'), 'utf8')) as Registry;
}

export function cacheDir(): string {
  return process.env.SPARSELLM_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'sparsellm', 'models');
}

const HUB = process.env.HF_ENDPOINT ?? 'https://huggingface.co';

async function download(repo: string, file: string, dest: string, optional: boolean): Promise<void> {
  const url = `${HUB}/${repo}/resolve/main/${file}`;
  let res: Response;
  try {
    res = await fetch(url, { headers: process.env.HF_TOKEN ? { authorization: `Bearer ${process.env.HF_TOKEN}` } : {} });
  } catch {
    throw new UserError(
      `cannot reach the Hugging Face hub to download ${repo}/${file}: put the exported model in a folder and pass --model FOLDER (or fill ${dirname(dest)})`,
    );
  }
  if (res.status === 404 && optional) return;
  if (!res.ok || !res.body) throw new UserError(`download of ${url} failed: HTTP ${res.status}`);
  mkdirSync(dirname(dest), { recursive: true });
  const partial = `${dest}.partial`;
  await pipeline(Readable.fromWeb(res.body as never), createWriteStream(partial));
  renameSync(partial, dest);
}

/** Fetches a hub repo's ONNX export into the cache (skipping files already there) and returns the folder. */
export async function fetchHubModel(repo: string): Promise<string> {
  const reg = loadRegistry();
  const folder = join(cacheDir(), repo.replace('/', '--'));
  if (['HF_HUB_OFFLINE', 'SPARSELLM_OFFLINE'].some((k) => /^(1|true|yes|on)$/i.test(process.env[k] ?? ''))) {
    throw new UserError(`${repo} is not in the model cache ${folder} and downloads are off (HF_HUB_OFFLINE / SPARSELLM_OFFLINE): put the exported model in a folder and pass --model FOLDER`);
  }
  for (const file of reg.files) {
    const dest = join(folder, file);
    if (existsSync(dest)) continue;
    await download(repo, file, dest, reg.optionalFiles.includes(file));
  }
  return folder;
}

/** Turns the user's MODEL argument into a local path (folder or .onnx file). */
export async function resolveModelArgument(model: string): Promise<string> {
  // a checkpoint folder (config.json + safetensors) is converted once into the cache (src/convert/convert.ts)
  if (existsSync(model)) return ensureOnnxModel(resolve(model));
  if (isAbsolute(model) || /^\.{1,2}\//.test(model) || model.endsWith('.onnx') || model.split('/').length > 2) {
    throw new UserError(`model not found: ${model} (no such file or folder)`);
  }
  const reg = loadRegistry();
  const entry = reg.models[model];
  if (entry?.bundled) return join(projectRoot, entry.bundled);
  const repo = entry?.repo ?? (/^[\w.-]+\/[\w.-]+$/.test(model) ? model : undefined);
  if (!repo) {
    const names = Object.keys(reg.models).join(', ');
    throw new UserError(`model "${model}" is neither a path nor a known name (${names}) nor a hub id like owner/name`);
  }
  const cached = join(cacheDir(), repo.replace('/', '--'));
  if (existsSync(join(cached, 'onnx', 'model.onnx')) && statSync(join(cached, 'onnx', 'model.onnx')).size > 0) return cached;
  try {
    return await fetchHubModel(repo);
  } catch (e) {
    rmSync(join(cached, 'onnx', 'model.onnx.partial'), { force: true });
    throw e;
  }
}
