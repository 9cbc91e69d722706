// `federate serve --cert/--key` serves https: one in-process server and one in-process client (join --ca) run a full
// round on the bundled stories260K over TLS with a self-signed certificate made by openssl. Without the CA, or over
// plain http, nothing connects; with a wrong token the server answers 401.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Agent, request } from 'undici';
import { runClient } from '../src/federate/client.js';
import { PATHS } from '../src/federate/protocol.js';
import { FederationServer } from '../src/federate/server.js';
import { OnnxModel, openDecoderModel, zeroFraction } from '../src/model/index.js';
import type { Progress } from '../src/pipeline/progress.js';
import { BUNDLED_STORIES, projectRoot } from './helpers.js';

const work = mkdtempSync(join(tmpdir(), 'sparsellm-fedtls-'));
after(() => rmSync(work, { recursive: true, force: true }));
const lines: string[] = [];
const progress: Progress = { start() {}, tick() {}, stop() {}, log: (l) => lines.push(l) };

function openssl(): string | false {
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(work, 'key.pem'), '-out', join(work, 'cert.pem')], { stdio: 'ignore' });
    return false;
  } catch {
    return 'needs the openssl command to make a test certificate';
  }
}

test('https round trip: a client trusting the certificate completes a round; no CA, plain http or a wrong token get nowhere', { skip: openssl(), timeout: 120_000 }, async () => {
  const out = join(work, 'fed');
  const server = new FederationServer({
    model: BUNDLED_STORIES, out, method: 'magnitude', sparsity: 0.6, nsamples: 2, seqlen: 32, rounds: 1, sample: 'all', aggregate: 'fedspallm',
    quorum: 1, clients: 1, seed: 0, roundTimeout: 60, token: 'tls-test-token', host: '127.0.0.1', port: 0,
    tls: { cert: join(work, 'cert.pem'), key: join(work, 'key.pem') }, resume: false, force: false,
  }, progress);
  const url = await server.start();
  try {
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const trusted = new Agent({ connect: { ca: readFileSync(join(work, 'cert.pem')) } });
    const ok = await request(`${url}${PATHS.status}`, { dispatcher: trusted, headers: { authorization: 'Bearer tls-test-token' } });
    assert.equal(ok.statusCode, 200);
    assert.equal(((await ok.body.json()) as { round: number }).round, 0);
    const wrong = await request(`${url}${PATHS.status}`, { dispatcher: trusted, headers: { authorization: 'Bearer not-the-token' } });
    assert.equal(wrong.statusCode, 401);
    await wrong.body.dump();
    await assert.rejects(request(`${url}${PATHS.status}`, { headers: { authorization: 'Bearer tls-test-token' } }), /self[- ]signed|certificate/i);
    await assert.rejects(request(`${url.replace('https', 'http')}${PATHS.status}`, { headers: { authorization: 'Bearer tls-test-token' } }));

    const joined = await runClient({
      server: url, token: 'tls-test-token', calib: join(projectRoot, 'calibration', 'data', 'tinystories_sample.txt'), capacity: 1,
      cacheDir: join(work, 'cache'), ca: join(work, 'cert.pem'), seed: 0, retryTimeout: 10,
    }, progress);
    assert.equal(joined.uploadedBlocks, 5);
    assert.ok(existsSync(join(work, 'cache')), 'the client downloaded the model over https');
    const result = await server.finished;
    const model = OnnxModel.load(result.model);
    const { layout } = openDecoderModel(BUNDLED_STORIES);
    const linears = layout.blocks.flatMap((b) => b.linears);
    assert.equal(linears.length, 35);
    // one client: FedSpaLLM's aggregate of a single upload is that upload, at the target sparsity (magnitude: per matrix)
    for (const l of linears) assert.ok(Math.abs(zeroFraction(model.readFloat32(l.weightName)) - 0.6) < 0.01, `zero fraction of block ${l.block} ${l.role}`);
  } finally {
    await server.close();
  }
});
