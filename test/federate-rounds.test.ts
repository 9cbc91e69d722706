// The server's round logic in process (fast: magnitude pruning, bundled stories260K, 5 blocks): layer sampling over
// two rounds (assignments, which round each block comes from, dense blocks no client sampled), a client dropped by
// --round-timeout while the round commits with the quorum, a round that misses its quorum, and nothing written outside
// --out; --aggregate standalone, journaled rejections, and a model.partial left by a crash mid-commit.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { request } from 'undici';
import { runClient } from '../src/federate/client.js';
import type { JournalEvent } from '../src/federate/journal.js';
import { HEADERS, PATHS, PROTOCOL_VERSION, randomHex } from '../src/federate/protocol.js';
import { assignBlocks } from '../src/federate/sampling.js';
import { FederationServer, type ServeOptions } from '../src/federate/server.js';
import { OnnxModel, openDecoderModel, zeroFraction } from '../src/model/index.js';
import type { Progress } from '../src/pipeline/progress.js';
import { BUNDLED_STORIES, projectRoot } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'sparsellm-fedrounds-'));
after(() => rmSync(work, { recursive: true, force: true }));
const log: string[] = [];
const progress: Progress = { start() {}, tick() {}, stop() {}, log: (l) => log.push(l) };
const TOKEN = 'rounds-test-token';
const calib = join(projectRoot, 'calibration', 'data', 'tinystories_sample.txt');

function options(name: string, o: Partial<ServeOptions>): ServeOptions {
  return {
    model: BUNDLED_STORIES, out: join(work, name, 'fed'), method: 'magnitude', sparsity: 0.6, nsamples: 2, seqlen: 32, rounds: 1, sample: 'capacity',
    aggregate: 'fedspallm', quorum: 1, clients: 1, seed: 3, roundTimeout: 60, token: TOKEN, host: '127.0.0.1', port: 0, resume: false, force: false, ...o,
  };
}

function server(name: string, o: Partial<ServeOptions>): FederationServer {
  mkdirSync(join(work, name));
  return new FederationServer(options(name, o), progress);
}

const client = (url: string, capacity: number) => runClient({ server: url, token: TOKEN, calib, capacity, model: BUNDLED_STORIES, cacheDir: join(work, 'cache'), seed: 0, retryTimeout: 5, pollMs: 100 }, progress);

/** A client that joins and then never answers. */
async function idleJoin(url: string): Promise<string> {
  const r = await request(`${url}${PATHS.join}`, {
    method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', [HEADERS.nonce]: randomHex() },
    body: JSON.stringify({ protocol: PROTOCOL_VERSION, capacity: 1 }),
  });
  return ((await r.body.json()) as { clientId: string }).clientId;
}

