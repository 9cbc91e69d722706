// Where an output folder may go (issue 19): never inside the input model's folder, never around any input (a
// `--force` run deletes the old output folder with everything in it). Paths are compared after `..` is resolved
// and symlinks are followed: the real path of the nearest existing ancestor, plus the part that does not exist yet.
import { existsSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { UserError } from '../errors.js';

export interface ReadInput {
  /** A file or folder the command reads. */
  path: string;
  /** How the message names it: "the input model folder", "the --calib input". */
  what: string;
  /** A model folder: the output may not go anywhere inside it either (only around it is refused otherwise). */
  enclosing?: boolean;
}

/** `path` with `..` resolved and symlinks followed, for a path that may not exist yet. */
export function realPathOf(path: string): string {
  let head = resolve(path);
  const rest: string[] = [];
  while (!existsSync(head) && dirname(head) !== head) {
    rest.unshift(basename(head));
    head = dirname(head);
  }
  try {
    head = realpathSync(head);
  } catch {
    // unreadable ancestor: compare the resolved path as it is
  }
  return join(head, ...rest);
}

/** True when `inner` is `outer` or lies under it (both real paths). */
function within(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/**
 * Refuses an output folder (`--out`, and the `<out>.partial` it is built in) that is an input, contains one, or
 * lies inside an enclosing input (the model folder). `option` names the output option in the message.
 */
export function assertOutputOutsideInput(out: string, inputs: ReadInput[], option = '--out'): void {
  const targets = [{ path: realPathOf(out), note: '' }, { path: realPathOf(`${resolve(out)}.partial`), note: ` (its working folder ${resolve(out)}.partial)` }];
  for (const input of inputs) {
    if (!existsSync(input.path)) continue;
    const real = realPathOf(input.path);
    const shown = real === resolve(input.path) ? input.path : `${input.path} (${real})`;
    for (const t of targets) {
      if (t.path === real) throw new UserError(`${option} ${out}${t.note} is ${input.what} ${shown}: choose a new folder outside it (inputs are never modified)`);
      if (within(real, t.path)) throw new UserError(`${option} ${out}${t.note} contains ${input.what} ${shown}: choose a folder that does not contain it (inputs are never modified)`);
      if (input.enclosing && within(t.path, real)) throw new UserError(`${option} ${out}${t.note} is inside ${input.what} ${shown}: choose a folder outside it (inputs are never modified)`);
    }
  }
}

/**
 * The input model as read inputs: the folder the user named (enclosing), the `MODEL/onnx/` layout's root when an
 * .onnx file inside it was named (enclosing: it is a model folder too), and the .onnx file itself.
 */
export function modelInputs(modelPath: string, onnxFile: string): ReadInput[] {
  const inputs: ReadInput[] = [];
  if (statSync(modelPath).isDirectory()) inputs.push({ path: modelPath, what: 'the input model folder', enclosing: true });
  const onnxDir = dirname(resolve(onnxFile));
  if (basename(onnxDir) === 'onnx') inputs.push({ path: dirname(onnxDir), what: 'the input model folder', enclosing: true });
  inputs.push({ path: onnxFile, what: 'the input model file' });
  return inputs;
}

/** Other files and folders named on the command line that exist on disk (dataset names do not). */
export function optionInputs(options: Record<string, string | string[] | undefined>): ReadInput[] {
  const inputs: ReadInput[] = [];
  for (const [option, v] of Object.entries(options)) {
    for (const path of [v ?? []].flat()) if (path && existsSync(path)) inputs.push({ path, what: `the ${option} input` });
  }
  return inputs;
}

/**
 * Refuses a scratch folder (`--offload DIR`, where a fresh sub-folder is made and removed) that is an input, lies
 * inside an input model folder, or lies inside the output folder or its `<out>.partial` (renamed at the end). Unlike
 * the output, the scratch folder may contain inputs: only its own fresh sub-folder is ever written or deleted.
 */
export function assertScratchOutsideInputs(dir: string, option: string, inputs: ReadInput[], out: string): void {
  const real = realPathOf(dir);
  for (const input of inputs) {
    if (!existsSync(input.path)) continue;
    const inReal = realPathOf(input.path);
    const shown = inReal === resolve(input.path) ? input.path : `${input.path} (${inReal})`;
    if (real === inReal || (input.enclosing && within(real, inReal))) {
      throw new UserError(`${option} ${dir} is ${real === inReal ? '' : 'inside '}${input.what} ${shown}: choose a folder outside it (inputs are never modified)`);
    }
  }
  if (existsSync(real) && !statSync(real).isDirectory()) throw new UserError(`${option} ${dir} is a file: give a folder`);
  for (const o of [resolve(out), `${resolve(out)}.partial`]) {
    if (within(real, realPathOf(o))) throw new UserError(`${option} ${dir} is inside the output folder ${o}: choose a folder outside it`);
  }
}
