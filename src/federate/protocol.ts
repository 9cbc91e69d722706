// The FedSpaLLM wire protocol between `sparsellm federate serve` and `federate join` (README "Federated pruning").
// JSON for control messages; tensors as raw little-endian float32 bodies (application/octet-stream), streamed, with
// their sha256 in a header. Every request carries the federation token (Authorization: Bearer); every request that
// changes the server's state also carries the client's id + key (issued at join) and a fresh nonce, so a replayed
// request is refused.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { OnnxModel } from '../model/index.js';
import { COMPANION_FILES } from '../pipeline/output.js';

export const PROTOCOL_VERSION = 1;
export const DEFAULT_PORT = 8741;

export const HEADERS = {
  client: 'x-sparsellm-client',
  clientKey: 'x-sparsellm-client-key',
  nonce: 'x-sparsellm-nonce',
  sha256: 'x-sparsellm-sha256',
  dtype: 'x-sparsellm-dtype',
  /** JSON [{ name, dims }] of the tensors in the body, in order (URI-encoded) */
  tensors: 'x-sparsellm-tensors',
} as const;

/** The only tensor encoding accepted on the wire. */
export const WIRE_DTYPE = 'float32';

export const PATHS = {
  join: '/v1/join',
  status: '/v1/status',
  assignment: '/v1/assignment',
  modelManifest: '/v1/model',
  /** + /<index> */
  modelFile: '/v1/model/files',
  /** + /<round>/blocks/<block> */
  upload: '/v1/rounds',
} as const;

/** One tensor of a block upload: the initializer name and its dims as stored in the ONNX model. */
export interface TensorSpec {
  name: string;
  role: string;
  dims: number[];
}

export interface FederationSettings {
  method: 'sparsegpt' | 'wanda' | 'magnitude' | 'sparsellm';
  sparsity: number;
  nsamples: number;
  seqlen?: number;
  rounds: number;
}

export interface JoinRequest {
  protocol: number;
  capacity: number;
  name?: string;
}

export interface JoinResponse {
  clientId: string;
  clientKey: string;
  model: ModelManifest;
  settings: FederationSettings;
}

/** What a client is asked to do now. */
export type Assignment =
  | { state: 'waiting'; reason: string }
  | { state: 'assigned'; round: number; seed: number; blocks: number[]; pending: number[]; tensors: Record<number, TensorSpec[]> }
  | { state: 'submitted'; round: number }
  | { state: 'dropped'; round: number; reason: string }
  | { state: 'done'; rounds: number };

export interface ModelFile {
  /** path relative to the model folder, '/'-separated */
  path: string;
  bytes: number;
  sha256: string;
}

/** The dense model as the server offers it: its files and one digest over all of them. */
export interface ModelManifest {
  /** sha256 over "path\0sha256\n" of every file, in order */
  sha256: string;
  /** the .onnx file, relative to the folder */
  onnx: string;
  files: ModelFile[];
}

export function randomHex(bytes = 16): string {
  return randomBytes(bytes).toString('hex');
}

/** Constant-time equality of two secrets (compared through their sha256, so lengths need not match). */
export function secretEquals(given: string | undefined, expected: string): boolean {
  const a = createHash('sha256').update(given ?? '').digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b) && given !== undefined;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The folder holding config/tokenizer beside an .onnx file (`onnx/model.onnx` -> its parent's parent). */
export function modelRootOf(onnxFile: string): string {
  const dir = dirname(resolve(onnxFile));
  return basename(dir) === 'onnx' ? dirname(dir) : dir;
}

/** The files a client needs to run the model (ONNX, its external data, config, tokenizer), hashed. */
export async function modelManifest(onnxFile: string): Promise<ModelManifest> {
  const root = modelRootOf(onnxFile);
  const onnx = resolve(onnxFile);
  const model = OnnxModel.load(onnx);
  const paths = [
    ...COMPANION_FILES.map((f) => join(root, f)).filter((p) => existsSync(p) && statSync(p).isFile()),
    onnx,
    ...model.externalDataFiles.map((f) => join(dirname(onnx), f)),
  ];
  const files: ModelFile[] = [];
  for (const p of paths) files.push({ path: relative(root, p).split(sep).join('/'), bytes: statSync(p).size, sha256: await sha256File(p) });
  return { sha256: manifestDigest(files), onnx: relative(root, onnx).split(sep).join('/'), files };
}

export function manifestDigest(files: readonly ModelFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.path}\0${f.sha256}\n`);
  return h.digest('hex');
}

/** A manifest path is safe to create under a folder: relative, no '..', no absolute or drive parts. */
export function safeRelativePath(p: string): boolean {
  return p.length > 0 && !p.startsWith('/') && !p.includes('\\') && !p.includes('\0') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}

export function encodeTensorHeader(specs: readonly TensorSpec[]): string {
  return encodeURIComponent(JSON.stringify(specs.map((s) => ({ name: s.name, dims: s.dims }))));
}

export function decodeTensorHeader(value: string | undefined): { name: string; dims: number[] }[] | undefined {
  if (value === undefined) return undefined;
  try {
    const parsed = JSON.parse(decodeURIComponent(value)) as unknown;
    if (!Array.isArray(parsed)) return undefined;
    return parsed.map((t) => ({ name: String((t as { name: unknown }).name), dims: ((t as { dims: unknown }).dims as unknown[]).map(Number) }));
  } catch {
    return undefined;
  }
}

export const elementsOf = (dims: readonly number[]) => dims.reduce((a, b) => a * b, 1);
