// `sparsellm convert MODEL --out DIR [--dtype fp32|fp16]`: a Hugging Face checkpoint folder (config.json +
// safetensors or pytorch_model.bin) -> an ONNX decoder folder that prune, eval, inspect, onnxruntime and transformers.js load.
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { convertCheckpoint } from '../../convert/convert.js';
import type { OutputDtype } from '../../convert/onnx-graph.js';
import { resolveCheckpointArgument } from '../../hub/registry.js';
import { assertOutputOutsideInput } from '../../pipeline/output-placement.js';
import { createProgress } from '../../pipeline/progress.js';
import { modelSourceOptions } from '../hub-options.js';
import { validateConvertArgs } from '../validate.js';

interface ConvertArgs {
  model: string;
  revision?: string;
  out: string;
  dtype?: OutputDtype;
  force: boolean;
  json: boolean;
  quiet: boolean;
}

async function handler(argv: ArgumentsCamelCase<ConvertArgs>): Promise<void> {
  validateConvertArgs(argv);
  const progress = createProgress(!argv.quiet && !argv.json);
  const folder = await resolveCheckpointArgument(argv.model, { revision: argv.revision, progress });
  assertOutputOutsideInput(argv.out, [{ path: folder, what: 'the input checkpoint folder', enclosing: true }]);
  const report = convertCheckpoint(folder, argv.out, { dtype: argv.dtype, force: argv.force, progress });
  if (argv.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else process.stdout.write(`converted ${report.source} (${report.architecture}, ${report.sourceDtype}) to ${report.output} (${report.dtype}, ${report.tensors} tensors, ${report.seconds.toFixed(1)} s)\n`);
}

export const convertCommand: CommandModule<object, ConvertArgs> = {
  command: 'convert <model>',
  describe: 'Convert a Hugging Face checkpoint folder (config.json + safetensors or pytorch_model.bin, OPT or LLaMA) to ONNX',
  builder: (y: Argv) =>
    y
      .positional('model', { type: 'string', demandOption: true, describe: 'checkpoint folder (config.json + model.safetensors or pytorch_model.bin, or their shards with the index json), known name or hub id' })
      .option('revision', modelSourceOptions.revision)
      .option('out', { type: 'string', demandOption: true, describe: 'output folder (written as OUT.partial, then renamed)' })
      .option('dtype', { choices: ['fp32', 'fp16'] as const, describe: 'weights and activations of the ONNX model (default: the checkpoint\'s; bf16 -> fp32, as onnxruntime\'s CPU provider has no bf16 MatMul)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing output folder' })
      .option('json', { type: 'boolean', default: false, describe: 'print the result as one JSON object' })
      .option('quiet', { type: 'boolean', default: false, describe: 'no progress bar' }) as unknown as Argv<ConvertArgs>,
  handler,
};