const journal = (s: string) => readFileSync(join(work, s, 'fed', 'state', 'journal.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as JournalEvent);

test('layer sampling over 2 rounds: assignments from assignBlocks(m, capacities, seed + r); each block from its latest sampled round, unsampled blocks dense; nothing outside --out', { timeout: 120_000 }, async () => {
  const s = server('sampling', { rounds: 2, clients: 2, quorum: 2 });
  const url = await s.start();
  try {
    await Promise.all([client(url, 0.4), client(url, 0.4)]);
    const result = await s.finished;
    const rounds = journal('sampling').filter((e): e is Extract<JournalEvent, { e: 'round' }> => e.e === 'round');
    assert.equal(rounds.length, 2);
    const expected = [1, 2].map((r) => assignBlocks(5, [0.4, 0.4], 3 + r));
    assert.deepEqual(rounds.map((r) => Object.values(r.assignments)), expected);
    assert.ok(expected.flat(2).every((b) => b >= 0 && b < 5) && expected.every((r) => r.every((c) => c.length === 2)), 'k = round(0.4 × 5) = 2');
    const source = (b: number) => (expected[1]!.flat().includes(b) ? 2 : expected[0]!.flat().includes(b) ? 1 : 'dense');
    const report = JSON.parse(readFileSync(join(work, 'sampling', 'fed', 'model', 'sparsellm-report.json'), 'utf8')) as { blockSource: Record<string, number | 'dense'> };
    assert.deepEqual(report.blockSource, Object.fromEntries([0, 1, 2, 3, 4].map((b) => [b, source(b)])));
    const global = OnnxModel.load(result.model);
    const { model: dense, layout } = openDecoderModel(BUNDLED_STORIES);
    for (const block of layout.blocks) {
      for (const l of block.linears) {
        const z = zeroFraction(global.readFloat32(l.weightName));
        if (source(block.index) === 'dense') assert.deepEqual(global.readFloat32(l.weightName), dense.readFloat32(l.weightName));
        else assert.ok(Math.abs(z - 0.6) < 0.01, `block ${block.index} ${l.role}: ${z}`);
      }
    }
    assert.deepEqual(readdirSync(join(work, 'sampling')), ['fed'], 'the server wrote outside --out');
    assert.deepEqual(readdirSync(join(work, 'sampling', 'fed')).sort(), ['model', 'state']);
  } finally {
    await s.close();
  }
});

test('--round-timeout drops a silent client and the round commits with the quorum; a round below quorum fails with its reason', { timeout: 120_000 }, async () => {
  const s = server('timeout', { clients: 2, quorum: 1, roundTimeout: 2, sample: 'all' });
  const url = await s.start();
  try {
    const silent = await idleJoin(url);
    await client(url, 1);
    await s.finished;
    const drops = journal('timeout').filter((e) => e.e === 'drop');
    assert.deepEqual(drops.map((d) => (d as { client: string }).client), [silent]);
    assert.match((drops[0] as { reason: string }).reason, /timed out/);
    const report = JSON.parse(readFileSync(join(work, 'timeout', 'fed', 'model', 'sparsellm-report.json'), 'utf8')) as { aggregationCounts: Record<string, { uploads: number }> };
    assert.deepEqual(Object.values(report.aggregationCounts).map((c) => c.uploads), [1, 1, 1, 1, 1]);
  } finally {
    await s.close();
  }
  // a finished federation is not resumed (it would wait forever)
  const again = new FederationServer(options('timeout', { clients: 2, quorum: 1, roundTimeout: 2, sample: 'all', resume: true }), progress);
  await assert.rejects(again.start(), /has finished.*nothing to resume/);

  const f = server('quorum', { clients: 2, quorum: 2, roundTimeout: 1 });
  const url2 = await f.start();
  try {
    await idleJoin(url2);
    await idleJoin(url2);
    await assert.rejects(f.finished, /round 1 failed: 0 client\(s\) completed it, the quorum is 2/);
    assert.equal(journal('quorum').at(-1)!.e, 'failed');
  } finally {
    await f.close();
  }
});

test('--aggregate standalone: the global model is the first-joined client\'s own; rejections with the token are journaled; a model.partial left by a crash mid-commit is rewritten on --resume', { timeout: 120_000 }, async () => {
  // two clients with different private texts (wanda depends on the calibration, so their uploads differ)
  const stories = readFileSync(calib, 'utf8').split('<|endoftext|>').map((d) => d.trim()).filter(Boolean);
  const texts = [stories.slice(0, 2), stories.slice(2)].map((docs, i) => {
    const f = join(work, `standalone-calib-${i}.txt`);
    writeFileSync(f, docs.join('\n<|endoftext|>\n'));
    return f;
  });
  const o: Partial<ServeOptions> = { method: 'wanda', clients: 2, quorum: 2, sample: 'all', aggregate: 'standalone' };
  const s = server('standalone', o);
  const url = await s.start();
  let first: Buffer;
  try {
    // one refused request with the token (journaled) and one without it (only logged)
    const bad = await request(`${url}${PATHS.join}`, {
      method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', [HEADERS.nonce]: randomHex() },
      body: JSON.stringify({ protocol: 999, capacity: 1 }),
    });
    assert.equal(bad.statusCode, 400);
    await bad.body.dump();
    const anon = await request(`${url}${PATHS.status}`);
    assert.equal(anon.statusCode, 401);
    await anon.body.dump();
    // c1 joins first (the designated client), then c2
    const c1 = runClientWith(url, texts[0]!);
    await until(() => s.status() as { clients: number }, (st) => st.clients === 1);
    await Promise.all([c1, runClientWith(url, texts[1]!)]);
    const result = await s.finished;
    first = readFileSync(result.model);
  } finally {
    await s.close();
  }
  const dir = join(work, 'standalone', 'fed');
  const global = OnnxModel.load(join(dir, 'model', 'onnx', 'model.onnx'));
  const { layout } = openDecoderModel(BUNDLED_STORIES);
  let differs = 0;
  for (const block of layout.blocks) {
    const own = (id: string) => readFileSync(join(dir, 'state', 'uploads', 'round-1', `block-${block.index}-${id}.f32`));
    const written = Buffer.concat(block.linears.map((l) => Buffer.from(global.readFloat32(l.weightName).buffer)));
    assert.ok(written.equals(own('c1')), `block ${block.index} is c1's upload`);
    if (!written.equals(own('c2'))) differs++;
  }
  assert.ok(differs > 0, 'the two clients uploaded the same weights: the test cannot tell whose model is global');
  const reasons = (file: string) => (JSON.parse(readFileSync(file, 'utf8')) as { rejections: { status: number; reason: string }[] }).rejections;
  assert.deepEqual(reasons(join(dir, 'model', 'sparsellm-report.json')).map((r) => r.status).sort(), [400, 401]);
  assert.deepEqual(journal('standalone').filter((e) => e.e === 'reject').map((e) => (e as { status: number }).status), [400], 'only the request with the token is journaled');

  // a crash during the final commit: the journal has every upload but no commit, and model.partial holds stale files
  const events = readFileSync(join(dir, 'state', 'journal.jsonl'), 'utf8').trim().split('\n');
  const cut = events.findIndex((l) => (JSON.parse(l) as JournalEvent).e === 'commit');
  writeFileSync(join(dir, 'state', 'journal.jsonl'), `${events.slice(0, cut).join('\n')}\n`);
  rmSync(join(dir, 'model'), { recursive: true });
  mkdirSync(join(dir, 'model.partial', 'onnx'), { recursive: true });
  writeFileSync(join(dir, 'model.partial', 'onnx', 'model.onnx'), 'half-written');
  writeFileSync(join(dir, 'model.partial', 'stale.bin'), 'from another run');
  const again = new FederationServer(options('standalone', { ...o, resume: true }), progress);
  await again.start();
  try {
    const result = await again.finished; // every participant had uploaded: it commits without any client
    assert.ok(readFileSync(result.model).equals(first), 'the rewritten model equals the one the interrupted commit was writing');
  } finally {
    await again.close();
  }
  assert.deepEqual(readdirSync(dir).sort(), ['model', 'state'], 'model.partial is gone');
  assert.ok(!existsSync(join(dir, 'model', 'stale.bin')), 'a stale file of model.partial reached the model');
  assert.deepEqual(reasons(join(dir, 'model', 'sparsellm-report.json')).map((r) => r.status), [400], 'the restarted server\'s report keeps the journaled rejection');
  assert.ok(log.some((l) => /removed .*model\.partial/.test(l)));
  assert.deepEqual(journal('standalone').slice(-2).map((e) => e.e), ['commit', 'done']);
});

const runClientWith = (url: string, text: string) => runClient({ server: url, token: TOKEN, calib: text, capacity: 1, model: BUNDLED_STORIES, cacheDir: join(work, 'cache'), seed: 0, retryTimeout: 5, pollMs: 100 }, progress);

async function until<T>(get: () => T, ok: (v: T) => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok(get())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
