// The hub path end to end against a hub on 127.0.0.1 (test/hub-server.ts), through HF_ENDPOINT: the
// Xenova-layout ONNX repo is pruned without its quantized/merged files, a second run downloads nothing, a cache
// written by another tool is used as is, HF_HUB_OFFLINE works from the cache, gated repos need HF_TOKEN, and an
// interrupted or corrupted download is resumed or refused, never used.
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createProgress } from '../src/pipeline/progress.js';
import { ensureOnnxModel } from '../src/convert/convert.js';
import { fetchHubModel } from '../src/hub/hub-model.js';
import { resolveModelArgument } from '../src/hub/registry.js';
import { runCli } from './cli-helpers.js';
import { FakeHub, sha256, type FakeRepo } from './hub-server.js';
import { projectRoot, sharedDir } from './helpers.js';

const stories = (f: string) => readFileSync(join(projectRoot, 'models', 'stories260K', f));
const dummy = (name: string) => Buffer.from(`${name}: a file sparsellm must never download\n`.repeat(50));

/** The bundled stories260K in the transformers.js (Xenova) layout, with the variants it must not fetch. */
function xenovaLayout(id: string, extra: Partial<FakeRepo> = {}): FakeRepo {
  return {
    id, ...extra,
    files: {
      '.gitattributes': Buffer.from('*.onnx filter=lfs diff=lfs merge=lfs -text\n'), 'README.md': Buffer.from(`# ${id}\n`),
      'config.json': stories('config.json'), 'tokenizer_config.json': stories('tokenizer_config.json'), 'tokenizer.model': stories('tokenizer.model'),
      'onnx/decoder_model.onnx': stories('onnx/model.onnx'),
      'onnx/decoder_model_quantized.onnx': dummy('quantized'), 'onnx/decoder_model_merged.onnx': dummy('merged'),
      'onnx/decoder_model_merged_quantized.onnx': dummy('merged quantized'), 'onnx/decoder_with_past_model.onnx': dummy('with past'),
    },
  };
}

const XENOVA = 'Xenova/stories260K';
const GATED = 'meta-llama/tiny-stories-gated';
const TOKEN = 'hf_testtokenwithaccess';
/** ../shared's HF checkpoints as hub repos, with the files a real one carries that must not be fetched. */
const shared = (() => {
  try {
    return sharedDir();
  } catch {
    return undefined;
  }
})();
function checkpointRepo(id: string, folder: string): FakeRepo {
  const dir = join(shared!, 'models-src', folder);
  const files: Record<string, Buffer> = { 'README.md': Buffer.from(`# ${id}\n`), 'pytorch_model.bin': dummy('pytorch'), 'original/consolidated.00.pth': dummy('original') };
  for (const f of readdirSync(dir)) files[f] = readFileSync(join(dir, f));
  return { id, files };
}
const CHECKPOINT = 'karpathy/stories260K-hf', SHARDED = 'karpathy/stories260K-hf-bf16-sharded';
/** The committed torch.save fixtures (test/fixtures/pytorch-bin) as .bin-only repos, laid out like facebook/opt-*. */
const BIN_FIXTURES = join(projectRoot, 'test', 'fixtures', 'pytorch-bin');
function binRepo(id: string, folder: string): FakeRepo {
  const files: Record<string, Buffer> = { 'README.md': Buffer.from(`# ${id}\n`), 'tf_model.h5': dummy('tensorflow'), 'flax_model.msgpack': dummy('flax') };
  for (const f of readdirSync(join(BIN_FIXTURES, folder))) files[f] = readFileSync(join(BIN_FIXTURES, folder, f));
  return { id, files };
}
const BIN_REPOS = [['facebook/opt-tiny-bin', 'opt-tiny'], ['meta-llama/llama-tiny-bin-sharded', 'llama-tiny-sharded']] as const;
const hub = new FakeHub([
  xenovaLayout(XENOVA, { tags: ['v1.0'] }), xenovaLayout(GATED, { gatedFor: [TOKEN] }),
  ...BIN_REPOS.map(([id, folder]) => binRepo(id, folder)),
  ...(shared ? [checkpointRepo(CHECKPOINT, 'stories260K-hf'), checkpointRepo(SHARDED, 'stories260K-hf-bf16-sharded')] : []),
]);
const root = mkdtempSync(join(tmpdir(), 'sparsellm-hub-'));
let n = 0;
const freshCache = () => join(root, `cache-${n++}`);
const env = (cache: string, more: Record<string, string> = {}) => ({ HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HOME: join(root, 'hf-home'), HF_TOKEN: '', HF_HUB_OFFLINE: '', ...more });
const quiet = createProgress(false);

