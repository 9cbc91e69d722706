// A Hugging Face hub on 127.0.0.1 for the tests (node:http), answering what @huggingface/hub asks and the way
// the real hub answers (huggingface_hub's file_download.py and the hub API docs are the reference):
//   GET  /api/models/{repo}[/revision/{rev}]         repo info: id, sha, siblings, gated, private
//   GET  /api/models/{repo}/tree/{rev}[/{path}]       [{type, oid, size, path, lfs?: {oid, size, pointerSize}}]
//   POST /api/models/{repo}/paths-info/{rev}          the same entries for {paths: [...]}
//   GET  /{repo}/resolve/{rev}/{path}                 small (git) files: 200/206 with ETag = git blob sha1,
//                                                     X-Repo-Commit, Content-Length, Accept-Ranges;
//                                                     LFS files: 302 to /cdn/{sha256} (X-Linked-Etag, X-Linked-Size)
//   GET  /cdn/{sha256}                                the LFS object, with Range support
// Errors carry X-Error-Code as the hub's do: 401 GatedRepo without a token (403 with a token lacking access),
// 404 RepoNotFound, RevisionNotFound, EntryNotFound. Faults for the tests: drop the connection after N bytes of
// a file, or serve wrong bytes for it. Every request is logged.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRepo {
  id: string;
  /** path → content */
  files: Record<string, Buffer>;
  /** tokens with access (the repo is gated when set) */
  gatedFor?: string[];
  /** extra branch/tag names → the same commit as main */
  tags?: string[];
}

export interface RequestLog {
  method: string;
  url: string;
  range?: string;
  auth?: string;
}

/** Files the hub stores in LFS in a default model repo (.gitattributes of `huggingface-cli repo create`). */
const LFS = /\.(onnx|onnx_data|safetensors|bin|model|msgpack|h5|pth)$/;

