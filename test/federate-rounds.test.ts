// The server's round logic in process (fast: magnitude pruning, bundled stories260K, 5 blocks): layer sampling over
// two rounds (assignments, which round each block comes from, dense blocks no client sampled), a client dropped by
// --round-timeout while the round commits with the quorum, a round that misses its quorum, and nothing written outside
// --out.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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