function restoreEnv(saved: NodeJS.ProcessEnv): void {
  for (const k of Object.keys(env(''))) if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
}
/** Runs `fn` with the hub variables set in this process (resolveModelArgument reads them at each call). */
async function withEnv(vars: Record<string, string>, fn: () => Promise<void>): Promise<void> {
  const saved = { ...process.env };
  Object.assign(process.env, vars);
  try {
    await fn();
  } finally {
    restoreEnv(saved);
  }
}
/** The CLI prints a UserError's message as `sparsellm: <message>`: it must be one line. */
async function rejectsOneLine(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.equal(e.name, 'UserError', e.stack);
    assert.ok(!e.message.includes('\n'), e.message);
    assert.match(e.message, re);
    return true;
  });
}
const oneLine = (stderr: string) => {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  return lines[0]!;
};

before(() => hub.start());
after(async () => {
  await hub.stop();
  rmSync(root, { recursive: true, force: true });
});

describe('an ONNX repo in the Xenova layout', () => {
  const cache = freshCache();
  const repoDir = join(cache, 'models--Xenova--stories260K');

  test('prune downloads only the plain decoder, config and tokenizer into the standard cache layout', async () => {
    const out = join(root, 'pruned');
    const r = await runCli(['prune', '--model', XENOVA, '--method', 'magnitude', '--sparsity', '0.5', '--out', out, '--json'], env(cache));
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.ok(Math.abs(report.sparsity.overall - 0.5) < 0.01, String(report.sparsity.overall));
    const fetched = new Set(hub.downloads().map((q) => q.url.replace(/\?.*/, '')));
    assert.ok([...fetched].some((u) => u.endsWith('/resolve/' + hub.commitOf(XENOVA) + '/onnx/decoder_model.onnx')), [...fetched].join(' '));
    for (const bad of ['quantized', 'merged', 'with_past', 'README.md', '.gitattributes']) assert.ok(![...fetched].some((u) => u.includes(bad)), `${bad} was downloaded`);
    // models--Xenova--stories260K/{blobs,snapshots,refs} as huggingface_hub writes it
    const commit = hub.commitOf(XENOVA);
    assert.equal(readFileSync(join(repoDir, 'refs', 'main'), 'utf8'), commit);
    const pointer = join(repoDir, 'snapshots', commit, 'onnx', 'decoder_model.onnx');
    assert.ok(lstatSync(pointer).isSymbolicLink());
    const blob = sha256(stories('onnx/model.onnx'));
    assert.equal(readlinkSync(pointer), join('..', '..', '..', 'blobs', blob));
    assert.ok(existsSync(join(repoDir, 'blobs', blob)));
    for (const f of ['onnx/decoder_model.onnx', 'config.json', 'tokenizer.model']) assert.ok(existsSync(join(out, f)), `pruned output has ${f}`);
  });

  test('a second run downloads nothing', async () => {
    const before = hub.log.length;
    const r = await runCli(['inspect', XENOVA, '--json'], env(cache));
    assert.equal(r.code, 0, r.stderr);
    const later = hub.log.slice(before);
    assert.deepEqual(later.filter((q) => /resolve|cdn/.test(q.url)), []);
    assert.ok(JSON.parse(r.stdout).model.startsWith(join(repoDir, 'snapshots')));
  });

  test('HF_HUB_OFFLINE=1 works from the cache without a request, and names a missing file in one line', async () => {
    const before = hub.log.length;
    const ok = await runCli(['inspect', XENOVA, '--json'], env(cache, { HF_HUB_OFFLINE: '1' }));
    assert.equal(ok.code, 0, ok.stderr);
    const pointer = join(repoDir, 'snapshots', hub.commitOf(XENOVA), 'onnx', 'decoder_model.onnx');
    rmSync(join(repoDir, 'blobs', sha256(stories('onnx/model.onnx')))); // a cleaned cache: the pointer is left dangling
    const missing = await runCli(['inspect', XENOVA], env(cache, { HF_HUB_OFFLINE: '1' }));
    assert.equal(missing.code, 2);
    assert.match(oneLine(missing.stderr), /^sparsellm: onnx\/decoder_model\.onnx of Xenova\/stories260K is not in the Hugging Face cache .* and HF_HUB_OFFLINE is set: run once online/);
    assert.equal(hub.log.length, before, 'offline run asked the hub');
    await withEnv(env(cache), async () => {
      const model = await resolveModelArgument(XENOVA, { progress: quiet });
      assert.equal(model, pointer);
      assert.equal(hub.downloads().filter((q) => hub.log.indexOf(q) >= before && q.url.startsWith('/cdn/') && q.range !== 'bytes=0-0').length, 1, 'only the missing file was fetched');
      assert.ok(readFileSync(pointer).equals(stories('onnx/model.onnx')));
    });
  });

  test('offline in process: a snapshot without the graph, a repo not cached; online: a lost pointer is re-linked', async () => {
    const pointer = join(repoDir, 'snapshots', hub.commitOf(XENOVA), 'onnx', 'decoder_model.onnx');
    rmSync(pointer);
    await withEnv(env(cache, { HF_HUB_OFFLINE: '1' }), async () => {
      await rejectsOneLine(resolveModelArgument(XENOVA, { progress: quiet }), /^Xenova\/stories260K \(cached\) has neither an ONNX decoder .*; the hub was not asked \(HF_HUB_OFFLINE is set\): run once online/);
      await rejectsOneLine(resolveModelArgument('opt-125m', { progress: quiet }), /^Xenova\/opt-125m is not in the Hugging Face cache \(.*models--Xenova--opt-125m\) and HF_HUB_OFFLINE is set/);
    });
    const before = hub.log.length;
    await withEnv(env(cache), async () => assert.equal(await resolveModelArgument(XENOVA, { progress: quiet }), pointer));
    assert.deepEqual(hub.log.slice(before).filter((q) => /resolve|cdn/.test(q.url)), [], 'the blob was there: no download');
  });

  test('a hub that cannot be reached: the cached revision is used, with one line saying so', async () => {
    const lines: string[] = [];
    const progress = { ...quiet, log: (l: string) => void lines.push(l) };
    await withEnv(env(cache, { HF_ENDPOINT: 'http://127.0.0.1:9' }), async () => {
      assert.equal(await resolveModelArgument(XENOVA, { progress }), join(repoDir, 'snapshots', hub.commitOf(XENOVA), 'onnx', 'decoder_model.onnx'));
      assert.match(lines.join('\n'), /^cannot reach the hub at http:\/\/127\.0\.0\.1:9 \(.*\): using the cached Xenova\/stories260K$/);
      await rejectsOneLine(resolveModelArgument('nobody/elsewhere', { progress }), /^nobody\/elsewhere is not in the Hugging Face cache .* and cannot reach the hub at http:\/\/127\.0\.0\.1:9/);
    });
  });

  test('--revision: a tag is resolved to its commit and recorded in refs/; unknown revisions and repos are one line', async () => {
    await withEnv(env(cache), async () => {
      await resolveModelArgument(XENOVA, { revision: 'v1.0', progress: quiet });
      assert.equal(readFileSync(join(repoDir, 'refs', 'v1.0'), 'utf8'), hub.commitOf(XENOVA));
      // a commit needs no request once cached
      const before = hub.log.length;
      await resolveModelArgument(XENOVA, { revision: hub.commitOf(XENOVA), progress: quiet });
      assert.equal(hub.log.length, before);
      await rejectsOneLine(resolveModelArgument(XENOVA, { revision: 'v9', progress: quiet }), /^Xenova\/stories260K has no revision "v9"/);
      await rejectsOneLine(resolveModelArgument('nobody/no-such-model', { progress: quiet }), /^nobody\/no-such-model is not a model repository on http:\/\/127\.0\.0\.1:\d+ \(if it is private, set HF_TOKEN\)$/);
    });
  });
});

