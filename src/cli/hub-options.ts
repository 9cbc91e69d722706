// The options that say which files of a model to use, shared by every command that takes a MODEL
// (prune, eval, inspect, convert): defined once here, read with modelSource().
import type { Options } from 'yargs';
import type { ModelSourceOptions } from '../hub/registry.js';

export const modelSourceOptions = {
  revision: { type: 'string', describe: 'hub model: branch, tag or commit to download (default main)' },
  'model-file': { type: 'string', describe: 'the file to load from the repository or folder, e.g. onnx/model_fp16.onnx (default: the plain fp32 decoder, else the checkpoint)' },
} as const satisfies Record<string, Options>;

export function modelSource(argv: { revision?: string; modelFile?: string }): ModelSourceOptions {
  return { revision: argv.revision, modelFile: argv.modelFile };
}
