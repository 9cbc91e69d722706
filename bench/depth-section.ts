import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Markers of the bench/RESULTS.md section that bench/depth.ts writes and `npm run bench` keeps. */
export const DEPTH_BEGIN = '<!-- depth: written by bench/depth.ts -->';
export const DEPTH_END = '<!-- /depth -->';
/** Markers of the bench/RESULTS.md section that bench/scale.ts (`-- --scale`) writes and `npm run bench` keeps. */
export const SCALE_BEGIN = '<!-- scale: written by bench/scale.ts -->';
export const SCALE_END = '<!-- /scale -->';
export const FLOOR_BEGIN = '<!-- floor: written by bench/floor.ts -->';
export const FLOOR_END = '<!-- /floor -->';
/** Markers of the section bench/sparsellm-model.ts (`-- --sparsellm-model`) writes and `npm run bench` keeps. */
export const WHOLE_BEGIN = '<!-- sparsellm-model: written by bench/sparsellm-model.ts -->';
export const WHOLE_END = '<!-- /sparsellm-model -->';
/** Markers of the section bench/torch-compare.ts (`-- --torch`) writes and `npm run bench` keeps. */
export const TORCH_BEGIN = '<!-- torch: written by bench/torch-compare.ts -->';
export const TORCH_END = '<!-- /torch -->';

/**
 * Rewrites one section of bench/RESULTS.md, `section` (which starts with `begin` and ends with `end`), in place of the
 * one between those markers, or appended when there is none; the rest of the file stays as it is.
 */
export function writeResultsSection(begin: string, end: string, section: string): void {
  const resultsMd = join(dirname(fileURLToPath(import.meta.url)), 'RESULTS.md');
  const md = existsSync(resultsMd) ? readFileSync(resultsMd, 'utf8') : '';
  const [a0, a1] = [md.indexOf(begin), md.indexOf(end)];
  writeFileSync(resultsMd, a0 >= 0 && a1 > a0 ? md.slice(0, a0) + section + md.slice(a1 + end.length) : `${md.trimEnd()}\n\n${section}\n`);
}

/** The median of a non-empty list (the mean of the middle two for an even count). */
export function median(v: number[]): number {
  const s = v.slice().sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
