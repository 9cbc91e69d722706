// Running the CLI in a child process, as a user would: the one implementation every CLI test uses.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from './helpers.js';

export const MAIN = join(projectRoot, 'src', 'cli', 'main.ts');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

/**
 * The environment every CLI child starts from: no telemetry, no debug stack traces, no hub access (a test that
 * talks to its own fake hub sets HF_HUB_OFFLINE='' and HF_ENDPOINT), one solver/onnxruntime thread so that
 * concurrent children share the 2 cores predictably.
 */
const CLI_ENV = { ORT_DISABLE_TELEMETRY: '1', SPARSELLM_DEBUG: '', HF_HUB_OFFLINE: '1', SPARSELLM_THREADS: '1' };

/** Starts `sparsellm ARGS` (src through tsx); `done` resolves when it exits. */
export function startCli(args: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    cwd: projectRoot,
    env: { ...process.env, ...CLI_ENV, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '', stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, seconds: (performance.now() - t0) / 1000 }));
  });
  return { child, done };
}

export const runCli = (args: string[], env?: Record<string, string>) => startCli(args, env).done;
