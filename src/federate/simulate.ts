// `sparsellm federate simulate`: a whole federation on one machine. The calibration text is cut into N private
// files (split.ts) in a temporary folder, then `federate serve` and N `federate join` run as child processes of this
// same program on 127.0.0.1, exactly as they would on N machines (each client uses the model folder as its own copy,
// checked by hash). Their output is relayed line by line with a [server] / [client-i] prefix.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { UserError } from '../errors.js';
import { randomHex } from './protocol.js';
import { splitCalibration, type SplitMode } from './split.js';

export interface SimulateOptions {
  model: string;
  calib: string;
  clients: number;
  split: SplitMode;
  /** one capacity per client (or one for all) */
  capacities: number[];
  out: string;
  /** serve options passed through as they are (--sparsity 0.7 --method sparsegpt ...) */
  serveArgs: string[];
  /** join options passed to every client (--seqlen is the server's; --seed, --device ...) */
  joinArgs: string[];
  seed: number;
  docSeparator?: string;
  keepSplits: boolean;
  quiet: boolean;
}

export interface SimulateResult {
  serverCode: number | null;
  clientCodes: (number | null)[];
  splits: string;
}

/** argv to run this same program again: node [its flags, e.g. --import tsx] <entry script>. */
function self(): { command: string; args: string[] } {
  return { command: process.execPath, args: [...process.execArgv, process.argv[1]!] };
}

function relay(child: ChildProcess, prefix: string, quiet: boolean): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    const rl = createInterface({ input: stream });
    rl.on('line', (line) => {
      if (!quiet || stream === child.stdout) process.stderr.write(`${prefix} ${line}\n`);
    });
  }
}

const exited = (child: ChildProcess) => new Promise<number | null>((res) => {
  if (child.exitCode !== null || child.signalCode !== null) res(child.exitCode);
  else child.once('exit', (code) => res(code));
});

export async function runSimulation(o: SimulateOptions): Promise<SimulateResult> {
  if (!existsSync(o.calib)) throw new UserError(`--calib ${o.calib}: no such file (simulate splits a text file among the clients)`);
  const text = readFileSync(o.calib, 'utf8');
  const shares = splitCalibration(text, o.clients, o.split, o.seed, o.docSeparator);
  const dir = mkdtempSync(join(tmpdir(), 'sparsellm-federate-'));
  const files = shares.map((share, i) => {
    const f = join(dir, `client-${i + 1}.txt`);
    writeFileSync(f, share, { mode: 0o600 });
    return f;
  });
  const token = randomHex(16);
  const { command, args } = self();
  const env = { ...process.env, SPARSELLM_FEDERATION_TOKEN: token };
  const children: ChildProcess[] = [];
  const killAll = () => children.forEach((c) => c.exitCode === null && c.kill('SIGTERM'));
  process.once('SIGINT', killAll);
  try {
    const server = spawn(command, [...args, 'federate', 'serve', '--model', o.model, '--out', o.out, '--host', '127.0.0.1', '--port', '0', '--clients', String(o.clients), ...o.serveArgs], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(server);
    relay(server, '[server]', o.quiet);
    const addressFile = join(resolve(o.out), 'state', 'address.json');
    let url: string | undefined;
    while (!url) {
      if (server.exitCode !== null) throw new UserError(`federate simulate: the server exited with code ${server.exitCode} before listening (see [server] above)`, 1);
      if (existsSync(addressFile)) {
        try {
          const a = JSON.parse(readFileSync(addressFile, 'utf8')) as { url: string; pid: number };
          if (a.pid === server.pid) url = a.url;
        } catch { /* being written */ }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const clients = files.map((file, i) => {
      const capacity = o.capacities.length === 1 ? o.capacities[0]! : o.capacities[i]!;
      const c = spawn(command, [...args, 'federate', 'join', '--server', url!, '--calib', file, '--capacity', String(capacity), '--model', o.model, '--name', `client-${i + 1}`, '--quiet', ...o.joinArgs], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(c);
      relay(c, `[client-${i + 1}]`, o.quiet);
      return c;
    });
    const serverCode = await exited(server);
    // a client still running once the server is gone cannot finish: stop it
    const clientCodes = await Promise.all(clients.map(async (c) => {
      const timer = setTimeout(() => c.kill('SIGTERM'), 5000);
      const code = await exited(c);
      clearTimeout(timer);
      return code;
    }));
    return { serverCode, clientCodes, splits: dir };
  } finally {
    process.off('SIGINT', killAll);
    killAll();
    if (!o.keepSplits) rmSync(dir, { recursive: true, force: true });
  }
}
