// Helpers of the fault tests (issue #8): run the CLI as a child process, hash input files, build broken models.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from './helpers.js';
import type { CliResult } from './cli-helpers.js';
export { MAIN, runCli, startCli, type CliResult } from './cli-helpers.js';

export const STORIES = join(projectRoot, 'models', 'stories260K');

/** Runs `jobs` with at most `width` at a time (2-core machines: a few children at once). */
export async function pool<T>(jobs: (() => Promise<T>)[], width = 4): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const k = next++;
      results[k] = await jobs[k]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, worker));
  return results;
}

/** sha256 of every file under each path (files or folders), keyed by path. */
export function hashTree(...paths: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (p: string) => {
    if (!existsSync(p)) return;
    if (statSync(p).isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
    else out.set(p, createHash('sha256').update(readFileSync(p)).digest('hex'));
  };
  for (const p of paths) walk(p);
  return out;
}

/** The one stderr line of a failed run, checked for the one-line rule (no stack trace, not an internal error). */
export function oneLine(r: CliResult): string {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) throw new Error(`expected one stderr line, got ${lines.length}:\n${r.stderr}`);
  const line = lines[0]!;
  if (!line.startsWith('sparsellm: ')) throw new Error(`stderr line does not start with "sparsellm: ": ${line}`);
  if (/internal error|\bat .+:\d+:\d+/.test(line)) throw new Error(`not a user-facing message: ${line}`);
  return line;
}

export function tempRoot(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A copy of the bundled stories260K folder (without files named in `omit`). */
export function copyStories(dest: string, omit: string[] = []): string {
  mkdirSync(dest, { recursive: true });
  cpSync(STORIES, dest, { recursive: true, filter: (src) => !omit.some((o) => src.endsWith(`/${o}`)) });
  return dest;
}

/** Every file of an output folder except the report (timings differ), as relative path -> sha256. */
export function outputHashes(out: string): Map<string, string> {
  const all = hashTree(out);
  return new Map([...all].filter(([p]) => !p.endsWith('sparsellm-report.json')).map(([p, h]) => [p.slice(out.length), h]));
}

/** A refused command line and what must (not) be left of its output folder. */
export interface RefusedCase {
  name: string;
  args: string[];
  expect: RegExp;
  env?: Record<string, string>;
  /** --out of the case: absent afterwards (with its .partial) unless it existed before. */
  out?: string;
  outExisted?: boolean;
  /** `<out>.partial` existed before and must be kept. */
  partialExisted?: boolean;
}

/** The fault contract: one stderr line matching `c.expect`, exit 2, nothing on stdout, no output or `.partial` left. */
export function assertRefused(c: RefusedCase, r: CliResult): void {
  const line = oneLine(r);
  assert.match(line, c.expect);
  assert.equal(r.code, 2, `exit code of: ${line}`);
  assert.equal(r.stdout, '');
  if (c.out) {
    assert.equal(existsSync(c.out), c.outExisted === true, `${c.out} ${c.outExisted ? 'was removed' : 'was created'}`);
    assert.equal(existsSync(`${c.out}.partial`), c.partialExisted === true, `${c.out}.partial ${c.partialExisted ? 'was removed' : 'was left behind'}`);
  }
}
