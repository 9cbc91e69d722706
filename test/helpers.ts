// Shared test helpers: deterministic random numbers, error metrics and the shared-data location.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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

/** ../shared (or $SPARSELLM_SHARED): the shared models and data beside the checkout. */
export function sharedDir(): string {
  const candidates = [process.env.SPARSELLM_SHARED, join(projectRoot, '..', 'shared')].filter(Boolean) as string[];
  for (const c of candidates) if (existsSync(join(c, 'models'))) return c;
  throw new Error('shared data not found: set SPARSELLM_SHARED or place it at ../shared');
}
