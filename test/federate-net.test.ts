// `sparsellm federate serve | join` as real processes on loopback (bundled stories260K: 5 blocks × 7 linears).
// One federation goes through every fault the issue names: a client killed mid-upload, malformed uploads (NaN, wrong
// shape, wrong dtype, sparsity off target), unauthenticated requests, a replayed request, a stale round, an
// unassigned block, and a server SIGKILL'ed and restarted with --resume. Its global model must equal, byte for byte,
// the model of an uninterrupted federation of the two clients whose uploads were accepted (run in this process with
// the same server and client code, so that only the faulty run pays for process start-ups). Every client's traffic
// goes through a recording TCP proxy; the recorded bytes must contain none of the clients' calibration text or
// token ids (checked with a positive control, so the detector itself is tested).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { request } from 'undici';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { OnnxModel } from '../src/model/index.js';
import { runClient } from '../src/federate/client.js';
import { HEADERS, PATHS, PROTOCOL_VERSION, encodeTensorHeader, randomHex, type Assignment, type JoinResponse, type TensorSpec } from '../src/federate/protocol.js';
import { FederationServer } from '../src/federate/server.js';
import { splitCalibration } from '../src/federate/split.js';
import type { Progress } from '../src/pipeline/progress.js';
import { BUNDLED_STORIES, projectRoot } from './helpers.js';

