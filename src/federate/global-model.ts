// The FedSpaLLM server's output: the dense model with the aggregated weights put in, written the way `prune` writes its
// output (src/pipeline/output.ts): built in `<out>.partial`, config/tokenizer copied beside it, sparsellm-report.json,
// then renamed into place, so a failure or a kill never leaves a half-written model at `out`. The input is only read.
// Same layout as the input: an inline model stays inline, an external-data model gets its own data file (each
// aggregated tensor is streamed into it as it is set, so the weights are not held twice). The bytes written depend
// only on the dense model and the weights: the same uploads give the same file.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UserError } from '../errors.js';
import { OnnxModel, resolveModelFile } from '../model/index.js';
import { dtypeName, elementCount } from '../model/onnx-file.js';
import { commitOutput, copyCompanionFiles, createPartial, planOutput } from '../pipeline/output.js';
import { assertOutputOutsideInput, modelInputs } from '../pipeline/output-placement.js';
import { assertFinite } from '../pipeline/prune.js';

/** Storage types a float32 weight can be written into (OnnxModel.writeFloat32). */
const FLOAT_DTYPES = ['float32', 'float16', 'bfloat16', 'float64'];

export interface GlobalModelOptions {
  /** replace an existing `out`; a leftover `<out>.partial` is removed and rewritten, never reused */
  force?: boolean;
}

/**
 * Writes `denseModel` (an ONNX file or a model folder) with each initializer named in `weights` replaced by its values
 * (the initializer's own layout, as float32; stored in its dtype) to the folder `out`, with `report` as
 * sparsellm-report.json. Returns the written .onnx. Every weight is checked (known initializer, element count, finite,
 * finite once stored) before anything stays on disk.
 */
export async function writeGlobalModel(
  denseModel: string, weights: ReadonlyMap<string, Float32Array>, out: string, report: object, opts: GlobalModelOptions = {},
): Promise<string> {
  const onnxFile = resolveModelFile(denseModel);
  assertOutputOutsideInput(out, modelInputs(denseModel, onnxFile));
  const plan = planOutput(out, onnxFile, opts.force ?? false, false);
  const model = OnnxModel.load(onnxFile);
  for (const [name, values] of weights) {
    if (!model.hasInitializer(name)) throw new UserError(`global weight ${name} is not an initializer of ${onnxFile}`);
    const dtype = dtypeName(model.dataType(name));
    if (!FLOAT_DTYPES.includes(dtype)) throw new UserError(`global weight ${name} names a ${dtype} initializer, not a float weight`);
    const n = elementCount(model.initializer(name));
    if (values.length !== n) throw new UserError(`global weight ${name} has ${values.length} values, the model's has ${n} (dims ${model.dims(name).join('x')})`);
    assertFinite(values, `global weight ${name}`);
  }

  // a leftover `<out>.partial` is a write that died before its rename (a crash mid-commit): never built upon, since
  // its files may be half-written or from other weights; it is removed and the model written from scratch
  if (opts.force) rmSync(plan.partial, { recursive: true, force: true });
  createPartial(plan);
  const outOnnx = join(plan.partial, plan.onnxRelative);
  const inline = model.externalDataFiles.length === 0;
  try {
    mkdirSync(dirname(outOnnx), { recursive: true });
    if (!inline) model.streamReplacedTo(join(dirname(outOnnx), model.externalDataNameFor(outOnnx)));
    for (const [name, values] of weights) {
      model.writeFloat32(name, values);
      // fp16 / bf16 storage: a finite float32 above its range is stored as Inf
      const k = model.readFloat32(name).findIndex((v) => !Number.isFinite(v));
      if (k >= 0) throw new UserError(`global weight ${name} overflows its ${dtypeName(model.dataType(name))} storage (Inf at element ${k}): refusing to write a broken model`);
    }
    model.save(outOnnx, inline ? { sizeThreshold: Number.MAX_SAFE_INTEGER } : {});
    copyCompanionFiles(plan);
    writeFileSync(join(plan.partial, 'sparsellm-report.json'), `${JSON.stringify(report, null, 2)}\n`);
    model.closeStream();
    commitOutput(plan);
  } catch (e) {
    model.closeStream();
    rmSync(plan.partial, { recursive: true, force: true });
    throw e;
  }
  return join(plan.out, plan.onnxRelative);
}
