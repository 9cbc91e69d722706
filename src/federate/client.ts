// `sparsellm federate join`: a FedSpaLLM client. It joins with the federation token, gets the dense model once
// (download verified by sha256, cached by the model's digest) or checks its own copy against the server's digest,
// then each round prunes the blocks it was assigned with its private calibration text (local-prune.ts, the ordinary
// pipeline) and uploads only those blocks' masked weights, as streamed float32 bodies with their sha256.
// What leaves the machine: the join message (protocol, capacity, optional name) and the masked weights. Never the
// calibration text, its token ids or any activation (test/federate-net.test.ts checks the bytes).
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Agent, request, type Dispatcher } from 'undici';
import { UserError } from '../errors.js';
import { resolveModelFile } from '../model/index.js';
import type { Device } from '../pipeline/options.js';
import type { Progress } from '../pipeline/progress.js';
import { pruneAssignedBlocks, type LocalPruneResult } from './local-prune.js';
import {
  HEADERS, PATHS, PROTOCOL_VERSION, WIRE_DTYPE, elementsOf, encodeTensorHeader, modelManifest, randomHex, safeRelativePath, sha256File,
  type Assignment, type JoinResponse, type ModelManifest, type TensorSpec,
} from './protocol.js';

export interface JoinOptions {
  server: string;
  token: string;
  calib: string;
  capacity: number;
  name?: string;
  /** the client's own copy of the dense model (checked against the server's digest); default: download it */
  model?: string;
  /** downloaded models go to <cacheDir>/<model sha256>/ */
  cacheDir: string;
  /** CA certificate (PEM) to trust for an https server with a self-signed certificate */
  ca?: string;
  seed: number;
  tokenizer?: string;
  dataDir?: string;
  device?: Device;
  /** seconds to keep retrying when the server cannot be reached (e.g. while it restarts) */
  retryTimeout: number;
  pollMs?: number;
}

