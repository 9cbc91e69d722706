// `sparsellm federate serve`: the FedSpaLLM server (PAPERS.md §2). It hands each client its blocks for the round
// (layer sampling, sampling.ts), receives the clients' masked weights as streamed binary uploads, checks them,
// keeps the accepted ones on disk, aggregates each block as soon as every client assigned to it has answered
// (aggregate.ts), and writes the global model after each round (global-model.ts).
//
// Everything it writes is under --out: state/ (journal, accepted uploads, block aggregates, incoming temp files) and
// model/ (the global model, built in model.partial and renamed). A killed server restarted with --resume replays the
// journal and loses no accepted upload. Choices (README "Federated pruning"):
// - a block is aggregated when every participant assigned to it has uploaded it or was dropped; uploads are
//   aggregated in the order of their sha256, so the result depends only on which uploads were accepted
//   (--aggregate standalone: in join order, and the block is the earliest-joined uploader's own);
// - a block's global value is its aggregate from the latest round in which it received an upload; a block no
//   client uploaded stays dense (logged);
// - a round commits when every participant has uploaded all its blocks or was dropped, if at least --quorum
//   participants completed; otherwise the federation stops with an error (the journal keeps what was accepted);
// - a client is dropped from the round (its accepted uploads stay) when it disconnects mid-upload, times out, or
//   sends a payload that fails the checks; a stale round, an unassigned block, a replay or a duplicate is refused
//   without dropping it (they change nothing, and a third party replaying traffic must not evict an honest client).
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { join, relative, resolve } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { UserError } from '../errors.js';
import { analyzeDecoder, OnnxModel, resolveModelFile } from '../model/index.js';
import type { Method } from '../pipeline/options.js';
import type { Progress } from '../pipeline/progress.js';
import { aggregateMatrix, type AggregationRule } from './aggregate.js';
import { writeGlobalModel } from './global-model.js';
import { Journal, type JournalEvent } from './journal.js';
import {
  HEADERS, PATHS, PROTOCOL_VERSION, WIRE_DTYPE, decodeTensorHeader, elementsOf, modelManifest, modelRootOf, randomHex, secretEquals,
  type Assignment, type FederationSettings, type JoinRequest, type JoinResponse, type ModelManifest, type TensorSpec,
} from './protocol.js';
import { assignBlocks } from './sampling.js';

export interface ServeOptions {
  /** the dense model: folder or .onnx file (already resolved to a local path) */
  model: string;
  out: string;
  method: Method;
  sparsity: number;
  nsamples: number;
  seqlen?: number;
  rounds: number;
  /** capacity: each client prunes round(r·m) blocks (join's --capacity); all: every client prunes every block */
  sample: 'capacity' | 'all';
  aggregate: AggregationRule;
  /** clients that must complete a round for it to count */
  quorum: number;
  /** clients that must have joined before the first round opens */
  clients: number;
  seed: number;
  /** seconds a round stays open for its participants */
  roundTimeout: number;
  /** the federation token; empty: generated (or, with --resume, the federation's own) */
  token: string;
  host: string;
  port: number;
  tls?: { cert: string; key: string };
  resume: boolean;
  force: boolean;
  /** false (--quiet): only rejections, drops, round openings and commits are logged, not each join, upload, block */
  verbose?: boolean;
}

/** The settings a resumed server must share with the run it continues (state/federation.json). */
interface FederationFile {
  protocol: number;
  model: string;
  modelSha256: string;
  token: string;
  settings: Pick<ServeOptions, 'method' | 'sparsity' | 'nsamples' | 'seqlen' | 'rounds' | 'sample' | 'aggregate' | 'quorum' | 'clients' | 'seed'>;
}

/**
 * How far a matrix's zero fraction may be from the target: per-row / per-column rules round the count of each row,
 * so the fraction moves by up to 1/min(dims); 1 % more covers weights that were already 0 in the dense model.
 */
export function sparsityTolerance(dims: readonly number[]): number {
  return 0.01 + 1 / Math.min(...dims);
}

interface ClientRecord {
  id: string;
  key: string;
  capacity: number;
  name?: string;
}

interface Upload {
  client: string;
  file: string;
  sha256: string;
}

interface RoundState {
  round: number;
  seed: number;
  assignments: Map<string, number[]>;
  /** block -> client -> accepted upload */
  uploads: Map<number, Map<string, Upload>>;
  dropped: Map<string, string>;
  /** block -> aggregate file (relative to state/) */
  aggregated: Map<number, string>;
  /** block -> per-linear counts of the aggregation (zeros, C_j = N, pruned by mask expansion) */
  stats: Map<number, unknown>;
  committed: boolean;
  /** in-process clock; a restart gives the round a fresh --round-timeout */
  deadline: number;
}

