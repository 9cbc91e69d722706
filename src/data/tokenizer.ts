/**
 * Tokenizers for the models' own vocabularies, matching the reference's slow tokenizers (ALGORITHMS.md §0.1):
 * every `encode` returns the ids of the text with exactly one BOS in front (OPT: `</s>` = 2; LLaMA: `<s>` = 1).
 *
 * Sources, searched in the model folder and, for `.../onnx/model.onnx`, the folder above `onnx/`:
 *   (a) tokenizer.json (HF tokenizers format, run by @huggingface/tokenizers);
 *   (b) vocab.json + merges.txt (GPT-2 style byte-level BPE; turned into a tokenizer.json in memory);
 *   (c) tokenizer.model (SentencePiece BPE protobuf, see sentencepiece.ts).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '../errors.js';
import { parseSentencePieceModel, PieceType, SentencePieceBPE } from './sentencepiece.js';

export interface TextTokenizer {
  /** Ids of `text` with exactly one BOS at the start, like the reference slow tokenizers. */
  encode(text: string): number[];
  readonly bosId: number;
  /** One more than the largest id the tokenizer can produce. */
  readonly vocabSize: number;
  /** Which files it was built from (for messages). */
  readonly source: string;
  decode?(ids: ArrayLike<number>): string;
}

type Json = Record<string, unknown>;

/** The folders where a model's tokenizer files may sit. */
export function tokenizerSearchDirs(modelDirOrOnnxPath: string): string[] {
  const isFile = existsSync(modelDirOrOnnxPath) && statSync(modelDirOrOnnxPath).isFile();
  const dir = isFile ? dirname(modelDirOrOnnxPath) : modelDirOrOnnxPath;
  return basename(dir) === 'onnx' ? [dir, dirname(dir)] : [dir];
}

