/** Markers of the bench/RESULTS.md section that bench/sparsellm-solve.ts writes and `npm run bench` keeps. */
export const SOLVE_BEGIN = '<!-- sparsellm-solve: written by bench/sparsellm-solve.ts -->';
export const SOLVE_END = '<!-- /sparsellm-solve -->';