interface Rejection {
  round: number;
  client?: string;
  block?: number;
  status: number;
  reason: string;
}

class Refused extends Error {
  /** already in the rejection log (the handler recorded it with its round, client and block) */
  recorded = false;
  constructor(readonly status: number, message: string, readonly drop = false) {
    super(message);
  }
}

export interface ServeResult {
  model: string;
  rounds: number;
  rejections: Rejection[];
}

export class FederationServer {
  private readonly stateDir: string;
  private readonly journal: Journal;
  private readonly clients = new Map<string, ClientRecord>();
  /** clients dropped from a round; they take part in no later round */
  private readonly banned = new Set<string>();
  private readonly nonces = new Set<string>();
  private readonly rounds = new Map<number, RoundState>();
  private readonly inFlight = new Set<string>();
  private readonly rejections: Rejection[] = [];
  private current = 0;
  private done = false;
  private lastModel = '';
  private app!: FastifyInstance;
  private onnxFile = '';
  private manifest!: ModelManifest;
  private blockTensors: TensorSpec[][] = [];
  private timer?: NodeJS.Timeout;
  private settle!: { resolve: (r: ServeResult) => void; reject: (e: Error) => void };
  get token(): string {
    return this.o.token;
  }

  /** resolves when the last round is committed (and the clients had a moment to hear it), rejects on failure */
  readonly finished: Promise<ServeResult>;
  url = '';

  constructor(private readonly o: ServeOptions, private readonly progress: Progress) {
    this.stateDir = join(resolve(o.out), 'state');
    this.journal = new Journal(join(this.stateDir, 'journal.jsonl'));
    this.finished = new Promise((res, rej) => (this.settle = { resolve: res, reject: rej }));
    this.finished.catch(() => {});
  }

  /** `routine` lines (joins, accepted uploads, aggregated blocks) are left out with --quiet */
  private log(line: string, routine = false): void {
    if (routine && this.o.verbose === false) return;
    this.progress.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
  }

  private get settings(): FederationSettings {
    return { method: this.o.method, sparsity: this.o.sparsity, nsamples: this.o.nsamples, seqlen: this.o.seqlen, rounds: this.o.rounds };
  }

  /** Checks the folder and the model, replays the journal (--resume), and listens. */
  async start(): Promise<string> {
    const out = resolve(this.o.out);
    this.onnxFile = resolveModelFile(this.o.model);
    const dense = OnnxModel.load(this.onnxFile);
    const layout = analyzeDecoder(dense);
    this.blockTensors = layout.blocks.map((b) => b.linears.map((l) => ({ name: l.weightName, role: l.role, dims: dense.dims(l.weightName) })));
    this.manifest = await modelManifest(this.onnxFile);
    const fedFile = join(this.stateDir, 'federation.json');
    if (this.o.token === '' && !this.o.resume) this.o.token = randomHex(16);
    const mine: FederationFile = {
      protocol: PROTOCOL_VERSION, model: this.onnxFile, modelSha256: this.manifest.sha256, token: this.o.token,
      settings: { method: this.o.method, sparsity: this.o.sparsity, nsamples: this.o.nsamples, seqlen: this.o.seqlen, rounds: this.o.rounds, sample: this.o.sample, aggregate: this.o.aggregate, quorum: this.o.quorum, clients: this.o.clients, seed: this.o.seed },
    };
    if (this.o.resume) {
      if (!existsSync(fedFile)) throw new UserError(`nothing to resume: ${out} holds no federation (no state/federation.json); drop --resume to start one`);
      const old = JSON.parse(readFileSync(fedFile, 'utf8')) as FederationFile;
      if (this.o.token === '') this.o.token = mine.token = old.token;
      if (old.modelSha256 !== mine.modelSha256) throw new UserError(`--resume: ${this.o.model} is not the dense model this federation started with (sha256 ${old.modelSha256.slice(0, 12)}…)`);
      if (!secretEquals(this.o.token, old.token)) throw new UserError('--resume: --token differs from the federation\'s token (omit --token to keep it)');
      const diff = Object.keys(mine.settings).filter((k) => JSON.stringify(mine.settings[k as keyof FederationFile['settings']]) !== JSON.stringify(old.settings[k as keyof FederationFile['settings']]));
      if (diff.length) throw new UserError(`--resume: ${diff.map((k) => `--${k}`).join(', ')} differ from the federation being resumed; pass the same values`);
    } else {
      if (existsSync(out)) {
        const isFederation = existsSync(fedFile) || readdirSync(out).length === 0;
        if (!this.o.force) throw new UserError(`output folder ${this.o.out} already exists: choose another --out, --resume the federation in it, or pass --force to replace it`);
        if (!isFederation) throw new UserError(`--force: ${this.o.out} is not an empty folder or a federation's folder; refusing to delete it`);
        rmSync(out, { recursive: true, force: true });
      }
      mkdirSync(join(this.stateDir, 'incoming'), { recursive: true });
      writeFileSync(fedFile, `${JSON.stringify(mine, null, 2)}\n`, { mode: 0o600 });
    }
    // a model.partial left by a crash during a commit is not reused: removed now, the model is rewritten from the journal
    const leftover = join(out, 'model.partial');
    if (existsSync(leftover)) {
      rmSync(leftover, { recursive: true, force: true });
      this.log(`removed ${leftover}, left by a commit that was interrupted; the global model is rewritten from the accepted uploads`);
    }
    rmSync(join(this.stateDir, 'incoming'), { recursive: true, force: true });
    mkdirSync(join(this.stateDir, 'incoming'), { recursive: true });
    const events = this.journal.read();
    const last = events.at(-1);
    if (last?.e === 'done') throw new UserError(`the federation in ${this.o.out} has finished (global model in ${join(this.o.out, 'model')}); nothing to resume`);
    if (last?.e === 'failed') throw new UserError(`the federation in ${this.o.out} failed: ${last.reason}; start a new one (another --out, or --force)`);
    this.replay(events);

    this.app = this.buildApp();
    await this.app.listen({ host: this.o.host, port: this.o.port });
    const address = this.app.server.address();
    const port = typeof address === 'object' && address ? address.port : this.o.port;
    this.url = `${this.o.tls ? 'https' : 'http'}://${this.o.host.includes(':') ? `[${this.o.host}]` : this.o.host}:${port}`;
    writeFileSync(join(this.stateDir, 'address.json'), `${JSON.stringify({ url: this.url, pid: process.pid })}\n`);
    this.timer = setInterval(() => this.checkDeadline(), 250);
    this.advance();
    return this.url;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.app?.close();
  }

