// A hub model id → local files in the Hugging Face cache: the repository's commit for the revision
// (modelInfo), its file listing (listFiles: tree with sizes and LFS sha256), the choice of files
// (choose.ts), and each chosen file downloaded, checked and linked into snapshots/<commit>/ (download.ts).
// With HF_HUB_OFFLINE=1, or when the hub cannot be reached, the cache alone answers.
import { join } from 'node:path';
import { listFiles, modelInfo } from '@huggingface/hub';
import { UserError } from '../errors.js';
import type { Progress } from '../pipeline/progress.js';
import { cachedCommit, COMMIT_HASH, fileSize, listFolderFiles, repoCacheFolder, snapshotFolder, writeRef } from './cache.js';
import { chooseModelFiles, type ModelChoice } from './choose.js';
import { ensureCachedFile, type HubFileEntry } from './download.js';
import { checkToken, hubSettings, type HubSettings } from './settings.js';

export interface HubModelOptions {
  /** Branch, tag or commit (default main). */
  revision?: string;
  /** --model-file: the file to load instead of the automatic choice. */
  modelFile?: string;
  progress: Progress;
  /** Files the registry says the repository holds (used to name what is missing offline). */
  knownFiles?: string[];
}

export interface HubModel {
  /** The .onnx file (ONNX repos) or the snapshot folder (checkpoint repos). */
  path: string;
  choice: ModelChoice;
  commit: string;
  /** Files fetched from the hub by this call (0 when the cache had everything). */
  downloaded: number;
}

class HubUnreachable extends Error {}

/**
 * fetch for @huggingface/hub: turns the hub's error codes (X-Error-Code) into one-line UserErrors, which the
 * library's HubApiError would otherwise reduce to a status, and a failed connection into HubUnreachable.
 */
function hubFetch(repo: string, revision: string, s: HubSettings): typeof fetch {
  return async (input, init) => {
    let res: Response;
    try {
      res = await fetch(input, init);
    } catch (e) {
      const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : String(e);
      throw new HubUnreachable(`cannot reach the hub at ${s.endpoint} (${cause})`);
    }
    if (res.ok) return res;
    const code = res.headers.get('x-error-code');
    const page = `${s.endpoint}/${repo}`;
    if (code === 'GatedRepo') {
      const why = s.token ? 'the token in HF_TOKEN has no access to it yet' : 'no token was given';
      throw new UserError(`${repo} is a gated model and ${why}: accept its licence on ${page} (logged in), then create a read token at ${s.endpoint}/settings/tokens and set HF_TOKEN=hf_...`);
    }
    if (code === 'RepoNotFound' || (res.status === 404 && !code && /\/api\/models\//.test(String(input)))) {
      throw new UserError(`${repo} is not a model repository on ${s.endpoint}${s.token ? '' : ' (if it is private, set HF_TOKEN)'}`);
    }
    if (code === 'RevisionNotFound') throw new UserError(`${repo} has no revision "${revision}" (a branch, tag or commit of ${page})`);
    if (res.status === 401 || res.status === 403) {
      const who = s.token ? 'the token in HF_TOKEN' : 'a request without a token (set HF_TOKEN)';
      throw new UserError(`the hub refused ${who} for ${repo} (${res.status}${code ? ` ${code}` : ''}): check the token and your access at ${page}`);
    }
    return res;
  };
}

export async function fetchHubModel(repo: string, o: HubModelOptions): Promise<HubModel> {
  const s = hubSettings();
  const revision = o.revision ?? 'main';
  const repoFolder = repoCacheFolder(s.cacheDir, repo);
  if (s.offline) return fromCache(repo, revision, repoFolder, o, 'HF_HUB_OFFLINE is set');
  checkToken(s.token);
  // a commit is immutable: when the cache already holds what it needs, no request at all
  if (COMMIT_HASH.test(revision)) {
    try {
      return fromCache(repo, revision, repoFolder, o, '');
    } catch {
      /* fetch what is missing */
    }
  }
  const fetch = hubFetch(repo, revision, s);
  const common = { hubUrl: s.endpoint, accessToken: s.token, fetch };
  let commit: string;
  const listing: HubFileEntry[] = [];
  try {
    commit = (await modelInfo({ ...common, name: repo, revision, additionalFields: ['sha'] })).sha as string;
    if (!commit) throw new UserError(`the hub at ${s.endpoint} gave no commit for ${repo} at ${revision}`);
    for await (const e of listFiles({ ...common, repo, revision: commit, recursive: true })) {
      if (e.type === 'file') listing.push({ path: e.path, size: e.size, oid: e.oid, lfs: e.lfs });
    }
  } catch (e) {
    if (e instanceof HubUnreachable) return fromCache(repo, revision, repoFolder, o, `${e.message}`);
    throw hubError(repo, e);
  }
  const choice = chooseModelFiles(repo, listing.map((f) => f.path), o.modelFile);
  for (const note of choice.notes) o.progress.log(note);
  const ctx = { repo, commit, repoFolder, endpoint: s.endpoint, token: s.token, fetch, progress: o.progress };
  let downloaded = 0;
  const byPath = new Map(listing.map((f) => [f.path, f]));
  try {
    for (const path of [...choice.optional, ...choice.required]) {
      if ((await ensureCachedFile(ctx, byPath.get(path)!)).downloaded) downloaded++;
    }
  } catch (e) {
    if (e instanceof HubUnreachable) throw new UserError(`${e.message}: run the command again to resume the download`);
    throw hubError(repo, e);
  }
  writeRef(repoFolder, revision, commit);
  const snapshot = snapshotFolder(repoFolder, commit);
  return { path: choice.entry ? join(snapshot, choice.entry) : snapshot, choice, commit, downloaded };
}

function hubError(repo: string, e: unknown): Error {
  if (e instanceof UserError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new UserError(`the hub request for ${repo} failed: ${message.split('\n')[0]}`);
}

/** The model from the cache alone; `reason` says why the hub is not asked (empty: just trying). */
function fromCache(repo: string, revision: string, repoFolder: string, o: HubModelOptions, reason: string): HubModel {
  const at = revision === 'main' ? '' : ` at revision ${revision}`;
  const commit = cachedCommit(repoFolder, revision);
  const snapshot = commit ? snapshotFolder(repoFolder, commit) : undefined;
  const present = snapshot ? listFolderFiles(snapshot, '', true) : [];
  if (!commit || present.length === 0) {
    throw new UserError(`${repo}${at} is not in the Hugging Face cache (${repoFolder}) and ${reason}: run once online, or pass a local folder with --model`);
  }
  // Known files name what a complete download has, so a missing graph is reported rather than another file chosen.
  let choice: ModelChoice;
  try {
    choice = chooseModelFiles(`${repo} (cached${at})`, new Set([...present, ...(o.knownFiles ?? [])]), o.modelFile);
  } catch (e) {
    throw new UserError(`${(e as Error).message}; the hub was not asked (${reason || 'commit given'}): run once online to download the model`);
  }
  const missing = choice.required.filter((f) => fileSize(join(snapshot!, f)) === undefined);
  if (missing.length) {
    throw new UserError(`${missing.join(', ')} of ${repo}${at} is not in the Hugging Face cache (${snapshot}) and ${reason || 'the hub was not asked'}: run once online to download it`);
  }
  for (const note of choice.notes) o.progress.log(note);
  if (reason && !/HF_HUB_OFFLINE/.test(reason)) o.progress.log(`${reason}: using the cached ${repo}${at}`);
  return { path: choice.entry ? join(snapshot!, choice.entry) : snapshot!, choice, commit, downloaded: 0 };
}
