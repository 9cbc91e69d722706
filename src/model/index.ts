// Public API of the model layer: ONNX I/O, decoder layout (blocks, linears), block-by-block execution.
import { analyzeDecoder, type DecoderLayout } from './decoder-layout.js';
import { resolveModelFile } from './model-path.js';
import { OnnxModel } from './onnx-file.js';

export { OnnxModel, type SaveOptions } from './onnx-file.js';
export { analyzeDecoder, type DecoderBlock, type DecoderLayout, type LinearLayer } from './decoder-layout.js';
export { resolveModelFile } from './model-path.js';
export { BlockRunner, decoderInputFeeds, sessionOptions, toFloat32, type BlockResult, type BlockRunnerOptions, type BlockState } from './block-runner.js';
export { readLinearWeight, writeLinearWeight, transpose } from './weights.js';
export { detectNM, minZerosPerGroup, zeroFraction } from './sparsity.js';
export type { Architecture, FamilySpec } from './families/registry.js';

/** Load MODEL (a folder or an .onnx file) and find its decoder blocks; UserError on bad input. */
export function openDecoderModel(pathOrDir: string): { model: OnnxModel; layout: DecoderLayout } {
  const model = OnnxModel.load(resolveModelFile(pathOrDir));
  return { model, layout: analyzeDecoder(model) };
}
