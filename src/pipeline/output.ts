// The output folder: built in `<out>.partial` and moved into place only when complete, so an interrupted or
// failed run never leaves a half-written model where the user expects one. The input is only ever read.
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { UserError } from '../errors.js';

/** Files copied beside the pruned model so it loads like the original (config, tokenizer). */
export const COMPANION_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'tokenizer.model', 'vocab.json', 'merges.txt', 'genai_config.json', 'added_tokens.json',
];

export interface OutputPlan {
  out: string;
  partial: string;
  /** Path of the .onnx inside the output folder, same relative layout as the input (e.g. onnx/model.onnx). */
  onnxRelative: string;
  /** Folder of the input model that holds config/tokenizer files. */
  modelRoot: string;
}

export function planOutput(out: string, onnxFile: string, force: boolean, resume: boolean): OutputPlan {
  const outAbs = resolve(out);
  const onnxDir = dirname(resolve(onnxFile));
  const modelRoot = basename(onnxDir) === 'onnx' ? dirname(onnxDir) : onnxDir;
  if (outAbs === modelRoot || outAbs === onnxDir) throw new UserError(`--out ${out} is the input model's folder: choose a new folder (the input is never modified)`);
  if (existsSync(outAbs) && !force && !resume) throw new UserError(`output folder ${out} already exists: choose another --out or pass --force to replace it`);
  const partial = `${outAbs}.partial`;
  if (existsSync(partial) && !force && !resume) throw new UserError(`${partial} holds an interrupted run: add --resume to continue it, or --force to start over`);
  if (resume && !existsSync(partial) && existsSync(outAbs) && !force) throw new UserError(`nothing to resume: ${out} is already complete (no ${basename(partial)}); pass --force to prune again`);
  if (existsSync(outAbs) && !statSync(outAbs).isDirectory() && !force) throw new UserError(`--out ${out} is an existing file: choose a folder name for the output`);
  // Nothing is created here: the run validates everything first, then makes `<out>.partial` (createPartial).
  // A real write probe in the nearest existing folder: W_OK says yes for root on read-only mounts and /proc.
  const existing = nearestExisting(dirname(outAbs));
  if (!statSync(existing).isDirectory()) throw new UserError(`cannot create --out ${out}: ${existing} is a file, not a folder; choose another --out`);
  try {
    rmdirSync(mkdtempSync(join(existing, '.sparsellm-write-test-')));
  } catch {
    throw new UserError(`cannot write to ${existing}: choose an --out folder you can write to`);
  }
  return { out: outAbs, partial, onnxRelative: relative(modelRoot, resolve(onnxFile)), modelRoot };
}

function nearestExisting(path: string): string {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

/** Creates the parents of the output (one level at a time: Node's recursive mkdir spins forever under /proc) and `<out>.partial`. */
export function createPartial(plan: OutputPlan): void {
  const missing: string[] = [];
  for (let p = plan.partial; !existsSync(p); p = dirname(p)) missing.unshift(p);
  try {
    for (const p of missing) mkdirSync(p);
  } catch (e) {
    throw new UserError(`cannot create ${plan.partial} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): choose an --out folder you can write to`);
  }
}

export function copyCompanionFiles(plan: OutputPlan): string[] {
  const copied: string[] = [];
  for (const f of COMPANION_FILES) {
    const src = join(plan.modelRoot, f);
    if (existsSync(src) && statSync(src).isFile()) {
      copyFileSync(src, join(plan.partial, f));
      chmodSync(join(plan.partial, f), 0o644); // the copy is the user's file, even when the input was read-only
      copied.push(f);
    }
  }
  return copied;
}

/** Moves the finished `<out>.partial` into place (replacing an old output when --force), dropping checkpoints. */
export function commitOutput(plan: OutputPlan, keep: (name: string) => boolean = (n) => n !== '.checkpoint'): void {
  for (const name of readdirSync(plan.partial)) if (!keep(name)) rmSync(join(plan.partial, name), { recursive: true, force: true });
  if (existsSync(plan.out)) rmSync(plan.out, { recursive: true, force: true });
  renameSync(plan.partial, plan.out);
}