  // ---- journal replay -------------------------------------------------------------------------------------------

  private replay(events: JournalEvent[]): void {
    for (const ev of events) this.apply(ev);
    if (events.length) this.log(`resumed: ${this.clients.size} clients, round ${this.current}${this.rounds.get(this.current)?.committed ? ' (committed)' : ''}, ${events.filter((e) => e.e === 'upload').length} accepted uploads`);
    const r = this.rounds.get(this.current);
    if (r && !r.committed) for (const b of r.uploads.keys()) this.maybeAggregate(r, b);
  }

  private record(ev: JournalEvent): void {
    this.journal.append(ev);
    this.apply(ev);
  }

  private apply(ev: JournalEvent): void {
    switch (ev.e) {
      case 'join':
        this.clients.set(ev.id, { id: ev.id, key: ev.key, capacity: ev.capacity, name: ev.name });
        this.nonces.add(ev.nonce);
        break;
      case 'round':
        this.current = ev.round;
        this.rounds.set(ev.round, {
          round: ev.round, seed: ev.seed, assignments: new Map(Object.entries(ev.assignments)), uploads: new Map(), dropped: new Map(),
          aggregated: new Map(), stats: new Map(), committed: false, deadline: Date.now() + this.o.roundTimeout * 1000,
        });
        break;
      case 'upload': {
        const r = this.rounds.get(ev.round)!;
        if (!r.uploads.has(ev.block)) r.uploads.set(ev.block, new Map());
        r.uploads.get(ev.block)!.set(ev.client, { client: ev.client, file: ev.file, sha256: ev.sha256 });
        this.nonces.add(ev.nonce);
        break;
      }
      case 'drop':
        this.rounds.get(ev.round)!.dropped.set(ev.client, ev.reason);
        this.banned.add(ev.client);
        break;
      case 'reject':
        this.rejections.push({ round: ev.round, client: ev.client, block: ev.block, status: ev.status, reason: ev.reason });
        break;
      case 'aggregate':
        this.rounds.get(ev.round)!.aggregated.set(ev.block, ev.file);
        this.rounds.get(ev.round)!.stats.set(ev.block, { uploads: ev.uploads, linears: ev.stats });
        break;
      case 'commit':
        this.rounds.get(ev.round)!.committed = true;
        this.lastModel = ev.model;
        break;
      case 'failed':
        this.done = true;
        break;
      case 'done':
        this.done = true;
        break;
    }
  }

  // ---- HTTP -----------------------------------------------------------------------------------------------------