export function loadTokenizer(modelDirOrOnnxPath: string): TextTokenizer {
  const dirs = tokenizerSearchDirs(modelDirOrOnnxPath);
  for (const dir of dirs) {
    const config = readJsonIfExists(join(dir, 'tokenizer_config.json')) ?? {};
    const modelConfig = readJsonIfExists(join(dir, 'config.json')) ?? {};
    const tj = join(dir, 'tokenizer.json');
    if (existsSync(tj)) {
      const json = withSlowSpecialsOnly(readJson(tj), config);
      return new HfTokenizer(json, config, modelConfig, tj, ['<s>', '</s>', '<|endoftext|>']);
    }
    const vocab = join(dir, 'vocab.json'), merges = join(dir, 'merges.txt');
    if (existsSync(vocab) && existsSync(merges)) {
      const json = tokenizerJsonFromBpeFiles(readJson(vocab) as Record<string, number>, readText(merges), config);
      return new HfTokenizer(json, config, modelConfig, `${vocab} + merges.txt`, ['</s>', '<|endoftext|>']);
    }
    const sp = join(dir, 'tokenizer.model');
    if (existsSync(sp)) return loadSentencePiece(sp, config);
  }
  throw new UserError(
    `no tokenizer for ${modelDirOrOnnxPath}: put tokenizer.json (or vocab.json + merges.txt, or a SentencePiece tokenizer.model) in ${dirs.at(-1)}`,
  );
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

function readJson(path: string): Json {
  try {
    return JSON.parse(readText(path)) as Json;
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${path} is not valid JSON (${(e as Error).message}); replace it with the model's original file`);
  }
}

function readJsonIfExists(path: string): Json | undefined {
  return existsSync(path) ? readJson(path) : undefined;
}

/** The special tokens a slow tokenizer keeps whole (tokenizer_config.json's *_token entries), or undefined. */
function slowSpecialTokens(config: Json): Map<string, { lstrip: boolean; rstrip: boolean }> | undefined {
  const out = new Map<string, { lstrip: boolean; rstrip: boolean }>();
  const entries = ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']
    .map((k) => config[k]).concat(Array.isArray(config.additional_special_tokens) ? config.additional_special_tokens : []);
  for (const v of entries) {
    const name = tokenName(v);
    if (!name) continue;
    // A plain string is stripped on both sides by the slow tokenizer; an AddedToken object says what it wants.
    const obj = typeof v === 'object' ? (v as Json) : undefined;
    out.set(name, { lstrip: obj ? obj.lstrip === true : true, rstrip: obj ? obj.rstrip === true : true });
  }
  return out.size > 0 ? out : undefined;
}

/** Reference rule (§0.1, slow tokenizers): only the configured special tokens are split out of the text, so
 *  e.g. PTB's literal `<unk>` is plain text for OPT. Drops other added tokens that are also vocabulary entries. */
function withSlowSpecialsOnly(json: Json, config: Json): Json {
  const specials = slowSpecialTokens(config);
  const added = json.added_tokens;
  if (!specials || !Array.isArray(added)) return json;
  const vocab = ((json.model as Json | undefined)?.vocab ?? {}) as Record<string, number>;
  const keep = added
    .filter((t: Json) => specials.has(t.content as string) || !(typeof t.content === 'string' && t.content in vocab))
    .map((t: Json) => ({ ...t, ...specials.get(t.content as string) }));
  return { ...json, added_tokens: keep };
}

/** `bos_token` in tokenizer_config.json is a string or an AddedToken object `{content: ...}`. */
function tokenName(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

/** (a)/(b): HF tokenizers. The post-processor's specials are switched off and one BOS is prepended by us,
 *  so the result has exactly one BOS whether or not the tokenizer.json template adds it. */
class HfTokenizer implements TextTokenizer {
  private readonly tok: Tokenizer;
  readonly bosId: number;
  readonly vocabSize: number;

  constructor(json: Json, config: Json, modelConfig: Json, readonly source: string, fallbackBos: string[]) {
    try {
      this.tok = new Tokenizer(json, config);
    } catch (e) {
      throw new UserError(`${source} could not be loaded as a tokenizer (${(e as Error).message}); replace it with the model's original file`);
    }
    const vocab = this.tok.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    // BOS: tokenizer_config.json's bos_token, else what the post-processor puts first, else config.json's
    // bos_token_id, else a conventional name (OPT's vocab.json order: `</s>` is its BOS).
    const named = tokenName(config.bos_token);
    const fromName = named !== undefined ? this.tok.token_to_id(named) : undefined;
    const withSpecials = this.tok.encode('a').ids, plain = this.tok.encode('a', { add_special_tokens: false }).ids;
    const fromTemplate = withSpecials.length > plain.length && withSpecials[0] !== plain[0] ? withSpecials[0] : undefined;
    const fromConfig = typeof modelConfig.bos_token_id === 'number' ? modelConfig.bos_token_id : undefined;
    const fallback = fallbackBos.map((c) => this.tok.token_to_id(c)).find((id) => id !== undefined);
    const bos = fromName ?? fromTemplate ?? fromConfig ?? fallback;
    this.bosId = bos;
  }

  encode(text: string): number[] {
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    const out = new Array<number>(ids.length + 1);
    out[0] = this.bosId;
    for (let i = 0; i < ids.length; i++) out[i + 1] = ids[i]!;
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    return this.tok.decode(Array.from(ids), { skip_special_tokens: true });
  }
}

/** (b): a byte-level BPE tokenizer.json equivalent to GPT2Tokenizer(vocab.json, merges.txt); the special
 *  tokens of tokenizer_config.json (or OPT's `<s> <pad> </s> <unk>`) are kept whole, as the slow tokenizer does. */
export function tokenizerJsonFromBpeFiles(vocab: Record<string, number>, mergesTxt: string, config: Json = {}): Json {
  const merges = mergesTxt.split('\n').filter((l) => l.length > 0 && !l.startsWith('#version'));
  const specials = slowSpecialTokens(config) ??
    new Map(['<s>', '<pad>', '</s>', '<unk>', '<|endoftext|>'].map((t) => [t, { lstrip: false, rstrip: false }] as const));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [...specials].filter(([t]) => t in vocab).map(([t, strip]) => ({
      id: vocab[t], content: t, single_word: false, ...strip, normalized: true, special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
}

/** (c): SentencePiece BPE from tokenizer.model, BOS from the model's trainer spec. As the slow LlamaTokenizer
 *  does, configured special tokens (`<s>`, `</s>`, `<unk>`) in the text are kept whole and the text between
 *  them is encoded piece by piece (each piece with its own dummy prefix). */
function loadSentencePiece(path: string, config: Json): TextTokenizer {
  let sp: SentencePieceBPE;
  try {
    sp = new SentencePieceBPE(parseSentencePieceModel(readFileSync(path)));
  } catch (e) {
    throw new UserError(`${path} is not a usable SentencePiece BPE model (${(e as Error).message}); replace it with the model's original tokenizer.model`);
  }
  const bosId = sp.model.bosId >= 0 ? sp.model.bosId : 1;
  const specials = slowSpecialTokens(config) ?? new Map(
    sp.model.pieces.filter((p) => p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN)
      .map((p) => [p.piece, { lstrip: false, rstrip: false }] as const),
  );
  const pieceId = new Map(sp.model.pieces.map((p, id) => [p.piece, id] as const));
  const names = [...specials.keys()].filter((n) => pieceId.has(n)).sort((a, b) => b.length - a.length);
  const splitter = names.length > 0 ? new RegExp(`(${names.map(escapeRegExp).join('|')})`) : undefined;
  const encode = (text: string): number[] => {
    const out = [bosId];
    const parts = splitter ? text.split(splitter) : [text];
    for (let i = 0; i < parts.length; i++) {
      let part = parts[i]!;
      if (i % 2 === 1) { out.push(pieceId.get(part)!); continue; }
      if (i > 0 && specials.get(parts[i - 1]!)!.rstrip) part = part.trimStart();
      if (i + 1 < parts.length && specials.get(parts[i + 1]!)!.lstrip) part = part.trimEnd();
      for (const id of sp.encode(part)) out.push(id);
    }
    return out;
  };
  return { bosId, vocabSize: sp.vocabSize, source: path, encode, decode: (ids) => sp.decode(ids) };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
