#!/usr/bin/env node
// Entry point: runs the compiled CLI (dist/), or the TypeScript sources through tsx in a checkout without dist/.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

process.env.ORT_DISABLE_TELEMETRY ??= '1';
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const compiled = join(root, 'dist', 'cli', 'main.js');
if (existsSync(compiled)) {
  await import(pathToFileURL(compiled).href);
} else {
  await import('tsx/esm');
  await import(pathToFileURL(join(root, 'src', 'cli', 'main.ts')).href);
}