  private buildApp(): FastifyInstance {
    const maxBlockBytes = Math.max(...this.blockTensors.map((ts) => ts.reduce((s, t) => s + elementsOf(t.dims) * 4, 0)));
    const app = Fastify({
      logger: false,
      bodyLimit: 1 << 20,
      ...(this.o.tls ? { https: { cert: readFileSync(this.o.tls.cert), key: readFileSync(this.o.tls.key) } } : {}),
    }) as unknown as FastifyInstance;
    // tensors: the request stream itself reaches the handler, which streams it to disk
    app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    // the token before anything else: a request without it is answered 401 and changes nothing
    app.addHook('onRequest', async (req, reply) => {
      const auth = req.headers.authorization;
      const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
      if (!secretEquals(token, this.o.token)) {
        // logged, not journaled: a request without the token changes nothing on disk (nor can a stranger grow the journal)
        this.reject({ round: this.current, status: 401, reason: `${token === undefined ? 'missing' : 'invalid'} token on ${req.method} ${req.url} from ${req.ip}` }, false);
        reply.header('connection', 'close');
        return reply.code(401).send({ error: 'missing or invalid federation token' });
      }
    });
    app.setErrorHandler((err: Error & { statusCode?: number }, _req, reply) => {
      reply.code(err.statusCode && err.statusCode < 500 ? err.statusCode : 500).send({ error: err.message });
    });

    app.post(PATHS.join, async (req, reply) => this.answer(reply, () => this.onJoin(req)));
    app.get(PATHS.status, async () => this.status());
    app.get(PATHS.assignment, async (req, reply) => this.answer(reply, () => this.assignmentFor(this.authClient(req).id)));
    app.get(PATHS.modelManifest, async (req, reply) => this.answer(reply, () => (this.authClient(req), this.manifest)));
    app.get(`${PATHS.modelFile}/:index`, async (req, reply) => {
      try {
        this.authClient(req);
        const f = this.manifest.files[Number((req.params as { index: string }).index)];
        if (!f) throw new Refused(404, 'no such model file');
        reply.header(HEADERS.sha256, f.sha256).header('content-length', f.bytes).type('application/octet-stream');
        return reply.send(createReadStream(join(modelRootOf(this.onnxFile), f.path)));
      } catch (e) {
        return this.fail(reply, e);
      }
    });
    app.put(`${PATHS.upload}/:round/blocks/:block`, { bodyLimit: maxBlockBytes + 1 }, async (req, reply) => this.answer(reply, () => this.onUpload(req, reply)));
    return app;
  }

  private async answer(reply: FastifyReply, fn: () => unknown): Promise<unknown> {
    try {
      return await fn();
    } catch (e) {
      return this.fail(reply, e);
    }
  }

  private fail(reply: FastifyReply, e: unknown): FastifyReply {
    if (e instanceof Refused) {
      if (!e.recorded) this.reject({ round: this.current, status: e.status, reason: `${reply.request.method} ${reply.request.url}: ${e.message}` });
      return reply.code(e.status).send({ error: e.message });
    }
    throw e;
  }

  /**
   * Logs a refused request; journaled too (so a restarted server's log and report keep it), except the requests
   * without a valid federation token.
   */
  private reject(r: Rejection, journal = true): void {
    if (journal) this.record({ e: 'reject', ...r });
    else this.rejections.push(r);
    this.log(`rejected${r.client ? ` ${r.client}` : ''}${r.block !== undefined ? ` block ${r.block}` : ''} (round ${r.round}, HTTP ${r.status}): ${r.reason}`);
  }

  private authClient(req: FastifyRequest): ClientRecord {
    const id = req.headers[HEADERS.client];
    const c = typeof id === 'string' ? this.clients.get(id) : undefined;
    if (!c || !secretEquals(String(req.headers[HEADERS.clientKey] ?? ''), c.key)) throw new Refused(401, 'unknown client or wrong client key: join first');
    return c;
  }

  /** A fresh nonce, remembered at once: the same request sent again is a replay. */
  private takeNonce(req: FastifyRequest): string {
    const nonce = req.headers[HEADERS.nonce];
    if (typeof nonce !== 'string' || !/^[0-9a-f]{32}$/.test(nonce)) throw new Refused(400, `missing or malformed ${HEADERS.nonce} (32 hex digits)`);
    if (this.nonces.has(nonce)) throw new Refused(409, `replayed request (nonce ${nonce} already used)`);
    this.nonces.add(nonce);
    return nonce;
  }

  private onJoin(req: FastifyRequest): JoinResponse {
    try {
      const nonce = this.takeNonce(req);
      const body = req.body as Partial<JoinRequest> | undefined;
      if (this.done) throw new Refused(409, 'the federation has finished');
      if (body?.protocol !== PROTOCOL_VERSION) throw new Refused(400, `protocol ${String(body?.protocol)} is not this server's (${PROTOCOL_VERSION}): use the same sparsellm version`);
      const capacity = Number(body.capacity);
      if (!(capacity > 0 && capacity <= 1)) throw new Refused(400, `capacity ${String(body.capacity)} outside (0, 1]`);
      const name = typeof body.name === 'string' ? body.name.slice(0, 64) : undefined;
      const id = `c${this.clients.size + 1}`;
      const key = randomHex(32);
      this.record({ e: 'join', id, key, capacity, name, nonce });
      this.log(`joined: ${id}${name ? ` (${name})` : ''}, capacity ${capacity}; ${this.clients.size} clients`, true);
      setImmediate(() => this.advance());
      return { clientId: id, clientKey: key, model: this.manifest, settings: this.settings };
    } catch (e) {
      if (e instanceof Refused) {
        this.reject({ round: this.current, status: e.status, reason: `join: ${e.message}` });
        e.recorded = true;
      }
      throw e;
    }
  }