test('a cache written by another tool (blobs/ + snapshots/<sha>/ links + refs/main) is used as is', async () => {
  const cache = freshCache();
  const commit = hub.commitOf(XENOVA);
  const repoDir = join(cache, 'models--Xenova--stories260K');
  const files: Record<string, Buffer> = { 'config.json': stories('config.json'), 'tokenizer_config.json': stories('tokenizer_config.json'), 'tokenizer.model': stories('tokenizer.model'), 'onnx/decoder_model.onnx': stories('onnx/model.onnx') };
  for (const [path, content] of Object.entries(files)) {
    const blob = join(repoDir, 'blobs', sha256(content)); // any name: huggingface_hub uses the etag
    mkdirSync(dirname(blob), { recursive: true });
    writeFileSync(blob, content);
    const pointer = join(repoDir, 'snapshots', commit, path);
    mkdirSync(dirname(pointer), { recursive: true });
    symlinkSync(relative(dirname(pointer), blob), pointer);
  }
  mkdirSync(join(repoDir, 'refs'));
  writeFileSync(join(repoDir, 'refs', 'main'), commit);
  const before = hub.log.length;
  const r = await runCli(['inspect', XENOVA, '--json'], env(cache));
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).model, join(repoDir, 'snapshots', commit, 'onnx', 'decoder_model.onnx'));
  assert.deepEqual(hub.log.slice(before).filter((q) => /resolve|cdn/.test(q.url)), []);
});

