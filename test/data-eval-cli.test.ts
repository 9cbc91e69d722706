// `sparsellm eval` end to end: JSON output and one-line errors with a non-zero exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUNDLED_STORIES, needsShared, projectRoot, shared } from './helpers.js';

const stories = BUNDLED_STORIES;

function cli(...args: string[]) {
  const env = { ...process.env, ORT_DISABLE_TELEMETRY: '1', HF_HUB_OFFLINE: '1', HF_HOME: mkdtempSync(join(tmpdir(), 'sparsellm-hf-')) };
  return spawnSync(process.execPath, [join(projectRoot, 'bin', 'sparsellm.js'), 'eval', ...args], { encoding: 'utf8', env });
}

test('eval --per-document --json on the TinyStories sample', () => {
  const sample = join(projectRoot, 'calibration', 'data', 'tinystories_sample.txt'); // = ../shared/models-src/eval-text's copy
  const r = cli('--model', stories, '--dataset', sample, '--per-document', '--json');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, Record<string, number>>;
  assert.deepEqual(Object.keys(out), ['perplexity', 'tokens', 'windows']);
  assert.equal(out.tokens![sample], 1804); // 5 stories, every token after each BOS predicted once (README results table)
  assert.equal(out.windows![sample], 5); // the sample holds 5 stories
  assert.ok(Math.abs(out.perplexity![sample]! - 3.548) < 0.03); // dense stories260K, README table (3.55)
});

test('eval of the embedded tinystories set and wikitext2 windows (human table)', { skip: needsShared('data/wikitext2') }, () => {
  const r = cli('--model', stories, '--dataset', 'tinystories,wikitext2', '--seqlen', '256', '--batch', '4', '--max-windows', '4', '--quiet',
    '--data-dir', shared('data'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /tinystories\s+per-document\s+256/);
  assert.match(r.stdout, /wikitext2\s+windows\s+256\s+4\s+1024/); // --max-windows 4 × --seqlen 256 = 1024 tokens
});

test('bad inputs: one line on stderr, non-zero exit', () => {
  const cases = [
    ['--model', '/nonexistent/model', '--dataset', 'ptb'],
    ['--model', stories, '--dataset', 'nope'],
    ['--model', stories, '--dataset', 'ptb', '--seqlen', '4096'],
    ['--model', stories, '--dataset', 'c4', '--data-dir', mkdtempSync(join(tmpdir(), 'sparsellm-empty-'))],
    ['--model', stories, '--dataset', 'tinystories', '--batch', '0'],
  ];
  for (const args of cases) {
    const r = cli(...args, '--quiet');
    assert.notEqual(r.status, 0, args.join(' '));
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^sparsellm: /);
  }
});
