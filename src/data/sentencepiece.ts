/**
 * SentencePiece BPE tokenizer read straight from a `tokenizer.model` protobuf (LLaMA / llama2.c models that
 * ship no tokenizer.json, e.g. stories260K). It reproduces what the reference's slow `LlamaTokenizer`
 * (legacy) produces: `sp.encode(text)` with one BOS in front (ALGORITHMS.md §0.1).
 *
 * Encoding (SentencePiece bpe_model): normalise (identity / NFKC, optional extra-whitespace removal),
 * add the dummy prefix, escape spaces as ▁, split into characters, then repeatedly merge the adjacent pair
 * whose concatenation is a vocabulary piece with the highest score (ties: leftmost first). Symbols left
 * that are not pieces become their UTF-8 bytes `<0xXX>` (byte fallback) or unk.
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

export enum PieceType { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 }

export interface SentencePieceModel {
  pieces: { piece: string; score: number; type: PieceType }[];
  /** TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char. */
  modelType: number;
  byteFallback: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  normalizerName: string;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
  treatWhitespaceAsSuffix: boolean;
}

/** Parses ModelProto: field 1 pieces, 2 trainer_spec, 3 normalizer_spec. Throws on malformed input. */
export function parseSentencePieceModel(bytes: Uint8Array): SentencePieceModel {
  const m: SentencePieceModel = {
    pieces: [], modelType: 1, byteFallback: false, unkId: 0, bosId: 1, eosId: 2,
    normalizerName: '', addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true,
    treatWhitespaceAsSuffix: false,
  };
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === WireType.LengthDelimited) m.pieces.push(parsePiece(r.bytes()));
    else if (field === 2 && wt === WireType.LengthDelimited) parseTrainerSpec(r.bytes(), m);
    else if (field === 3 && wt === WireType.LengthDelimited) parseNormalizerSpec(r.bytes(), m);
    else r.skip(wt, field);
  }
  if (m.pieces.length === 0) throw new Error('no pieces in SentencePiece model');
  return m;
}

function parsePiece(bytes: Uint8Array): SentencePieceModel['pieces'][number] {
  const r = new BinaryReader(bytes);
  const p = { piece: '', score: 0, type: PieceType.NORMAL };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1) p.piece = r.string();
    else if (field === 2) p.score = r.float();
    else if (field === 3) p.type = r.int32();
    else r.skip(wt, field);
  }
  return p;
}

function parseTrainerSpec(bytes: Uint8Array, m: SentencePieceModel): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 3) m.modelType = r.int32();
    else if (field === 24) m.treatWhitespaceAsSuffix = r.bool();
    else if (field === 35) m.byteFallback = r.bool();
    else if (field === 40) m.unkId = r.int32();
    else if (field === 41) m.bosId = r.int32();
    else if (field === 42) m.eosId = r.int32();
    else r.skip(wt, field);
  }
}

function parseNormalizerSpec(bytes: Uint8Array, m: SentencePieceModel): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1) m.normalizerName = r.string();
    else if (field === 3) m.addDummyPrefix = r.bool();
    else if (field === 4) m.removeExtraWhitespaces = r.bool();
    else if (field === 5) m.escapeWhitespaces = r.bool();
    else r.skip(wt, field);
  }
}

interface Candidate { left: number; right: number; score: number; len: number }

/** Max-heap on score, ties broken by the smaller left index (SentencePiece's agenda order). */
class Agenda {
  private readonly h: Candidate[] = [];
  get size(): number { return this.h.length; }
  private before(a: Candidate, b: Candidate): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }
  push(c: Candidate): void {
    const h = this.h;
    h.push(c);
    for (let i = h.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!this.before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  pop(): Candidate {
    const h = this.h;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < h.length && this.before(h[l]!, h[best]!)) best = l;
        if (r < h.length && this.before(h[r]!, h[best]!)) best = r;
        if (best === i) break;
        [h[i], h[best]] = [h[best]!, h[i]!];
        i = best;
      }
    }
    return top;
  }
}

export class SentencePieceBPE {
  /** Pieces a merge may produce (NORMAL and USER_DEFINED), with their scores. */
  private readonly mergeable = new Map<string, { id: number; score: number }>();
  /** Every piece → id (for the final lookup), and `<0xXX>` byte pieces. */
  private readonly ids = new Map<string, number>();
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly userDefined: string[];