  private assignmentFor(id: string): Assignment {
    if (this.done) {
      this.toldDone.add(id);
      this.settleIfTold();
      return { state: 'done', rounds: this.current };
    }
    const r = this.rounds.get(this.current);
    if (!r || r.committed) return { state: 'waiting', reason: r ? `round ${r.round} committed; next round opening` : `waiting for ${this.o.clients} clients to join (${this.clients.size} so far)` };
    const blocks = r.assignments.get(id);
    if (!blocks) return { state: 'waiting', reason: `round ${r.round} started before you joined; you take part from the next round` };
    const dropped = r.dropped.get(id);
    if (dropped) return { state: 'dropped', round: r.round, reason: dropped };
    const pending = blocks.filter((b) => !r.uploads.get(b)?.has(id));
    if (pending.length === 0) return { state: 'submitted', round: r.round };
    return { state: 'assigned', round: r.round, seed: r.seed, blocks, pending, tensors: Object.fromEntries(blocks.map((b) => [b, this.blockTensors[b]!])) };
  }

  status(): object {
    const r = this.rounds.get(this.current);
    return {
      round: this.current, rounds: this.o.rounds, done: this.done, clients: this.clients.size,
      participants: r ? Object.fromEntries([...r.assignments].map(([id, blocks]) => [id, {
        name: this.clients.get(id)?.name ?? null, blocks, uploaded: blocks.filter((b) => r.uploads.get(b)?.has(id)), dropped: r.dropped.get(id) ?? null,
      }])) : {},
      aggregated: r ? [...r.aggregated.keys()].sort((a, b) => a - b) : [],
      committed: r?.committed ?? false,
      rejections: this.rejections.length,
    };
  }

  // ---- uploads --------------------------------------------------------------------------------------------------

  private async onUpload(req: FastifyRequest, reply: FastifyReply): Promise<object> {
    const params = req.params as { round: string; block: string };
    const round = Number(params.round);
    const block = Number(params.block);
    let client: ClientRecord | undefined;
    const body = req.body as NodeJS.ReadableStream | undefined;
    try {
      client = this.authClient(req);
      this.takeNonce(req);
      const r = this.rounds.get(this.current);
      if (!Number.isInteger(round) || round !== this.current || !r || r.committed) throw new Refused(409, `stale round: upload for round ${params.round}, the open round is ${r && !r.committed ? r.round : 'none'}`);
      const blocks = r.assignments.get(client.id);
      if (!blocks) throw new Refused(403, `${client.id} is not a participant of round ${round}`);
      if (r.dropped.has(client.id)) throw new Refused(403, `${client.id} was dropped from round ${round}: ${r.dropped.get(client.id)}`);
      if (!blocks.includes(block)) throw new Refused(409, `block ${params.block} is not assigned to ${client.id} in round ${round} (assigned: ${blocks.join(',')})`);
      if (r.uploads.get(block)?.has(client.id)) throw new Refused(409, `block ${block} of ${client.id} was already accepted in round ${round}`);
      const slot = `${round}/${block}/${client.id}`;
      if (this.inFlight.has(slot)) throw new Refused(409, `block ${block} of ${client.id} is being uploaded already`);
      if (!body || typeof (body as { pipe?: unknown }).pipe !== 'function') throw new Refused(415, 'tensors must be sent as application/octet-stream', true);
      this.inFlight.add(slot);
      try {
        const upload = await this.receive(req, body, r, client.id, block);
        this.record({ e: 'upload', round, block, client: client.id, file: upload.file, sha256: upload.sha256, nonce: String(req.headers[HEADERS.nonce]) });
        const done = blocks.filter((b) => r.uploads.get(b)?.has(client!.id)).length;
        this.log(`accepted ${client.id} block ${block} (round ${round}; ${done}/${blocks.length} of its blocks)`, true);
      } finally {
        this.inFlight.delete(slot);
      }
      setImmediate(() => {
        this.maybeAggregate(r, block);
        this.advance();
      });
      return { accepted: true, round, block };
    } catch (e) {
      if (!(e instanceof Refused)) throw e;
      this.reject({ round: Number.isFinite(round) ? round : this.current, client: client?.id, block: Number.isFinite(block) ? block : undefined, status: e.status, reason: e.message });
      e.recorded = true;
      const r = this.rounds.get(this.current);
      if (e.drop && client && r && r.round === round) this.drop(r, client.id, e.message);
      // a body we will not use is discarded (at most the route's bodyLimit), and the connection closed after the answer
      if (body && typeof (body as { resume?: unknown }).resume === 'function' && !(body as { readableEnded?: boolean }).readableEnded) {
        reply.header('connection', 'close');
        body.resume();
      }
      throw e;
    }
  }