export const gitBlobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Entry {
  path: string;
  content: Buffer;
  oid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

export class FakeHub {
  readonly log: RequestLog[] = [];
  /** `path` of a repo file → drop the connection after `bytes` bytes of its body, `times` times. */
  readonly drop = new Map<string, { bytes: number; times: number }>();
  /** `path` of a repo file → serve these bytes in its place (same ETag and size: a corrupting proxy). */
  readonly corrupt = new Map<string, Buffer>();
  private server?: Server;
  private readonly repos = new Map<string, { repo: FakeRepo; sha: string; entries: Map<string, Entry> }>();
  private readonly cdn = new Map<string, Entry>();

  constructor(repos: FakeRepo[]) {
    for (const repo of repos) {
      const entries = new Map<string, Entry>();
      for (const [path, content] of Object.entries(repo.files)) {
        const e: Entry = { path, content, oid: gitBlobSha1(content) };
        if (LFS.test(path)) {
          const lfsOid = sha256(content);
          const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${lfsOid}\nsize ${content.length}\n`;
          e.lfs = { oid: lfsOid, size: content.length, pointerSize: pointer.length };
          e.oid = gitBlobSha1(Buffer.from(pointer)); // git stores the pointer
          this.cdn.set(lfsOid, e);
        }
        entries.set(path, e);
      }
      const sha = createHash('sha1').update(repo.id).update([...entries.values()].map((e) => `${e.path}:${e.oid}`).join('\n')).digest('hex');
      this.repos.set(repo.id, { repo, sha, entries });
    }
  }

  commitOf(repo: string): string {
    return this.repos.get(repo)!.sha;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}`;
  }

  /** Requests that moved file contents (resolve and cdn), optionally only those of `path`. */
  downloads(path?: string): RequestLog[] {
    return this.log.filter((r) => /\/(resolve\/|cdn\/)/.test(r.url) && (!path || r.url.endsWith(`/${path}`) || this.cdnPath(r.url) === path));
  }

  private cdnPath(url: string): string | undefined {
    const m = /^\/cdn\/([0-9a-f]{64})/.exec(url);
    return m ? this.cdn.get(m[1]!)?.path : undefined;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.log.push({ method: req.method!, url: req.url!, range: req.headers.range, auth: req.headers.authorization });
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        try {
          this.handle(req, res, body);
        } catch (e) {
          res.writeHead(500).end(String(e));
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  private error(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { 'Content-Type': 'application/json', 'X-Error-Code': code, 'X-Error-Message': message }).end(JSON.stringify({ error: message }));
  }

  /** The repo if the request may see it; otherwise the error is sent. */
  private access(req: IncomingMessage, res: ServerResponse, id: string) {
    const r = this.repos.get(id);
    if (!r) return this.error(res, 404, 'RepoNotFound', 'Repository not found');
    if (r.repo.gatedFor) {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (!token) return this.error(res, 401, 'GatedRepo', `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      if (!r.repo.gatedFor.includes(token)) return this.error(res, 403, 'GatedRepo', `Access to model ${id} is restricted and you are not in the authorized list. Visit https://huggingface.co/${id} to ask for access.`);
    }
    return r;
  }

  private revision(res: ServerResponse, r: { repo: FakeRepo; sha: string }, rev: string): boolean {
    if (rev === 'main' || rev === 'HEAD' || rev === r.sha || r.repo.tags?.includes(rev)) return true;
    this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    return false;
  }

  private treeEntry(e: Entry) {
    return { type: 'file', oid: e.oid, size: e.content.length, path: e.path, ...(e.lfs ? { lfs: e.lfs } : {}) };
  }

  private handle(req: IncomingMessage, res: ServerResponse, body: string): void {
    const url = new URL(req.url!, 'http://x');
    const path = decodeURIComponent(url.pathname);
    let m: RegExpExecArray | null;
    if ((m = /^\/cdn\/([0-9a-f]{64})$/.exec(path))) {
      const e = this.cdn.get(m[1]!);
      if (!e) return void res.writeHead(404).end();
      return this.sendContent(req, res, e, { ETag: `"${e.lfs!.oid}"` });
    }
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)(?:\/revision\/([^/]+))?$/.exec(path)) && req.method === 'GET') {
      const r = this.access(req, res, m[1]!);
      if (!r || !this.revision(res, r, m[2] ?? 'main')) return;
      const gated = r.repo.gatedFor ? 'manual' : false;
      const info = {
        _id: createHash('md5').update(r.repo.id).digest('hex').slice(0, 24), id: r.repo.id, modelId: r.repo.id, sha: r.sha,
        private: false, gated, disabled: false, downloads: 0, likes: 0, pipeline_tag: 'text-generation', library_name: 'transformers',
        lastModified: '2024-01-01T00:00:00.000Z', tags: [], siblings: [...r.entries.keys()].map((rfilename) => ({ rfilename })),
      };
      return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(info));
    }
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(path)) && req.method === 'GET') {
      const r = this.access(req, res, m[1]!);
      if (!r || !this.revision(res, r, m[2]!)) return;
      const dir = (m[3] ?? '').replace(/\/$/, '');
      const recursive = url.searchParams.get('recursive') === 'true';
      const out: object[] = [];
      const dirs = new Set<string>();
      for (const e of r.entries.values()) {
        if (dir && !e.path.startsWith(`${dir}/`)) continue;
        const rest = dir ? e.path.slice(dir.length + 1) : e.path;
        const parts = rest.split('/');
        for (let i = 1; i < parts.length && (recursive || i === 1); i++) dirs.add((dir ? `${dir}/` : '') + parts.slice(0, i).join('/'));
        if (recursive || parts.length === 1) out.push(this.treeEntry(e));
      }
      if (dir && out.length === 0 && dirs.size === 0) return this.error(res, 404, 'EntryNotFound', `${dir} does not exist on "${m[2]}"`);
      const dirEntries = [...dirs].map((d) => ({ type: 'directory', oid: gitBlobSha1(Buffer.from(d)), size: 0, path: d }));
      return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify([...dirEntries, ...out]));
    }
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/paths-info\/([^/]+)$/.exec(path)) && req.method === 'POST') {
      const r = this.access(req, res, m[1]!);
      if (!r || !this.revision(res, r, m[2]!)) return;
      const { paths, expand } = JSON.parse(body) as { paths: string[]; expand?: boolean };
      const out = paths.flatMap((p) => {
        const e = r.entries.get(p);
        if (!e) return [];
        return [{ ...this.treeEntry(e), ...(expand ? { lastCommit: { id: r.sha, title: 'Upload', date: '2024-01-01T00:00:00.000Z' }, securityFileStatus: { status: 'safe' } } : {}) }];
      });
      return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(out));
    }
    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path)) && (req.method === 'GET' || req.method === 'HEAD')) {
      const r = this.access(req, res, m[1]!);
      if (!r || !this.revision(res, r, m[2]!)) return;
      const e = r.entries.get(m[3]!);
      if (!e) return this.error(res, 404, 'EntryNotFound', `${m[3]} does not exist on "${m[2]}"`);
      const common = { 'X-Repo-Commit': r.sha, 'Accept-Ranges': 'bytes' };
      if (e.lfs) {
        return void res.writeHead(302, {
          ...common, Location: `/cdn/${e.lfs.oid}?X-Amz-Signature=test`, 'X-Linked-Etag': `"${e.lfs.oid}"`, 'X-Linked-Size': String(e.lfs.size),
          ETag: `"${e.oid}"`, 'Content-Length': '0',
        }).end();
      }
      return this.sendContent(req, res, e, { ...common, ETag: `"${e.oid}"` });
    }
    this.error(res, 404, 'EntryNotFound', `no route for ${req.method} ${path}`);
  }

  /** The file's bytes, or the requested range of them (206), with the faults applied. */
  private sendContent(req: IncomingMessage, res: ServerResponse, e: Entry, headers: Record<string, string>): void {
    const content = this.corrupt.get(e.path) ?? e.content;
    const size = content.length;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0, end = size - 1, status = 200;
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) return void res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end();
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    }
    const slice = content.subarray(start, end + 1);
    res.writeHead(status, { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(slice.length) });
    if (req.method === 'HEAD') return void res.end();
    const drop = this.drop.get(e.path);
    if (drop && drop.times > 0 && slice.length > drop.bytes) {
      drop.times--;
      res.write(slice.subarray(0, drop.bytes), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(slice);
  }
}
