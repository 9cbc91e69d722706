// Running the CLI in a child process, as a user would.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from './helpers.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(projectRoot, 'src', 'cli', 'main.ts'), ...args], {
      cwd: projectRoot,
      env: { ...process.env, ORT_DISABLE_TELEMETRY: '1', SPARSELLM_THREADS: '1', ...env },
    });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