const MODEL = BUNDLED_STORIES;
// the child processes run with one solver thread; so does the in-process reference run (same float sums)
process.env.SPARSELLM_THREADS = '1';
const TOKEN = 'test-federation-token-0123';
const work = mkdtempSync(join(tmpdir(), 'sparsellm-fednet-'));
const spawned: ChildProcess[] = [];
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of spawned) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(closers.map((c) => c()));
  rmSync(work, { recursive: true, force: true });
});
const t0 = Date.now();
/** A line on stderr per phase, so a hang shows where it is. */
const step = (what: string) => process.env.SPARSELLM_TEST_VERBOSE && process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}\n`);

// three private texts: the bundled TinyStories sample (5 stories) dealt by documents
const texts = splitCalibration(readFileSync(join(projectRoot, 'calibration', 'data', 'tinystories_sample.txt'), 'utf8'), 3, 'documents', 0);
const calib = texts.map((t, i) => {
  const f = join(work, `private-${i}.txt`);
  writeFileSync(f, t);
  return f;
});
const SERVE = ['--model', MODEL, '--sparsity', '0.7', '--method', 'sparsegpt', '--nsamples', '4', '--seqlen', '64', '--quorum', '2', '--token', TOKEN, '--host', '127.0.0.1', '--round-timeout', '120'];

interface Proc {
  child: ChildProcess;
  out: string;
  err: string;
  exit: Promise<number | null>;
}

function cli(args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', join(projectRoot, 'src', 'cli', 'main.ts'), ...args], {
    cwd: projectRoot, env: { ...process.env, ORT_DISABLE_TELEMETRY: '1', SPARSELLM_THREADS: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.push(child);
  const p: Proc = { child, out: '', err: '', exit: new Promise((res) => child.on('exit', (code) => res(code))) };
  child.stdout!.on('data', (d) => (p.out += d));
  child.stderr!.on('data', (d) => (p.err += d));
  return p;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 90_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(150);
  }
}

/**
 * A TCP proxy in front of the server for one client: records every byte the client sends, and can hold the client's
 * next upload (`PUT /v1/rounds/`) after `afterBytes` bytes of it, to cut it mid-body.
 */
class RecordingProxy {
  readonly sent: Buffer[] = [];
  private server!: Server;
  port = 0;
  hold: { afterBytes: number; held?: () => void } | null = null;
  readonly sockets = new Set<Socket>();

  constructor(private readonly target: () => number) {}

  async start(): Promise<this> {
    this.server = createServer((client) => {
      const upstream = connect(this.target(), '127.0.0.1');
      this.sockets.add(client);
      let text = '';
      let forwarded = 0;
      let limit = Infinity;
      client.on('data', (chunk: Buffer) => {
        this.sent.push(Buffer.from(chunk));
        if (this.hold && limit === Infinity) {
          const at = (text + chunk.toString('latin1')).indexOf('PUT /v1/rounds/');
          if (at >= 0) {
            limit = at + this.hold.afterBytes;
            const cb = this.hold.held;
            this.hold = null;
            setTimeout(() => cb?.(), 300);
          }
          text = (text + chunk.toString('latin1')).slice(-64);
        }
        const room = Math.max(0, limit - forwarded);
        const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
        forwarded += chunk.length;
        if (part.length) upstream.write(part);
      });
      upstream.on('data', (d) => client.write(d));
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
    closers.push(() => this.close());
    return this;
  }

  /** Holds the next upload; resolves once it is held (its first bytes reached the server). */
  holdNextUpload(afterBytes: number): Promise<void> {
    return new Promise((res) => (this.hold = { afterBytes, held: res }));
  }

  bytes(): Buffer {
    return Buffer.concat(this.sent);
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => (this.server.listening ? this.server.close(() => r()) : r()));
  }
}

/** A hand-driven client speaking the protocol, for the requests a real client never sends. */
class RawClient {
  id = '';
  key = '';
  constructor(private readonly port: () => number) {}
  private url(path: string) {
    return `http://127.0.0.1:${this.port()}${path}`;
  }
  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${TOKEN}`, [HEADERS.client]: this.id, [HEADERS.clientKey]: this.key, ...extra };
  }
  async join(): Promise<void> {
    const r = await request(this.url(PATHS.join), {
      method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', [HEADERS.nonce]: randomHex() },
      body: JSON.stringify({ protocol: PROTOCOL_VERSION, capacity: 1, name: 'raw' }),
    });
    assert.equal(r.statusCode, 200);
    const j = (await r.body.json()) as JoinResponse;
    this.id = j.clientId;
    this.key = j.clientKey;
  }
  async assignment(): Promise<Assignment> {
    return (await (await request(this.url(PATHS.assignment), { headers: this.headers() })).body.json()) as Assignment;
  }
  /** PUT a block: `values` per tensor, with overridable headers; returns status and error message. */
  async upload(round: number, block: number, specs: TensorSpec[], values: Float32Array[], override: Record<string, string> = {}): Promise<{ status: number; error: string }> {
    const body = Buffer.concat(values.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)));
    const r = await request(this.url(`${PATHS.upload}/${round}/blocks/${block}`), {
      method: 'PUT',
      headers: this.headers({
        'content-type': 'application/octet-stream', [HEADERS.nonce]: randomHex(), [HEADERS.sha256]: createHash('sha256').update(body).digest('hex'),
        [HEADERS.dtype]: 'float32', [HEADERS.tensors]: encodeTensorHeader(specs), ...override,
      }),
      body,
    });
    const text = await r.body.text();
    return { status: r.statusCode, error: r.statusCode === 200 ? '' : (JSON.parse(text) as { error: string }).error };
  }
}

/** The dense weights of a block, pruned to 70 % by magnitude per matrix (a valid upload's shape and sparsity). */
function magnitudePruned(specs: TensorSpec[], sparsity: number): Float32Array[] {
  const model = OnnxModel.load(join(MODEL, 'onnx', 'model.onnx'));
  return specs.map((s) => {
    const w = model.readFloat32(s.name);
    const order = [...w.keys()].sort((a, b) => Math.abs(w[a]!) - Math.abs(w[b]!));
    for (let t = 0; t < Math.round(sparsity * w.length); t++) w[order[t]!] = 0;
    return w;
  });
}

interface Participant { name: string | null; uploaded: number[]; blocks: number[]; dropped: string | null }

async function status(port: number): Promise<{ participants: Record<string, Participant>; round: number; done: boolean }> {
  const r = await request(`http://127.0.0.1:${port}${PATHS.status}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  return (await r.body.json()) as never;
}

/** The participant of the open round that joined with --name `name`. */
async function participant(port: number, name: string): Promise<Participant | undefined> {
  return Object.values((await status(port)).participants).find((p) => p.name === name);
}

/**
 * A federation of clients A and B only (the accepted set of the faulty run), start to finish, uninterrupted. It runs in
 * this process with the same server and client code as the CLI (the faulty run is the one in real processes), with
 * the options `federate serve ${SERVE}` and `federate join --model MODEL` give, one solver thread like the children.
 */
