// The Hugging Face cache layout, shared with huggingface_hub, transformers and transformers.js:
//   <cache>/models--org--name/blobs/<etag>               file contents (etag = sha256 for LFS files, git sha1 otherwise)
//   <cache>/models--org--name/snapshots/<commit>/<path>  relative symlinks into blobs/
//   <cache>/models--org--name/refs/<branch or tag>       the commit the name pointed to at the last download
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { getRepoFolderName } from '@huggingface/hub';

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

export function repoCacheFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, getRepoFolderName({ name: repo, type: 'model' }));
}

/** The commit a revision names in the cache: itself when it is a commit hash, else refs/<revision>. */
export function cachedCommit(repoFolder: string, revision: string): string | undefined {
  if (COMMIT_HASH.test(revision)) return revision;
  const ref = join(repoFolder, 'refs', revision);
  return existsSync(ref) ? readFileSync(ref, 'utf8').trim() : undefined;
}

export function writeRef(repoFolder: string, revision: string, commit: string): void {
  if (revision === commit) return;
  const ref = join(repoFolder, 'refs', revision);
  mkdirSync(dirname(ref), { recursive: true });
  writeFileSync(ref, commit);
}

export function snapshotFolder(repoFolder: string, commit: string): string {
  return join(repoFolder, 'snapshots', commit);
}

/**
 * Paths (with '/') of the files in a folder. Links whose blob is gone are left out, or listed with
 * `withBrokenLinks` (a snapshot still names the files it had).
 */
export function listFolderFiles(folder: string, prefix = '', withBrokenLinks = false): string[] {
  if (!existsSync(folder)) return [];
  const out: string[] = [];
  for (const e of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, e.name);
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (!existsSync(path)) {
      if (withBrokenLinks && e.isSymbolicLink()) out.push(rel);
      continue;
    }
    if (statSync(path).isDirectory()) out.push(...listFolderFiles(path, rel, withBrokenLinks));
    else out.push(rel);
  }
  return out.sort();
}

/** Size of the file a path leads to (following links), or undefined when there is none. */
export function fileSize(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}

/** Points snapshots/<commit>/<path> at the blob with a relative symlink (a copy where links are not allowed). */
export function linkIntoSnapshot(blobPath: string, pointerPath: string): void {
  mkdirSync(dirname(pointerPath), { recursive: true });
  try {
    lstatSync(pointerPath);
    rmSync(pointerPath);
  } catch {
    /* no old pointer */
  }
  try {
    symlinkSync(relative(dirname(pointerPath), blobPath), pointerPath);
  } catch {
    copyFileSync(blobPath, pointerPath);
  }
}
