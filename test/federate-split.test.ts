// The pieces of `federate` that need no network: the split of one text among simulated clients, the journal's
// torn-line recovery, the manifest's path check, and the CLI's refusals of bad options (one line, exit 2).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import yargs from 'yargs';
import { federateCommand } from '../src/cli/commands/federate.js';
import { isUserError } from '../src/errors.js';
import { Journal } from '../src/federate/journal.js';
import { safeRelativePath, secretEquals } from '../src/federate/protocol.js';
import { splitCalibration } from '../src/federate/split.js';
import { runCli } from './cli-helpers.js';
import { BUNDLED_STORIES } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'sparsellm-fedsplit-'));
after(() => rmSync(work, { recursive: true, force: true }));

const docs = Array.from({ length: 11 }, (_, i) => `story ${i} line one\nstory ${i} line two`);
const text = `${docs.join('\n<|endoftext|>\n')}\n`;
const docsOf = (share: string) => share.split('<|endoftext|>').map((d) => d.trim()).filter(Boolean);

test('documents split: whole documents, disjoint, together the whole text, balanced, fixed by the seed', () => {
  const shares = splitCalibration(text, 4, 'documents', 7);
  const got = shares.map(docsOf);
  assert.deepEqual(got.flat().sort(), [...docs].sort());
  assert.deepEqual(got.map((g) => g.length).sort(), [2, 3, 3, 3]);
  assert.deepEqual(splitCalibration(text, 4, 'documents', 7), shares);
  assert.notDeepEqual(splitCalibration(text, 4, 'documents', 8), shares);
});

test('contiguous split keeps the file order in consecutive runs; iid deals every line exactly once', () => {
  const runs = splitCalibration(text, 3, 'contiguous').map(docsOf);
  assert.deepEqual(runs.flat(), docs);
  assert.ok(runs.every((r) => r.length >= 3), `runs ${runs.map((r) => r.length)}`);
  const lines = text.split('\n').filter((l) => l.trim() && l.trim() !== '<|endoftext|>');
  const iid = splitCalibration(text, 5, 'iid', 1).map((s) => s.split('\n').filter(Boolean));
  assert.deepEqual(iid.flat().sort(), [...lines].sort());
  assert.ok(iid.every((s) => s.length === 4 || s.length === 5));
  assert.throws(() => splitCalibration(text, 12, 'documents'), /11 document\(s\).*fewer than --clients 12/);
});

test('journal: a line torn by a kill is cut off, the events before it are kept, appends continue cleanly', () => {
  const path = join(work, 'journal.jsonl');
  const j = new Journal(path);
  j.append({ e: 'done' });
  j.append({ e: 'commit', round: 1, model: 'm' });
  writeFileSync(path, `${readFileSync(path, 'utf8')}{"e":"upl`);
  assert.deepEqual(j.read(), [{ e: 'done' }, { e: 'commit', round: 1, model: 'm' }]);
  j.append({ e: 'failed', round: 2, reason: 'x' });
  assert.equal(new Journal(path).read().length, 3);
});

test('manifest paths and secrets', () => {
  for (const p of ['config.json', 'onnx/model.onnx']) assert.ok(safeRelativePath(p), p);
  for (const p of ['', '/etc/passwd', '../x', 'onnx/../../x', 'a//b', 'a\\b', './a']) assert.ok(!safeRelativePath(p), p);
  assert.ok(secretEquals('abcdefgh', 'abcdefgh'));
  assert.ok(!secretEquals('abcdefgh', 'abcdefgi'));
  assert.ok(!secretEquals(undefined, ''));
});

/** The `federate` command's option checks in this process (yargs + the handlers' checks, which throw before any work). */
async function parseInProcess(args: string[]): Promise<never> {
  await yargs(args).command(federateCommand).strict().fail((msg, err) => {
    throw err ?? new Error(msg);
  }).parseAsync();
  throw new Error(`accepted: ${args.join(' ')}`);
}

test('federate: bad options are one line on stderr and exit 2', async () => {
  // two real processes for the exit code and the one-line message (each costs a CLI start-up) ...
  const [noToken, badSparsity] = await Promise.all([
    runCli(['federate', 'join', '--server', 'http://127.0.0.1:1', '--calib', 'x.txt'], { SPARSELLM_FEDERATION_TOKEN: '' }),
    runCli(['federate', 'serve', '--model', BUNDLED_STORIES, '--sparsity', '1.5', '--out', join(work, 'x')], { SPARSELLM_FEDERATION_TOKEN: '' }),
  ]);
  assert.equal(noToken.code, 2);
  assert.match(noToken.stderr, /^sparsellm: give the federation token with --token/);
  assert.equal(badSparsity.code, 2, badSparsity.stderr);
  assert.match(badSparsity.stderr, /--sparsity must be in \(0, 1\)/);
  assert.equal(badSparsity.stderr.trim().split('\n').length, 1, badSparsity.stderr);
  // ... the other refusals in process: a UserError (which main() prints as one line, exit 2), thrown before any work
  const cases: [string[], RegExp][] = [
    [['federate', 'serve', '--model', BUNDLED_STORIES, '--cert', 'c.pem', '--out', join(work, 'x')], /--cert and --key go together/],
    [['federate', 'join', '--server', 'http://127.0.0.1:1', '--token', 'long-enough-token', '--calib', 'x.txt', '--capacity', '0'], /--capacity must be in \(0, 1\]/],
  ];
  for (const [args, pattern] of cases) {
    await assert.rejects(parseInProcess(args), (e: Error) => isUserError(e) && e.exitCode === 2 && pattern.test(e.message) && !e.message.includes('\n'));
  }
  assert.ok(!existsSync(join(work, 'x')), 'a refused serve wrote its --out');
});