describe('a gated repo', () => {
  const cache = freshCache();
  test('without a token, or with one lacking access: one line naming the repo and how to get access', async () => {
    const r = await runCli(['inspect', GATED], env(cache));
    assert.equal(r.code, 2);
    assert.match(oneLine(r.stderr), new RegExp(`^sparsellm: ${GATED} is a gated model and no token was given: accept its licence on http://127\\.0\\.0\\.1:\\d+/${GATED} \\(logged in\\), then create a read token at .*/settings/tokens and set HF_TOKEN=hf_\\.\\.\\.$`));
    await withEnv(env(cache, { HF_TOKEN: 'hf_someoneelse' }), () => rejectsOneLine(resolveModelArgument(GATED, { progress: quiet }), /is a gated model and the token in HF_TOKEN has no access to it yet: accept its licence/));
    await withEnv(env(cache, { HF_TOKEN: 'not-a-token' }), () => rejectsOneLine(resolveModelArgument(GATED, { progress: quiet }), /HF_TOKEN is not a Hugging Face access token \(they start with hf_\)/));
  });
  test('with HF_TOKEN: pruned, and the token went with every request', async () => {
    const before = hub.log.length;
    const out = join(root, 'pruned-gated');
    const r = await runCli(['prune', '--model', GATED, '--method', 'magnitude', '--sparsity', '0.5', '--out', out, '--json'], env(cache, { HF_TOKEN: TOKEN }));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(out, 'onnx')));
    const api = hub.log.slice(before).filter((q) => !q.url.startsWith('/cdn/'));
    assert.ok(api.length > 0 && api.every((q) => q.auth === `Bearer ${TOKEN}`));
  });
});

