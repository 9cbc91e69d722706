// Shared test helpers: deterministic random numbers, error metrics and the shared-data location.
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** mulberry32: the same generator the federation's layer sampling uses (src/federate/sampling.ts). */
export { seededRandom as mulberry32 } from '../src/federate/sampling.js';

/** Standard normal samples from a uniform generator (Box–Muller). */
export function gaussian(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** ‖a − b‖_F / ‖b‖_F */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / (den || 1));
}

export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The bundled demo model (ships with the repository, same files as ../shared/models/stories260K). */
export const BUNDLED_STORIES = join(projectRoot, 'models', 'stories260K');

/** ../shared (or $SPARSELLM_SHARED): the shared models and data beside the checkout; where it would be when absent. */
export const SHARED = [process.env.SPARSELLM_SHARED, join(projectRoot, '..', 'shared')]
  .filter((c): c is string => Boolean(c))
  .find((c) => existsSync(join(c, 'models'))) ?? join(projectRoot, '..', 'shared');

/** A path inside ../shared (it may not exist: guard the test with {@link needsShared}). */
export function shared(...rel: string[]): string {
  return join(SHARED, ...rel);
}

/** True on CI (CI=true), where ../shared is present and every test must run. */
export function onCi(): boolean {
  return /^(1|true|yes)$/i.test(process.env.CI ?? '');
}

/**
 * For node:test's `skip` option: false when every path exists (absolute, or relative to ../shared), else one line
 * naming what is missing (`needs ../shared/models/tiny-wikitext-opt`). On CI a missing fixture throws instead: CI
 * has ../shared, so a skip there would hide a test that should have run.
 */
export function needsShared(...paths: string[]): string | false {
  const missing = paths.map((p) => (isAbsolute(p) ? p : join(SHARED, p))).filter((p) => !existsSync(p));
  if (missing.length === 0) return false;
  const line = `needs ${missing.map((p) => (p.startsWith(SHARED) ? join('../shared', relative(SHARED, p)) : p)).join(', ')}`;
  if (onCi()) throw new Error(`CI=true but this test ${line}: CI must run every test (set SPARSELLM_SHARED or place the data at ../shared)`);
  return line;
}

/** ../shared itself, or an Error when this checkout has none (prefer {@link needsShared} + {@link shared}). */
export function sharedDir(): string {
  if (needsShared('models') !== false) throw new Error('shared data not found: set SPARSELLM_SHARED or place it at ../shared');
  return SHARED;
}
