// One file from the hub into the cache, through @huggingface/hub's downloadFile (HTTP, redirects, Range
// requests, xet). What the library's downloadFileToCacheDir does not do is added around it: a progress bar with
// bytes and ETA, resuming a `.incomplete` blob with a Range request, and checking size and hash against the
// repository listing (sha256 = the LFS oid for LFS files, the git blob sha1 otherwise) before the blob is
// renamed into place, so a partial or corrupt file never reaches blobs/ or snapshots/.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { downloadFile } from '@huggingface/hub';
import { UserError } from '../errors.js';
import type { Progress } from '../pipeline/progress.js';
import { fileSize, linkIntoSnapshot } from './cache.js';

/** A file as the hub's tree / paths-info listing describes it. */
export interface HubFileEntry {
  path: string;
  size: number;
  /** git blob sha1 */
  oid?: string;
  lfs?: { oid: string; size: number };
}

export interface DownloadContext {
  repo: string;
  commit: string;
  repoFolder: string;
  endpoint: string;
  token?: string;
  fetch: typeof fetch;
  progress: Progress;
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** The hash the hub states for a file, and a hasher that computes the same over the file's bytes. */
function expectedHash(file: HubFileEntry): { etag: string; algorithm: string; hasher: () => Hash } {
  if (file.lfs) return { etag: file.lfs.oid, algorithm: 'sha256', hasher: () => createHash('sha256') };
  if (!file.oid) throw new UserError(`the hub gave no hash for ${file.path}: cannot check the download`);
  // git's object id: sha1("blob <size>\0" + content)
  return { etag: file.oid, algorithm: 'git sha1', hasher: () => createHash('sha1').update(`blob ${file.size}\0`) };
}

async function hashFilePrefix(path: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}

/**
 * Returns snapshots/<commit>/<path>, downloading the blob unless the cache has it. A pointer or blob whose size
 * differs from the hub's is treated as absent (a cache another tool left half-written).
 */
export async function ensureCachedFile(ctx: DownloadContext, file: HubFileEntry): Promise<{ path: string; downloaded: boolean }> {
  const pointer = join(ctx.repoFolder, 'snapshots', ctx.commit, file.path);
  if (fileSize(pointer) === file.size) return { path: pointer, downloaded: false };
  const { etag } = expectedHash(file);
  const blob = join(ctx.repoFolder, 'blobs', etag);
  if (fileSize(blob) === file.size) {
    linkIntoSnapshot(blob, pointer);
    return { path: pointer, downloaded: false };
  }
  rmSync(blob, { force: true });
  mkdirSync(dirname(blob), { recursive: true });
  try {
    await downloadBlob(ctx, file, blob, true);
  } finally {
    ctx.progress.stop();
  }
  linkIntoSnapshot(blob, pointer);
  return { path: pointer, downloaded: true };
}

async function downloadBlob(ctx: DownloadContext, file: HubFileEntry, blob: string, mayRestart: boolean): Promise<void> {
  const { etag, algorithm, hasher } = expectedHash(file);
  const incomplete = `${blob}.incomplete`;
  let offset = fileSize(incomplete) ?? 0;
  if (offset >= file.size) {
    rmSync(incomplete, { force: true });
    offset = 0;
  }
  const hash = hasher();
  if (offset > 0) await hashFilePrefix(incomplete, hash);

  const name = `${ctx.repo}/${file.path}`;
  ctx.progress.start(`${file.path}${offset ? ' (resumed)' : ''}`, file.size);
  if (offset) ctx.progress.tick(offset, `${mb(offset)} / ${mb(file.size)}`);
  let received = offset;
  const out = await open(incomplete, offset ? 'a' : 'w');
  try {
    const remote = await downloadFile({ repo: ctx.repo, path: file.path, revision: ctx.commit, hubUrl: ctx.endpoint, accessToken: ctx.token, fetch: ctx.fetch });
    if (!remote) throw new UserError(`${name} is listed at ${ctx.commit} but the hub does not serve it (404)`);
    if (remote.size !== file.size) throw new CorruptDownload(`the hub serves ${remote.size} bytes of ${name}, its listing says ${file.size}`);
    const stream = (offset ? remote.slice(offset) : remote).stream();
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) {
      received += chunk.length;
      if (received > file.size) throw new CorruptDownload(`the hub sent more than the ${file.size} bytes of ${name}`);
      hash.update(chunk);
      await out.write(chunk);
      ctx.progress.tick(chunk.length, `${mb(received)} / ${mb(file.size)}`);
    }
  } catch (e) {
    await out.close();
    if (e instanceof CorruptDownload) {
      rmSync(incomplete, { force: true });
      throw new UserError(`refused ${name}: ${e.message}; the partial file was deleted, run the command again`);
    }
    if (e instanceof UserError) throw e;
    const reason = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e);
    throw new UserError(`download of ${name} stopped after ${mb(received)} of ${mb(file.size)} (${reason}): run the command again to resume it`);
  }
  await out.close();
  const digest = hash.digest('hex');
  if (received !== file.size || digest !== etag) {
    rmSync(incomplete, { force: true });
    // a resumed file may carry bad bytes from an earlier attempt: start once more from zero
    if (offset > 0 && mayRestart) return downloadBlob(ctx, file, blob, false);
    const what = received !== file.size ? `${received} bytes instead of ${file.size}` : `${algorithm} ${digest} instead of the hub's ${etag}`;
    throw new UserError(`refused ${name}: the downloaded file has ${what} (corrupted in transit or by a proxy); nothing was kept, run the command again`);
  }
  renameSync(incomplete, blob);
}

class CorruptDownload extends Error {}