  /** Streams the body to state/incoming, checks digest, shape, dtype, values and sparsity, then moves it into place. */
  private async receive(req: FastifyRequest, body: NodeJS.ReadableStream, r: RoundState, client: string, block: number): Promise<Upload> {
    const expected = this.blockTensors[block]!;
    const dtype = req.headers[HEADERS.dtype];
    if (dtype !== WIRE_DTYPE) throw new Refused(422, `wrong dtype: ${String(dtype ?? 'none')} (uploads are ${WIRE_DTYPE})`, true);
    const declared = decodeTensorHeader(req.headers[HEADERS.tensors] as string | undefined);
    const shapeOf = (ts: { name: string; dims: number[] }[]) => ts.map((t) => `${t.name}[${t.dims.join('x')}]`).join(', ');
    if (!declared || shapeOf(declared) !== shapeOf(expected)) throw new Refused(422, `wrong shape: block ${block} is ${shapeOf(expected)}, the upload declares ${declared ? shapeOf(declared) : 'nothing readable'}`, true);
    const bytes = expected.reduce((s, t) => s + elementsOf(t.dims) * 4, 0);
    const length = Number(req.headers['content-length']);
    if (length !== bytes) throw new Refused(422, `wrong size: block ${block} takes ${bytes} bytes of ${WIRE_DTYPE}, content-length is ${String(req.headers['content-length'] ?? 'missing')}`, true);
    const digest = req.headers[HEADERS.sha256];
    if (typeof digest !== 'string' || !/^[0-9a-f]{64}$/.test(digest)) throw new Refused(400, `missing or malformed ${HEADERS.sha256}`, true);

    const part = join(this.stateDir, 'incoming', `${randomHex(8)}.part`);
    const hash = createHash('sha256');
    let received = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        if (received > bytes) return cb(new Refused(422, `wrong size: more than the ${bytes} bytes announced`, true));
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(part));
    } catch (e) {
      rmSync(part, { force: true });
      if (e instanceof Refused) throw e;
      throw new Refused(400, `disconnected mid-upload of block ${block} (${received} of ${bytes} bytes received)`, true);
    }
    if (received !== bytes) {
      rmSync(part, { force: true });
      throw new Refused(400, `disconnected mid-upload of block ${block} (${received} of ${bytes} bytes received)`, true);
    }
    const sha256 = hash.digest('hex');
    if (sha256 !== digest) {
      rmSync(part, { force: true });
      throw new Refused(422, `digest mismatch: the body's sha256 is ${sha256.slice(0, 12)}…, the header says ${digest.slice(0, 12)}…`, true);
    }
    try {
      this.checkValues(readTensors(part, expected), block);
    } catch (e) {
      rmSync(part, { force: true });
      throw e;
    }
    const dir = join(this.stateDir, 'uploads', `round-${r.round}`);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `block-${block}-${client}.f32`);
    renameSync(part, file);
    return { client, file: relative(this.stateDir, file), sha256 };
  }

  private checkValues(tensors: Float32Array[], block: number): void {
    const specs = this.blockTensors[block]!;
    tensors.forEach((values, t) => {
      const spec = specs[t]!;
      let zeros = 0;
      for (let k = 0; k < values.length; k++) {
        const v = values[k]!;
        if (!Number.isFinite(v)) throw new Refused(422, `${spec.role} (${spec.name}) holds ${Number.isNaN(v) ? 'NaN' : 'Inf'} at element ${k}`, true);
        if (v === 0) zeros++;
      }
      const fraction = zeros / values.length;
      const tol = sparsityTolerance(spec.dims);
      if (Math.abs(fraction - this.o.sparsity) > tol) {
        throw new Refused(422, `sparsity off target: ${spec.role} (${spec.name}) is ${(fraction * 100).toFixed(2)}% zeros, the target is ${(this.o.sparsity * 100).toFixed(1)}% ± ${(tol * 100).toFixed(1)}`, true);
      }
    });
  }

  private drop(r: RoundState, client: string, reason: string): void {
    if (r.dropped.has(client) || r.committed) return;
    this.record({ e: 'drop', round: r.round, client, reason });
    this.log(`dropped ${client} from round ${r.round}: ${reason}`);
    setImmediate(() => {
      for (const b of r.assignments.get(client) ?? []) this.maybeAggregate(r, b);
      this.advance();
    });
  }

  private checkDeadline(): void {
    const r = this.rounds.get(this.current);
    if (!r || r.committed || this.done || Date.now() < r.deadline) return;
    for (const [id, blocks] of r.assignments) {
      if (r.dropped.has(id)) continue;
      if (blocks.some((b) => !r.uploads.get(b)?.has(id))) this.drop(r, id, `timed out: round ${r.round} open for ${this.o.roundTimeout} s`);
    }
  }

  // ---- aggregation and rounds ----------------------------------------------------------------------------------

  /** Aggregates block b of the round once every live participant assigned to it has uploaded it. */
  private maybeAggregate(r: RoundState, block: number): void {
    if (r.committed || r.aggregated.has(block)) return;
    const uploads = r.uploads.get(block);
    for (const [id, blocks] of r.assignments) {
      if (blocks.includes(block) && !r.dropped.has(id) && !uploads?.has(id)) return;
    }
    if (!uploads || uploads.size === 0) return; // nobody left for it: it keeps its previous value (see commit)
    const specs = this.blockTensors[block]!;
    // fedspallm / mean: by sha256 (the result depends only on the set of uploads); standalone: by join order (c1 first)
    const joinOrder = (id: string) => Number(id.slice(1));
    const sorted = [...uploads.values()].sort((a, b) => this.o.aggregate === 'standalone'
      ? joinOrder(a.client) - joinOrder(b.client)
      : (a.sha256 < b.sha256 ? -1 : a.sha256 > b.sha256 ? 1 : 0));
    const perClient = sorted.map((u) => readTensors(join(this.stateDir, u.file), specs));
    const results = specs.map((_, t) => aggregateMatrix(perClient.map((ts) => ts[t]!), this.o.aggregate, this.o.sparsity));
    const parts = results.map((a) => a.weights);
    const stats = Object.fromEntries(results.map((a, t) => [specs[t]!.role, { zeros: a.zeros, unanimous: a.unanimous, expanded: a.expanded, size: a.weights.length }]));
    const dir = join(this.stateDir, 'aggregates');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `round-${r.round}-block-${block}.f32`);
    writeAtomic(file, parts);
    this.record({ e: 'aggregate', round: r.round, block, file: relative(this.stateDir, file), uploads: uploads.size, stats });
    const total = new Set([...r.assignments.values()].flat()).size;
    this.log(`round ${r.round}: block ${block} aggregated from ${uploads.size} upload(s) (${this.o.aggregate}); ${r.aggregated.size}/${total} blocks`, true);
  }

  /** Opens the first round once enough clients joined, commits a round once every participant answered. */
  private advance(): void {
    if (this.done) return;
    let r = this.rounds.get(this.current);
    if (!r || r.committed) {
      if (r?.committed && this.current >= this.o.rounds) return this.finish();
      const eligible = [...this.clients.values()].filter((c) => !this.banned.has(c.id));
      if (eligible.length < (this.current === 0 ? this.o.clients : this.o.quorum)) return;
      const round = this.current + 1;
      const seed = this.o.seed + round;
      const m = this.blockTensors.length;
      const sets = this.o.sample === 'all' ? eligible.map(() => [...Array(m).keys()]) : assignBlocks(m, eligible.map((c) => c.capacity), seed);
      this.record({ e: 'round', round, seed, assignments: Object.fromEntries(eligible.map((c, i) => [c.id, sets[i]!])) });
      r = this.rounds.get(round)!;
      this.log(`round ${round}/${this.o.rounds} open: ${eligible.map((c, i) => `${c.id} blocks ${sets[i]!.join(',')}`).join('; ')}`);
      return;
    }
    for (const [id, blocks] of r.assignments) {
      if (!r.dropped.has(id) && blocks.some((b) => !r.uploads.get(b)?.has(id))) return;
    }
    void this.commit(r).catch((e: Error) => this.fatal(e));
  }

  private committing = false;

  private async commit(r: RoundState): Promise<void> {
    if (this.committing || r.committed) return;
    this.committing = true;
    try {
      const complete = [...r.assignments].filter(([id, blocks]) => !r.dropped.has(id) && blocks.every((b) => r.uploads.get(b)?.has(id))).map(([id]) => id);
      if (complete.length < this.o.quorum) {
        const reason = `round ${r.round} failed: ${complete.length} client(s) completed it, the quorum is ${this.o.quorum} (dropped: ${[...r.dropped].map(([id, why]) => `${id}: ${why}`).join('; ') || 'none'})`;
        this.record({ e: 'failed', round: r.round, reason });
        throw new UserError(`${reason}; accepted uploads are kept in ${join(this.o.out, 'state')}`, 1);
      }
      for (const b of r.uploads.keys()) this.maybeAggregate(r, b);
      const weights = new Map<string, Float32Array>();
      const sources: Record<number, number | 'dense'> = {};
      for (let b = 0; b < this.blockTensors.length; b++) {
        const specs = this.blockTensors[b]!;
        let from: number | 'dense' = 'dense';
        for (let q = r.round; q >= 1; q--) {
          const file = this.rounds.get(q)?.aggregated.get(b);
          if (file) {
            readTensors(join(this.stateDir, file), specs).forEach((v, t) => weights.set(specs[t]!.name, v));
            from = q;
            break;
          }
        }
        sources[b] = from;
        if (from === 'dense') this.log(`round ${r.round}: block ${b} has no upload yet; it stays dense`);
      }
      const report = {
        tool: 'sparsellm federate serve',
        model: this.onnxFile,
        modelSha256: this.manifest.sha256,
        method: this.o.method,
        aggregation: this.o.aggregate,
        sparsity: { target: this.o.sparsity, ...measureSparsity(weights) },
        round: r.round,
        rounds: this.o.rounds,
        blockSource: sources,
        aggregationCounts: Object.fromEntries([...r.stats].sort(([a], [b]) => a - b)),
        participants: Object.fromEntries([...r.assignments].map(([id, blocks]) => [id, { name: this.clients.get(id)!.name ?? null, blocks, capacity: this.clients.get(id)!.capacity, dropped: r.dropped.get(id) ?? null }])),
        completed: complete,
        uploads: Object.fromEntries([...r.uploads].map(([b, m]) => [b, [...m.values()].map((u) => ({ client: u.client, sha256: u.sha256 }))])),
        rejections: this.rejections,
      };
      const written = await writeGlobalModel(this.onnxFile, weights, join(this.o.out, 'model'), report, { force: true });
      this.record({ e: 'commit', round: r.round, model: written });
      this.log(`round ${r.round}/${this.o.rounds} committed: ${complete.length} clients, global model ${written} (${(report.sparsity.overall * 100).toFixed(2)}% zeros in the pruned linears)`);
    } finally {
      this.committing = false;
    }
    this.advance();
  }

  /** clients that were answered 'done' (finish waits for the last round's live participants, at most 1.5 s) */
  private readonly toldDone = new Set<string>();
  private finishTimer?: NodeJS.Timeout;

  private finish(): void {
    if (this.done) return;
    this.record({ e: 'done' });
    // the clients poll every ~0.5 s: give them time to hear 'done' before the listener goes away
    this.finishTimer = setTimeout(() => this.settleDone(), 1500);
    this.settleIfTold();
  }

  private settleIfTold(): void {
    const r = this.rounds.get(this.current);
    const live = r ? [...r.assignments.keys()].filter((id) => !r.dropped.has(id)) : [];
    if (live.every((id) => this.toldDone.has(id))) setImmediate(() => this.settleDone());
  }

  private settleDone(): void {
    clearTimeout(this.finishTimer);
    this.settle.resolve({ model: this.lastModel, rounds: this.current, rejections: this.rejections });
  }

  private fatal(e: Error): void {
    this.done = true;
    this.settle.reject(e);
  }
}