  constructor(readonly model: SentencePieceModel) {
    if (model.modelType !== 2) {
      throw new Error(`SentencePiece model type ${model.modelType} is not BPE (only BPE models are supported)`);
    }
    model.pieces.forEach((p, id) => {
      if (!this.ids.has(p.piece)) this.ids.set(p.piece, id);
      if (p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED) this.mergeable.set(p.piece, { id, score: p.score });
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece);
      if (p.type === PieceType.BYTE && byte) this.byteIds[parseInt(byte[1]!, 16)] = id;
    });
    this.userDefined = model.pieces.filter((p) => p.type === PieceType.USER_DEFINED).map((p) => p.piece)
      .sort((a, b) => b.length - a.length);
  }

  get vocabSize(): number { return this.model.pieces.length; }

  /** SentencePiece normaliser for the identity/NFKC rules: whitespace cleanup, dummy prefix, ▁ escaping. */
  normalize(text: string): string {
    const name = this.model.normalizerName;
    let s = name.includes('nfkc') ? text.normalize('NFKC') : text;
    if (this.model.removeExtraWhitespaces) s = s.replace(/^ +| +$/g, '').replace(/ {2,}/g, ' ');
    if (s.length === 0) return '';
    if (this.model.addDummyPrefix) s = this.model.treatWhitespaceAsSuffix ? `${s} ` : ` ${s}`;
    return this.model.escapeWhitespaces ? s.replaceAll(' ', '\u2581') : s;
  }

  /** Token ids of `text`, without BOS/EOS. */
  encode(text: string): number[] {
    const s = this.normalize(text);
    if (s.length === 0) return [];
    // Initial symbols: user-defined pieces (longest match) or single code points; [start, end) in s.
    const start: number[] = [], end: number[] = [];
    for (let i = 0; i < s.length;) {
      let len = 0;
      for (const u of this.userDefined) if (s.startsWith(u, i)) { len = u.length; break; }
      if (len === 0) len = (s.codePointAt(i)! > 0xffff) ? 2 : 1;
      start.push(i);
      end.push(i + len);
      i += len;
    }
    const n = start.length;
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const agenda = new Agenda();
    const tryPair = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const hit = this.mergeable.get(s.slice(start[left]!, end[right]!));
      if (hit) agenda.push({ left, right, score: hit.score, len: end[right]! - start[left]! });
    };
    for (let i = 0; i + 1 < n; i++) tryPair(i, i + 1);
    while (agenda.size > 0) {
      const c = agenda.pop();
      // Stale entry: one side was merged away or changed since the pair was queued.
      if (start[c.left]! < 0 || next[c.left] !== c.right || end[c.right]! - start[c.left]! !== c.len) continue;
      end[c.left] = end[c.right]!;
      const after = next[c.right]!;
      next[c.left] = after;
      if (after >= 0) prev[after] = c.left;
      start[c.right] = end[c.right] = -1; // dead
      tryPair(prev[c.left]!, c.left);
      tryPair(c.left, after);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0 && i < n; i = next[i]!) {
      const piece = s.slice(start[i]!, end[i]!);
      const id = this.ids.get(piece);
      if (id !== undefined && this.model.pieces[id]!.type !== PieceType.UNUSED) out.push(id);
      else if (this.model.byteFallback) {
        for (const b of Buffer.from(piece, 'utf8')) {
          const bid = this.byteIds[b]!;
          out.push(bid >= 0 ? bid : this.model.unkId);
        }
      } else out.push(this.model.unkId);
    }
    return out;
  }

  /** Text of ids: pieces joined, ▁ → space, byte pieces reassembled; control tokens dropped. */
  decode(ids: ArrayLike<number>): string {
    const bytes: number[] = [];
    for (let k = 0; k < ids.length; k++) {
      const p = this.model.pieces[ids[k]!];
      if (!p || p.type === PieceType.CONTROL) continue;
      const byte = p.type === PieceType.BYTE ? /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece) : null;
      if (byte) bytes.push(parseInt(byte[1]!, 16));
      else bytes.push(...Buffer.from(p.type === PieceType.UNKNOWN ? ' \u2047 ' : p.piece, 'utf8'));
    }
    let text = Buffer.from(bytes).toString('utf8').replaceAll('\u2581', ' ');
    if (this.model.addDummyPrefix && text.startsWith(' ')) text = text.slice(1);
    return text;
  }
}