async function cleanRun(out: string): Promise<Buffer> {
  const quiet: Progress = { start() {}, tick() {}, stop() {}, log() {} };
  const server = new FederationServer({
    model: MODEL, out, method: 'sparsegpt', sparsity: 0.7, nsamples: 4, seqlen: 64, rounds: 1, sample: 'capacity', aggregate: 'fedspallm',
    quorum: 2, clients: 2, seed: 0, roundTimeout: 120, token: TOKEN, host: '127.0.0.1', port: 0, resume: false, force: false, verbose: false,
  }, quiet);
  const url = await server.start();
  try {
    await Promise.all([0, 1].map((i) => runClient({ server: url, token: TOKEN, calib: calib[i]!, capacity: 1, model: MODEL, cacheDir: join(work, 'cache-clean'), seed: 0, retryTimeout: 60 }, quiet)));
    const result = await server.finished;
    return readFileSync(result.model);
  } finally {
    await server.close();
  }
}

test('federation on loopback survives a killed client, malformed and unauthenticated uploads, a replay and a server restart; its model equals an uninterrupted run byte for byte; no private text or token id reaches the server', { timeout: 240_000 }, async () => {
  // the uninterrupted reference federation runs alongside (its own port and folder)
  const cleanModel = cleanRun(join(work, 'clean'));
  cleanModel.catch(() => {});
  let port = await freePort();
  const out = join(work, 'fed');
  const proxies = await Promise.all([0, 1, 2].map(() => new RecordingProxy(() => port).start()));
  // 3 real clients (A downloads the model, B and C use their own copy) + 4 hand-driven ones = 7 before round 1
  let server = cli(['federate', 'serve', ...SERVE, '--port', String(port), '--clients', '7', '--out', out]);
  const joinArgs = (i: number) => ['federate', 'join', '--server', `http://127.0.0.1:${proxies[i]!.port}`, '--token', TOKEN, '--calib', calib[i]!, '--quiet', '--retry-timeout', '90'];
  const heldB = proxies[1]!.holdNextUpload(100_000); // B: its first upload (181 kB) hangs mid-body until the server is gone
  const heldC = proxies[2]!.holdNextUpload(3_000); // C: killed in the middle of its first upload
  const raw = [0, 1, 2, 3].map(() => new RawClient(() => port));
  step('waiting for the server');
  await until('the server', () => status(port));
  for (const r of raw) await r.join();

  // unauthenticated requests change nothing (the journal's bytes stay the same)
  const journal = join(out, 'state', 'journal.jsonl');
  const before = readFileSync(journal);
  for (const auth of [undefined, 'Bearer wrong-token-0000', `Bearer ${TOKEN}x`]) {
    const r = await request(`http://127.0.0.1:${port}${PATHS.join}`, {
      method: 'POST', headers: { ...(auth ? { authorization: auth } : {}), 'content-type': 'application/json', [HEADERS.nonce]: randomHex() },
      body: JSON.stringify({ protocol: PROTOCOL_VERSION, capacity: 1 }),
    });
    assert.equal(r.statusCode, 401);
    await r.body.dump();
  }
  const anon = await request(`http://127.0.0.1:${port}${PATHS.upload}/1/blocks/0`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(1024) });
  assert.equal(anon.statusCode, 401);
  await anon.body.dump();
  assert.deepEqual(readFileSync(journal), before, 'a request without a valid token wrote to the journal');
  // (the real clients start only now, so that nothing else writes to the journal during that check)
  const A = cli([...joinArgs(0), '--name', 'A', '--cache-dir', join(work, 'cache-a')]);
  const B = cli([...joinArgs(1), '--name', 'B', '--model', MODEL]);
  const C = cli([...joinArgs(2), '--name', 'C', '--model', MODEL]);

  step('unauthenticated checks done');
  // round 1 opens once all 7 have joined; the hand-driven clients send what a real client never would
  const a = await until('round 1', async () => {
    const x = await raw[0]!.assignment();
    return x.state === 'assigned' ? x : undefined;
  });
  assert.deepEqual(a.blocks, [0, 1, 2, 3, 4], 'capacity 1: every block');
  const specs = a.tensors[0]!;
  const good = magnitudePruned(specs, 0.7);
  const expectRefused = async (r: Promise<{ status: number; error: string }>, status: number, pattern: RegExp) => {
    const x = await r;
    assert.equal(x.status, status, x.error);
    assert.match(x.error, pattern);
  };
  await expectRefused(raw[0]!.upload(2, 0, specs, good), 409, /stale round/);
  await expectRefused(raw[0]!.upload(1, 7, specs, good), 409, /not assigned/);
  const nan = good.map((v) => v.slice());
  nan[2]![5] = Number.NaN;
  await expectRefused(raw[0]!.upload(1, 0, specs, nan), 422, /NaN/);
  await expectRefused(raw[0]!.upload(1, 1, a.tensors[1]!, magnitudePruned(a.tensors[1]!, 0.7)), 403, /dropped/); // NaN dropped it
  const swapped = specs.map((s) => ({ ...s, dims: [...s.dims].reverse() }));
  await expectRefused(raw[1]!.upload(1, 0, swapped, good), 422, /wrong shape/);
  await expectRefused(raw[2]!.upload(1, 0, specs, good, { [HEADERS.dtype]: 'float16' }), 422, /wrong dtype/);
  await expectRefused(raw[3]!.upload(1, 0, specs, magnitudePruned(specs, 0.2)), 422, /sparsity off target/);

  step('malformed uploads refused');
  // C is killed mid-upload; B's first upload is held in its proxy
  await heldC;
  C.child.kill('SIGKILL');
  await C.exit;
  await until('C dropped', async () => ((await participant(port, 'C'))?.dropped ?? '').includes('disconnected mid-upload') || undefined);
  step('C dropped');
  await heldB;
  // A finishes all its blocks
  await until('A complete', async () => (await participant(port, 'A'))?.uploaded.length === 5 || undefined);

  step('A complete');
  // a replay of A's first upload, byte for byte (valid token, key and digest): refused
  const replay = async () => {
    const sentA = proxies[0]!.bytes();
    const start = sentA.indexOf('PUT /v1/rounds/1/blocks/');
    const headEnd = sentA.indexOf('\r\n\r\n', start) + 4;
    const length = Number(/content-length: (\d+)/i.exec(sentA.subarray(start, headEnd).toString('latin1'))![1]);
    const captured = sentA.subarray(start, headEnd + length);
    const sock = connect(port, '127.0.0.1');
    let answer = '';
    sock.on('data', (d) => (answer += d));
    sock.write(captured);
    await until('the replay answer', () => (answer.includes('\r\n\r\n') ? answer : undefined), 10_000);
    sock.destroy();
    return answer;
  };
  const replayed = await replay();
  assert.match(replayed, /^HTTP\/1.1 409/);
  assert.match(replayed, /replayed request/);

  step('replay refused');
  // SIGKILL the server while B's upload is in flight; restart it on the same port with --resume
  const journalBeforeKill = readFileSync(journal, 'utf8');
  server.child.kill('SIGKILL');
  await server.exit;
  const firstLog = server.err;
  assert.match(firstLog, /NaN/);
  assert.match(firstLog, /missing token/);
  server = cli(['federate', 'serve', '--model', MODEL, '--sparsity', '0.7', '--method', 'sparsegpt', '--nsamples', '4', '--seqlen', '64', '--quorum', '2', '--clients', '7', '--host', '127.0.0.1', '--round-timeout', '120', '--port', String(port), '--out', out, '--resume']);
  step('server restarted');
  // A's accepted uploads survived the kill; the replay is still refused after the restart
  await until('the restarted server', async () => (await participant(port, 'A'))?.uploaded.length === 5 || undefined, 30_000);
  assert.ok(readFileSync(journal, 'utf8').startsWith(journalBeforeKill));
  assert.match(await replay(), /^HTTP\/1.1 409[^]*replayed request/);

  step('replay refused after restart');
  // the hand-driven clients never complete: the round waits for them until they are dropped by the timeout, unless
  // dropped already; raw[0..3] were all dropped by their malformed uploads
  const codes = await Promise.all([server.exit, A.exit, B.exit]);
  assert.deepEqual(codes, [0, 0, 0], `server:\n${firstLog}\n--- restarted:\n${server.err}\nA:\n${A.err}\nB:\n${B.err}`);
  const report = JSON.parse(readFileSync(join(out, 'model', 'sparsellm-report.json'), 'utf8')) as { completed: string[]; participants: Record<string, { name: string | null; dropped: string | null }>; sparsity: { overall: number }; rejections: { reason: string }[] };
  // the rejections before the kill were journaled: the restarted server's report has them (not the token-less ones)
  const rejected = report.rejections.map((r) => r.reason).join('\n');
  for (const why of [/stale round/, /not assigned/, /NaN/, /wrong shape/, /wrong dtype/, /sparsity off target/, /replayed request/, /disconnected mid-upload/]) assert.match(rejected, why);
  assert.doesNotMatch(rejected, /token/);
  assert.deepEqual(report.completed.map((id) => report.participants[id]!.name).sort(), ['A', 'B']);
  assert.equal(Object.values(report.participants).filter((p) => p.dropped).length, 5, 'C and the 4 hand-driven clients are dropped');
  const faulty = readFileSync(join(out, 'model', 'onnx', 'model.onnx'));
  assert.ok(Math.abs(report.sparsity.overall - 0.7) < 0.01, `global sparsity ${report.sparsity.overall}`);

  step('faulty run finished');
  // the same accepted uploads without any fault give the same bytes
  const clean = await cleanModel;
  assert.ok(faulty.equals(clean), 'the faulty run\'s global model differs from the uninterrupted run\'s');
  // ... and it is not trivially the dense model
  assert.ok(!faulty.equals(readFileSync(join(MODEL, 'onnx', 'model.onnx'))));

  step('clean run finished');
  // privacy: nothing the clients sent holds 16 consecutive bytes of their text, or 4 consecutive token ids
  const tok = loadTokenizer(MODEL);
  const recorded = proxies.map((p) => p.bytes());
  const detector = privateWindows(texts, texts.map((t) => tok.encode(t)));
  for (const [i, bytes] of recorded.entries()) {
    assert.ok(bytes.length > 100_000, `proxy ${i} recorded only ${bytes.length} bytes`);
    const hit = detector(bytes);
    assert.equal(hit, undefined, `client ${i} sent private data: ${hit}`);
  }
  // positive control: the detector finds each kind of leak when it is there
  const ids = tok.encode(texts[1]!).slice(10, 20);
  const plant = (leak: Buffer) => Buffer.concat([recorded[0]!.subarray(0, 5000), leak, recorded[0]!.subarray(5000, 9000)]);
  assert.ok(detector(plant(Buffer.from(texts[2]!.slice(100, 140)))));
  assert.ok(detector(plant(Buffer.from(Int32Array.from(ids).buffer))));
  assert.ok(detector(plant(Buffer.from(BigInt64Array.from(ids.map(BigInt)).buffer))));
  assert.ok(detector(plant(Buffer.from(JSON.stringify(ids)))));
  await Promise.all(proxies.map((p) => p.close()));
  assert.ok(statSync(join(work, 'cache-a')).isDirectory(), 'A downloaded the model into its cache');
});