/** A block's tensors read back from a .f32 file (float32 little-endian, in the block's tensor order). */
function readTensors(file: string, specs: readonly TensorSpec[]): Float32Array[] {
  const buf = readFileSync(file);
  const out: Float32Array[] = [];
  let offset = 0;
  for (const s of specs) {
    const n = elementsOf(s.dims);
    const v = new Float32Array(n);
    Buffer.from(v.buffer).set(buf.subarray(offset, offset + n * 4));
    out.push(v);
    offset += n * 4;
  }
  if (offset !== buf.length) throw new Error(`${file}: ${buf.length} bytes, expected ${offset}`);
  return out;
}

function writeAtomic(file: string, parts: Float32Array[]): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
  renameSync(tmp, file);
}

function measureSparsity(weights: Map<string, Float32Array>): { overall: number; prunedMatrices: number } {
  let zeros = 0, total = 0;
  for (const v of weights.values()) {
    for (let k = 0; k < v.length; k++) if (v[k] === 0) zeros++;
    total += v.length;
  }
  return { overall: total ? zeros / total : 0, prunedMatrices: weights.size };
}

export async function runServer(o: ServeOptions, progress: Progress, onListening?: (url: string, token: string) => void): Promise<ServeResult> {
  const server = new FederationServer(o, progress);
  const onSignal = () => {
    progress.log(`sparsellm federate serve: stopping; accepted uploads are kept in ${join(o.out, 'state')} (restart with --resume)`);
    void server.close().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const url = await server.start();
    onListening?.(url, server.token);
    return await server.finished;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await server.close();
  }
}
