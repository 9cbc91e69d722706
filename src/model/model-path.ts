// Resolves the MODEL argument (a folder or an .onnx file) to the .onnx file to load.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../errors.js';

const CANDIDATES = ['onnx/model.onnx', 'model.onnx', 'onnx/decoder_model.onnx', 'decoder_model.onnx'];
const MERGED = ['onnx/decoder_model_merged.onnx', 'decoder_model_merged.onnx'];

export function resolveModelFile(pathOrDir: string): string {
  if (!existsSync(pathOrDir)) throw new UserError(`model not found: ${pathOrDir}`);
  if (statSync(pathOrDir).isFile()) return pathOrDir;
  for (const c of CANDIDATES) if (existsSync(join(pathOrDir, c))) return join(pathOrDir, c);
  const merged = MERGED.find((m) => existsSync(join(pathOrDir, m)));
  if (merged) {
    throw new UserError(`${pathOrDir} holds only ${merged}, an optimum merged decoder; export decoder_model.onnx / model.onnx (without the merged If graph) and point sparsellm at it`);
  }
  throw new UserError(`no ONNX model in ${pathOrDir}: expected one of ${CANDIDATES.join(', ')}`);
}
