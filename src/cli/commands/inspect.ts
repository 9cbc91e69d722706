// `sparsellm inspect MODEL [--json]`: architecture, blocks, and each linear's shape, parameters,
// sparsity (fraction of exact zeros) and N:M pattern.
import type { CommandModule } from 'yargs';
import { resolveModelArgument } from '../../hub/registry.js';
import { openDecoderModel } from '../../model/index.js';
import { readLinearWeight } from '../../model/weights.js';
import { detectNM, zeroFraction } from '../../model/sparsity.js';
import { validateInspectArgs } from '../validate.js';
import { createProgress } from '../../pipeline/progress.js';
import { modelSource, modelSourceOptions } from '../hub-options.js';

export interface LinearReport {
  role: string;
  in: number;
  out: number;
  params: number;
  sparsity: number;
  /** "N:M" (N of every M consecutive inputs pruned) or null. */
  nm: string | null;
  dtype: string;
  weight: string;
}

export interface InspectReport {
  model: string;
  architecture: 'opt' | 'llama';
  detectedFrom: string;
  blocks: { index: number; linears: LinearReport[] }[];
  totals: { blocks: number; linears: number; params: number; zeros: number; sparsity: number };
}

export function inspectModel(pathOrDir: string): InspectReport {
  const { model, layout } = openDecoderModel(pathOrDir);
  let params = 0, zeros = 0, linears = 0;
  const blocks = layout.blocks.map((b) => ({
    index: b.index,
    linears: b.linears.map((l): LinearReport => {
      const w = readLinearWeight(model, l);
      const sparsity = zeroFraction(w);
      params += w.length;
      zeros += Math.round(sparsity * w.length);
      linears++;
      return { role: l.role, in: l.inFeatures, out: l.outFeatures, params: w.length, sparsity, nm: detectNM(w, l.outFeatures, l.inFeatures), dtype: l.dtype, weight: l.weightName };
    }),
  }));
  return {
    model: model.path, architecture: layout.architecture, detectedFrom: layout.detectedFrom, blocks,
    totals: { blocks: blocks.length, linears, params, zeros, sparsity: params ? zeros / params : 0 },
  };
}

function formatReport(r: InspectReport): string {
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  const lines = [
    `model:        ${r.model}`,
    `architecture: ${r.architecture} (from ${r.detectedFrom}), ${r.totals.blocks} blocks x ${r.blocks[0]?.linears.length ?? 0} linears`,
    '',
    `${'block'.padEnd(6)}${'role'.padEnd(11)}${'out x in'.padStart(14)}${'params'.padStart(12)}${'sparsity'.padStart(10)}${'N:M'.padStart(6)}  dtype`,
  ];
  for (const b of r.blocks) {
    for (const l of b.linears) {
      lines.push(`${String(b.index).padEnd(6)}${l.role.padEnd(11)}${`${l.out} x ${l.in}`.padStart(14)}${String(l.params).padStart(12)}${pct(l.sparsity).padStart(10)}${(l.nm ?? '-').padStart(6)}  ${l.dtype}`);
    }
  }
  lines.push('', `total: ${r.totals.linears} linears, ${r.totals.params} parameters, ${r.totals.zeros} zeros (${pct(r.totals.sparsity)} sparse)`);
  return lines.join('\n');
}

export const inspectCommand: CommandModule<object, { model: string; json: boolean; revision?: string; modelFile?: string }> = {
  command: 'inspect <model>',
  describe: 'Blocks, linear layers, shapes and sparsity of an ONNX model',
  builder: (y) =>
    y
      .positional('model', { type: 'string', demandOption: true, describe: 'model folder (onnx/model.onnx, model.onnx, decoder_model.onnx, or a checkpoint: config.json + safetensors or pytorch_model.bin), .onnx file, known name or hub id' })
      .options(modelSourceOptions)
      .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' }) as never,
  handler: async (argv) => {
    validateInspectArgs(argv);
    const path = await resolveModelArgument(argv.model, { ...modelSource(argv), progress: createProgress(!argv.json) });
    const report = inspectModel(path);
    process.stdout.write(argv.json ? `${JSON.stringify(report)}\n` : `${formatReport(report)}\n`);
  },
};