/**
 * A detector of private data in a byte stream: any 16-byte window of a text (UTF-8), or any 4 consecutive token ids
 * as int32 LE, int64 LE, or decimal text ("12,34,56,78" with or without spaces). Returns what it found.
 */
function privateWindows(texts: string[], ids: number[][]): (bytes: Buffer) => string | undefined {
  const W = 16;
  const windows = new Map<string, string>();
  const add = (b: Buffer, what: string) => {
    for (let k = 0; k + W <= b.length; k++) windows.set(b.subarray(k, k + W).toString('latin1'), what);
  };
  texts.forEach((t, i) => add(Buffer.from(t, 'utf8'), `text of client ${i}`));
  const decimal: string[] = [];
  ids.forEach((seq, i) => {
    add(Buffer.from(Int32Array.from(seq).buffer), `int32 token ids of client ${i}`);
    const i64 = Buffer.from(BigInt64Array.from(seq.map(BigInt)).buffer);
    for (let k = 0; k + 32 <= i64.length; k += 8) windows.set(i64.subarray(k, k + W).toString('latin1'), `int64 token ids of client ${i}`);
    for (let k = 0; k + 4 <= seq.length; k++) decimal.push(seq.slice(k, k + 4).join(','));
  });
  return (bytes) => {
    for (let k = 0; k + W <= bytes.length; k++) {
      const hit = windows.get(bytes.subarray(k, k + W).toString('latin1'));
      if (hit) return `${hit} at byte ${k}`;
    }
    const text = bytes.toString('latin1').replace(/, /g, ',');
    const found = decimal.find((d) => text.includes(d));
    return found ? `decimal token ids ${found}` : undefined;
  };
}
