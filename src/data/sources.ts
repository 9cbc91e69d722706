/**
 * Where dataset files come from. Search order for each file of a dataset definition (calibration/*.json):
 *   1. data directories: --data-dir, $SPARSELLM_DATA, ../shared/data beside the checkout (each with the
 *      definition's usual relative paths, e.g. wikitext2/wiki.test.raw);
 *   2. the Hugging Face hub cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub), as `datasets` left it;
 *   3. our own download cache ($HF_HOME/sparsellm/datasets/<name>/, default ~/.cache/huggingface/...);
 *   4. a copy embedded in this repository (calibration/data);
 *   5. a download (unless HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / SPARSELLM_OFFLINE is set); offline or on
 *      failure, a one-line UserError saying which file to put where.
 */
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { gunzipSync, inflateRawSync } from 'node:zlib';
import { UserError } from '../errors.js';

export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface FileSpec {
  /** Paths relative to a data directory, most usual first. */
  paths: string[];
  /** HF hub repo ("datasets/owner/name") and path inside it, to reuse the hub cache. */
  hubRepo?: string;
  hubPath?: string;
  download?: { url: string; zipEntry?: string };
  /** A copy inside this repository, relative to its root. */
  embedded?: string;
}

/** Data directories to search, in order. */
export function dataDirs(explicit?: string): string[] {
  const sharedData = process.env.SPARSELLM_SHARED ? join(process.env.SPARSELLM_SHARED, 'data') : undefined;
  const dirs = [explicit, process.env.SPARSELLM_DATA, sharedData, join(projectRoot, '..', 'shared', 'data')];
  return dirs.filter((d): d is string => !!d).map((d) => resolve(d));
}

export function hfHome(): string {
  return process.env.HF_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
}

function downloadCacheDir(dataset: string): string {
  return join(hfHome(), 'sparsellm', 'datasets', dataset);
}

function isOffline(): boolean {
  return ['HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'SPARSELLM_OFFLINE'].some((k) => /^(1|true|yes|on)$/i.test(process.env[k] ?? ''));
}

/** The local file for `spec`, downloading it if allowed; `what` names it in messages ("wikitext2 test"). */
export async function locateFile(dataset: string, what: string, spec: FileSpec, dataDir?: string): Promise<string> {
  for (const dir of dataDirs(dataDir)) {
    for (const p of spec.paths) if (existsSync(join(dir, p))) return join(dir, p);
  }
  const fromHub = findInHubCache(spec);
  if (fromHub) return fromHub;
  const cached = join(downloadCacheDir(dataset), basename(spec.paths[0]!));
  if (existsSync(cached)) return cached;
  if (spec.embedded && existsSync(join(projectRoot, spec.embedded))) return join(projectRoot, spec.embedded);
  const where = join(dataDir ?? process.env.SPARSELLM_DATA ?? '<data-dir>', spec.paths[0]!);
  const hint = `put ${basename(spec.paths[0]!)} at ${where} (--data-dir or SPARSELLM_DATA)`;
  if (!spec.download) throw new UserError(`${what} is not available: ${hint}`);
  if (isOffline()) throw new UserError(`${what} is not available offline: ${hint}`);
  await download(spec.download.url, spec.download.zipEntry, cached, what, hint);
  return cached;
}

function findInHubCache(spec: FileSpec): string | undefined {
  if (!spec.hubRepo || !spec.hubPath) return undefined;
  const caches = [process.env.HF_HUB_CACHE, join(hfHome(), 'hub')].filter((d): d is string => !!d);
  for (const cache of caches) {
    const snapshots = join(cache, spec.hubRepo.replaceAll('/', '--'), 'snapshots');
    if (!existsSync(snapshots)) continue;
    for (const rev of readdirSync(snapshots)) {
      const p = join(snapshots, rev, spec.hubPath);
      if (existsSync(p)) return p;
    }
  }
  return undefined;
}

/** Downloads `url` (or one entry of the zip at `url`) to `dest` through a `.partial` file. Not testable offline. */
async function download(url: string, zipEntry: string | undefined, dest: string, what: string, hint: string): Promise<void> {
  let res: Response;
  try {
    const headers: Record<string, string> = process.env.HF_TOKEN ? { authorization: `Bearer ${process.env.HF_TOKEN}` } : {};
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error('no answer within 30 s')), 30_000);
    res = await fetch(url, { headers, redirect: 'follow', signal: abort.signal }).finally(() => clearTimeout(timer));
  } catch (e) {
    throw new UserError(`cannot download ${what} (${(e as Error).message}): ${hint}`);
  }
  if (!res.ok || !res.body) throw new UserError(`download of ${what} from ${url} failed (HTTP ${res.status}): ${hint}`);
  process.stderr.write(`sparsellm: downloading ${what} from ${url}\n`);
  mkdirSync(dirname(dest), { recursive: true });
  const partial = `${dest}.partial`;
  try {
    if (zipEntry) {
      const zip = new Uint8Array(await res.arrayBuffer());
      writeFileSync(partial, unzipEntry(zip, zipEntry));
    } else {
      await pipeline(Readable.fromWeb(res.body as never), createWriteStream(partial));
    }
    renameSync(partial, dest);
  } catch (e) {
    rmSync(partial, { force: true });
    if (e instanceof UserError) throw e;
    throw new UserError(`download of ${what} failed (${(e as Error).message}): ${hint}`);
  }
}

/** Extracts one file (stored or deflated) from a zip archive held in memory, via its central directory. */
export function unzipEntry(zip: Uint8Array, name: string): Uint8Array {
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 65557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error('not a zip archive');
  const count = view.getUint16(eocd + 10, true);
  let p = view.getUint32(eocd + 16, true);
  for (let k = 0; k < count; k++) {
    if (view.getUint32(p, true) !== 0x02014b50) throw new Error('corrupt zip central directory');
    const method = view.getUint16(p + 10, true);
    const compressed = view.getUint32(p + 20, true);
    const nameLen = view.getUint16(p + 28, true), extraLen = view.getUint16(p + 30, true), commentLen = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true);
    const entry = new TextDecoder().decode(zip.subarray(p + 46, p + 46 + nameLen));
    if (entry === name || entry.endsWith(`/${name}`)) {
      const dataStart = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
      const data = zip.subarray(dataStart, dataStart + compressed);
      if (method === 0) return data;
      if (method === 8) return inflateRawSync(data);
      throw new Error(`zip entry ${name} uses unsupported compression method ${method}`);
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  throw new Error(`zip has no entry ${name}`);
}

/** Reads a whole text file (gunzipping `.gz`); for small files only — the C4 shard is streamed (jsonl.ts). */
export function readTextFile(path: string): string {
  const bytes = readFileSync(path);
  return (path.endsWith('.gz') ? gunzipSync(bytes) : bytes).toString('utf8');
}