describe('interrupted and corrupted downloads (in process)', () => {
  const saved = { ...process.env };
  const use = (cache: string) => Object.assign(process.env, env(cache));
  after(() => restoreEnv(saved));
  const file = 'onnx/decoder_model.onnx';
  const content = stories('onnx/model.onnx');
  const blobDir = (cache: string) => join(cache, 'models--Xenova--stories260K', 'blobs');

  test('a connection dropped mid-file: one line, no blob; the next run resumes with a Range request', async () => {
    const cache = freshCache();
    use(cache);
    hub.drop.set(file, { bytes: 400_000, times: 1 });
    let message = '';
    try {
      await assert.rejects(fetchHubModel(XENOVA, { progress: quiet }), (e: Error) => {
        message = e.message;
        return true;
      });
    } finally {
      hub.drop.clear();
    }
    const blob = join(blobDir(cache), sha256(content));
    assert.ok(!existsSync(blob), 'a partial blob was kept');
    // the bytes that reached the file before the error: the server sent 400,000, but chunks still queued in the
    // response stream when the connection breaks are discarded with it, so under load fewer arrive (seen: 371,470)
    const kept = readFileSync(`${blob}.incomplete`).length;
    assert.ok(kept > 0 && kept <= 400_000, `partial file of ${kept} bytes`);
    // the message counts exactly the bytes kept
    const keptMb = (kept / 1e6).toFixed(1).replace('.', '\\.');
    assert.match(message, new RegExp(`^download of Xenova/stories260K/onnx/decoder_model\\.onnx stopped after ${keptMb} MB of 1\\.3 MB \\(.*\\): run the command again to resume it$`));
    assert.ok(!existsSync(join(cache, 'models--Xenova--stories260K', 'snapshots', hub.commitOf(XENOVA), file)));
    const before = hub.log.length;
    // the bar: one per file, total = the file's bytes, ticks in bytes (the resumed part first)
    const bars: { label: string; total: number; ticks: number[] }[] = [];
    const progress = { ...quiet, start: (label: string, total: number) => void bars.push({ label, total, ticks: [] }), tick: (n = 1) => void bars.at(-1)!.ticks.push(n) };
    const model = await fetchHubModel(XENOVA, { progress });
    assert.equal(model.downloaded, 1);
    assert.deepEqual(bars.map((b) => [b.label, b.total]), [[`${file} (resumed)`, content.length]]);
    assert.equal(bars[0]!.ticks[0], kept);
    assert.equal(bars[0]!.ticks.reduce((a, b) => a + b, 0), content.length);
    assert.ok(hub.log.slice(before).some((q) => q.url.startsWith('/cdn/') && q.range === `bytes=${kept}-${content.length - 1}`), 'no resume request');
    assert.ok(readFileSync(model.path).equals(content));
    assert.ok(!existsSync(`${blob}.incomplete`));
  });

  test('wrong bytes under the right ETag (LFS sha256, git sha1): refused, nothing kept', async () => {
    const cache = freshCache();
    use(cache);
    const config = stories('config.json');
    try {
      hub.corrupt.set('config.json', Buffer.from(config.toString().replace('"llama"', '"LLAMA"')));
      await assert.rejects(fetchHubModel(XENOVA, { progress: quiet }), /^UserError: refused Xenova\/stories260K\/config\.json: the downloaded file has git sha1 [0-9a-f]{40} instead of the hub's [0-9a-f]{40} \(corrupted in transit or by a proxy\); nothing was kept, run the command again$/);
      hub.corrupt.delete('config.json');
      const bad = Buffer.from(content);
      bad[1000]! ^= 0xff;
      hub.corrupt.set(file, bad);
      await assert.rejects(fetchHubModel(XENOVA, { progress: quiet }), /^UserError: refused Xenova\/stories260K\/onnx\/decoder_model\.onnx: the downloaded file has sha256 [0-9a-f]{64} instead of the hub's [0-9a-f]{64} /);
    } finally {
      hub.corrupt.clear();
    }
    const blob = join(blobDir(cache), sha256(content));
    assert.ok(!existsSync(blob) && !existsSync(`${blob}.incomplete`), 'a corrupt file was kept');
    assert.ok(!existsSync(join(cache, 'models--Xenova--stories260K', 'snapshots', hub.commitOf(XENOVA), file)));
    const model = await fetchHubModel(XENOVA, { progress: quiet });
    assert.ok(readFileSync(model.path).equals(content));
  });

  test('a partial file with bad bytes is restarted from zero, not completed', async () => {
    const cache = freshCache();
    use(cache);
    const incomplete = join(blobDir(cache), `${sha256(content)}.incomplete`);
    mkdirSync(dirname(incomplete), { recursive: true });
    writeFileSync(incomplete, Buffer.alloc(300_000, 7));
    const before = hub.log.length;
    const model = await fetchHubModel(XENOVA, { progress: quiet });
    assert.ok(readFileSync(model.path).equals(content));
    const ranges = hub.log.slice(before).filter((q) => q.url.startsWith(`/cdn/${sha256(content)}`) && q.range !== 'bytes=0-0').map((q) => q.range ?? 'all');
    assert.deepEqual(ranges, [`bytes=300000-${content.length - 1}`, 'all'], 'resumed, found bad, restarted from zero');
  });
});

describe('.bin-only checkpoint repos (the facebook/opt-* layout)', () => {
  const saved = { ...process.env };
  after(() => restoreEnv(saved));
  for (const [repo, folder] of BIN_REPOS) {
    test(`${repo}: config and the pytorch_model*.bin files (+ index) are downloaded, nothing else, and convert`, async () => {
      Object.assign(process.env, env(freshCache(), { SPARSELLM_CACHE: join(root, 'sparsellm-cache') }));
      const model = await fetchHubModel(repo, { progress: quiet });
      assert.equal(model.choice.kind, 'checkpoint');
      const expected = readdirSync(join(BIN_FIXTURES, folder)).sort();
      assert.deepEqual(readdirSync(model.path).sort(), expected);
      assert.ok(expected.some((f) => f.endsWith('.bin')));
      for (const f of expected) assert.ok(readFileSync(join(model.path, f)).equals(readFileSync(join(BIN_FIXTURES, folder, f))), f);
      const converted = await ensureOnnxModel(model.path);
      assert.ok(existsSync(join(converted, 'onnx', 'model.onnx')));
    });
  }
});

describe('checkpoint repos (../shared/models-src as hub repos)', { skip: shared ? false : 'no ../shared: checkpoint repos not served (set SPARSELLM_SHARED)' }, () => {
  const saved = { ...process.env };
  after(() => restoreEnv(saved));
  for (const [repo, folder, weights] of [
    [CHECKPOINT, 'stories260K-hf', ['model.safetensors']],
    [SHARDED, 'stories260K-hf-bf16-sharded', ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']],
  ] as const) {
    test(`${repo}: the snapshot folder gets config, safetensors and tokenizer, nothing else`, async () => {
      Object.assign(process.env, env(freshCache()));
      const before = hub.log.length;
      const model = await fetchHubModel(repo, { progress: quiet });
      assert.equal(model.choice.kind, 'checkpoint');
      assert.equal(model.path, join(process.env.HF_HUB_CACHE!, `models--${repo.replace('/', '--')}`, 'snapshots', hub.commitOf(repo)));
      const expected = ['config.json', ...weights, 'tokenizer.model', 'tokenizer_config.json'].sort();
      assert.deepEqual(readdirSync(model.path).sort(), expected);
      for (const f of expected) assert.ok(readFileSync(join(model.path, f)).equals(readFileSync(join(shared!, 'models-src', folder, f))), f);
      const urls = hub.log.slice(before).map((q) => q.url);
      assert.ok(!urls.some((u) => /pytorch_model|original|README/.test(u)), urls.join(' '));
    });
  }

  test('prune a checkpoint repo through HF_ENDPOINT: downloaded, converted once, pruned', async () => {
    const cache = freshCache();
    const out = join(root, 'pruned-checkpoint');
    const vars = env(cache, { SPARSELLM_CACHE: join(root, 'converted') });
    const r = await runCli(['prune', '--model', CHECKPOINT, '--method', 'magnitude', '--sparsity', '0.5', '--out', out, '--json'], vars);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.ok(Math.abs(report.sparsity.overall - 0.5) < 0.01, String(report.sparsity.overall));
    assert.ok(existsSync(join(cache, `models--${CHECKPOINT.replace('/', '--')}`, 'snapshots', hub.commitOf(CHECKPOINT), 'model.safetensors')));
    // convert --revision <commit> reads the same snapshot without a request
    const before = hub.log.length;
    const c = await runCli(['convert', CHECKPOINT, '--revision', hub.commitOf(CHECKPOINT), '--out', join(root, 'converted-out'), '--json'], vars);
    assert.equal(c.code, 0, c.stderr);
    assert.ok(existsSync(join(root, 'converted-out', 'onnx', 'model.onnx')));
    assert.equal(hub.log.length, before);
  });
});