export interface JoinResult {
  clientId: string;
  rounds: number;
  uploadedBlocks: number;
  model: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Connection-level failures worth retrying (the server restarting, a dropped connection); HTTP answers are not. */
function isNetworkError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? '';
  return /^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|UND_ERR_SOCKET|UND_ERR_CLOSED|UND_ERR_CONNECT_TIMEOUT|UND_ERR_HEADERS_TIMEOUT|UND_ERR_BODY_TIMEOUT)$/.test(code);
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export class FederationClient {
  private readonly base: string;
  private readonly dispatcher?: Dispatcher;
  private id = '';
  private key = '';

  constructor(private readonly o: JoinOptions, private readonly progress: Progress) {
    let url: URL;
    try {
      url = new URL(o.server);
    } catch {
      throw new UserError(`--server ${o.server} is not a URL: give one like http://host:${8741}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UserError(`--server ${o.server}: use http:// or https://`);
    this.base = url.origin;
    if (o.ca) this.dispatcher = new Agent({ connect: { ca: readFileSync(o.ca) } });
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.o.token}`, ...(this.id ? { [HEADERS.client]: this.id, [HEADERS.clientKey]: this.key } : {}), ...extra };
  }

  /** One request, retried on connection failures for up to --retry-timeout; `make` builds a fresh request each try. */
  private async call<T>(what: string, make: () => Promise<Dispatcher.ResponseData>, read: (res: Dispatcher.ResponseData) => Promise<T>): Promise<T> {
    const until = Date.now() + this.o.retryTimeout * 1000;
    let wait = 250;
    for (;;) {
      let res: Dispatcher.ResponseData;
      try {
        res = await make();
      } catch (e) {
        if (!isNetworkError(e) || Date.now() > until) {
          throw new UserError(`${what}: cannot reach ${this.base} (${(e as { code?: string }).code ?? (e as Error).message})${isNetworkError(e) ? ` for ${this.o.retryTimeout} s` : ''}`, 1);
        }
        await sleep(wait);
        wait = Math.min(2000, wait * 2);
        continue;
      }
      if (res.statusCode >= 400) {
        const text = await res.body.text();
        let message = text;
        try {
          message = (JSON.parse(text) as { error?: string }).error ?? text;
        } catch { /* not JSON */ }
        throw new HttpError(res.statusCode, `${what}: server answered ${res.statusCode}: ${message}`);
      }
      return read(res);
    }
  }

  private json<T>(what: string, method: 'GET' | 'POST', path: string, body?: object): Promise<T> {
    return this.call(what, () => request(`${this.base}${path}`, {
      method, dispatcher: this.dispatcher,
      headers: this.headers(body ? { 'content-type': 'application/json', [HEADERS.nonce]: randomHex() } : {}),
      body: body ? JSON.stringify(body) : undefined,
    }), (res) => res.body.json() as Promise<T>);
  }

  async run(): Promise<JoinResult> {
    let joined: JoinResponse;
    try {
      joined = await this.json<JoinResponse>('join', 'POST', PATHS.join, { protocol: PROTOCOL_VERSION, capacity: this.o.capacity, name: this.o.name });
    } catch (e) {
      if (e instanceof HttpError) throw new UserError(e.status === 401 ? `join: the server refused the token (HTTP 401): check --token` : e.message, 1);
      throw e;
    }
    this.id = joined.clientId;
    this.key = joined.clientKey;
    const s = joined.settings;
    this.progress.log(`joined ${this.base} as ${this.id}: ${s.method} to ${(s.sparsity * 100).toFixed(0)}% sparsity, ${s.nsamples} samples of ${this.o.calib}, ${s.rounds} round(s)`);
    const model = this.o.model ? await this.checkOwnModel(joined.model) : await this.downloadModel(joined.model);

    let pruned: { round: number; result: LocalPruneResult } | undefined;
    let uploaded = 0;
    let lastNote = '';
    const note = (line: string) => {
      if (line !== lastNote) this.progress.log(line);
      lastNote = line;
    };
    for (;;) {
      const a = await this.json<Assignment>('assignment', 'GET', PATHS.assignment).catch((e) => {
        if (e instanceof HttpError) throw new UserError(e.message, 1);
        throw e;
      });
      if (a.state === 'done') {
        this.progress.log(`federation finished after ${a.rounds} round(s); ${uploaded} block upload(s) from ${this.id}`);
        return { clientId: this.id, rounds: a.rounds, uploadedBlocks: uploaded, model };
      }
      if (a.state === 'dropped') throw new UserError(`the server dropped ${this.id} from round ${a.round}: ${a.reason}`, 1);
      if (a.state === 'waiting' || a.state === 'submitted') {
        note(a.state === 'waiting' ? `waiting: ${a.reason}` : `round ${a.round}: all blocks accepted; waiting for the other clients`);
        await sleep(this.o.pollMs ?? 500);
        continue;
      }
      if (pruned?.round !== a.round) {
        note(`round ${a.round}: pruning blocks ${a.blocks.join(',')} on ${this.o.calib}`);
        const result = await pruneAssignedBlocks({
          model, calib: this.o.calib, blocks: a.blocks, method: s.method, sparsity: s.sparsity, nsamples: s.nsamples, seqlen: s.seqlen,
          seed: this.o.seed + a.round - 1, tokenizer: this.o.tokenizer, dataDir: this.o.dataDir, device: this.o.device,
        }, this.progress);
        pruned = { round: a.round, result };
        this.progress.log(`round ${a.round}: pruned ${a.blocks.length} block(s) in ${result.seconds.toFixed(1)} s`);
      }
      for (const block of a.pending) {
        try {
          await this.upload(a.round, block, a.tensors[block]!, pruned.result);
          uploaded++;
          this.progress.log(`round ${a.round}: block ${block} accepted`);
        } catch (e) {
          // 409: stale round, or already accepted (our answer was lost): the next assignment says what is left
          if (e instanceof HttpError && e.status === 409) {
            note(`round ${a.round}: block ${block}: ${e.message}`);
            break;
          }
          if (e instanceof HttpError) throw new UserError(e.message, 1);
          throw e;
        }
      }
    }
  }

  /** PUT the block's masked weights: float32 little-endian, tensor after tensor in the server's order, with sha256. */
  private async upload(round: number, block: number, specs: TensorSpec[], result: LocalPruneResult): Promise<void> {
    const parts = specs.map((spec) => {
      const t = result.tensors.find((x) => x.name === spec.name);
      if (!t) throw new UserError(`block ${block}: the local prune produced no ${spec.role} (${spec.name})`, 1);
      if (t.values.length !== elementsOf(spec.dims)) throw new UserError(`block ${block} ${spec.role}: ${t.values.length} values, the server expects ${spec.dims.join('x')}`, 1);
      return Buffer.from(t.values.buffer, t.values.byteOffset, t.values.byteLength);
    });
    const hash = createHash('sha256');
    for (const p of parts) hash.update(p);
    const digest = hash.digest('hex');
    const bytes = parts.reduce((s, p) => s + p.length, 0);
    await this.call(`upload of block ${block}`, () => request(`${this.base}${PATHS.upload}/${round}/blocks/${block}`, {
      method: 'PUT', dispatcher: this.dispatcher,
      headers: this.headers({
        'content-type': 'application/octet-stream', 'content-length': String(bytes), [HEADERS.nonce]: randomHex(), [HEADERS.sha256]: digest,
        [HEADERS.dtype]: WIRE_DTYPE, [HEADERS.tensors]: encodeTensorHeader(specs),
      }),
      body: Readable.from(parts),
    }), (res) => res.body.dump());
  }

  /** The client's own copy of the model must be the server's, file for file. */
  private async checkOwnModel(server: ModelManifest): Promise<string> {
    const onnx = resolveModelFile(this.o.model!);
    const mine = await modelManifest(onnx);
    if (mine.sha256 !== server.sha256) {
      const theirs = new Map(server.files.map((f) => [f.path, f.sha256]));
      const differ = [...server.files.map((f) => f.path).filter((p) => !mine.files.some((m) => m.path === p)).map((p) => `${p} (missing)`),
        ...mine.files.filter((f) => theirs.get(f.path) !== f.sha256).map((f) => f.path)];
      throw new UserError(`--model ${this.o.model} is not the server's dense model (${differ.join(', ') || 'different files'} differ): drop --model to download it`, 2);
    }
    this.progress.log(`model: own copy ${onnx} matches the server's (sha256 ${server.sha256.slice(0, 12)}…)`);
    return onnx;
  }

  /** Downloads the model once into <cacheDir>/<sha256>/ (built in a .partial folder, each file checked). */
  private async downloadModel(m: ModelManifest): Promise<string> {
    for (const f of m.files) if (!safeRelativePath(f.path)) throw new UserError(`the server's model manifest names an unsafe path ${JSON.stringify(f.path)}; refusing it`, 1);
    if (!/^[0-9a-f]{64}$/.test(m.sha256)) throw new UserError('the server\'s model manifest has no valid sha256', 1);
    const dir = join(resolve(this.o.cacheDir), m.sha256);
    if (existsSync(dir)) {
      const ok = await Promise.all(m.files.map(async (f) => existsSync(join(dir, f.path)) && (await sha256File(join(dir, f.path))) === f.sha256));
      if (ok.every(Boolean)) {
        this.progress.log(`model: cached copy ${dir} (sha256 ${m.sha256.slice(0, 12)}…)`);
        return join(dir, m.onnx);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    const partial = `${dir}.partial`;
    rmSync(partial, { recursive: true, force: true });
    const total = m.files.reduce((s, f) => s + f.bytes, 0);
    this.progress.start('downloading model', total);
    for (const [i, f] of m.files.entries()) {
      const path = join(partial, f.path);
      mkdirSync(dirname(path), { recursive: true });
      const hash = createHash('sha256');
      const progress = this.progress;
      await this.call(`download of ${f.path}`, () => request(`${this.base}${PATHS.modelFile}/${i}`, { method: 'GET', dispatcher: this.dispatcher, headers: this.headers() }), async (res) => {
        const meter = new Transform({
          transform(chunk: Buffer, _e, cb) {
            hash.update(chunk);
            progress.tick(chunk.length);
            cb(null, chunk);
          },
        });
        await pipeline(res.body, meter, createWriteStream(path));
      });
      const got = hash.digest('hex');
      if (got !== f.sha256) {
        rmSync(partial, { recursive: true, force: true });
        throw new UserError(`download of ${f.path} is corrupt (sha256 ${got.slice(0, 12)}…, expected ${f.sha256.slice(0, 12)}…); run join again`, 1);
      }
    }
    this.progress.stop();
    renameSync(partial, dir);
    this.progress.log(`model: downloaded ${(total / 1e6).toFixed(1)} MB to ${dir} (sha256 ${m.sha256.slice(0, 12)}…)`);
    return join(dir, m.onnx);
  }
}

export async function runClient(o: JoinOptions, progress: Progress): Promise<JoinResult> {
  return new FederationClient(o, progress).run();
}
