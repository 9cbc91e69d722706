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
