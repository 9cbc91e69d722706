// Does a calibration text look like natural text? (issue 19) A wrong file (binary, UTF-16, one line repeated) still
// prunes, but with statistics of nothing useful; the run warns in one line and goes on. Three measures, each with
// its threshold far from what the natural texts we have show (measured on the shipped TinyStories sample and on
// ../shared/data: WikiText-2 train/test, PTB train/test, the C4 samples):
//   - undecodable bytes: U+FFFD (what invalid UTF-8 decodes to) — 0 in every natural text measured; warn above 0.1 %
//     of the characters (a few stray bytes do not matter, a Latin-1 or binary file does);
//   - control characters (C0/C1 except tab, LF, CR; DEL) — 0 in every natural text; warn above 1 % (UTF-16 has
//     a NUL every other character, random bytes about 14 %);
//   - distinct words (whitespace-separated) among the first 10,000 words, against Heaps' law V ≈ K·√n: natural
//     texts measured V/√n ≥ 6.0 at every length from 100 to 10,000 words (lowest: WikiText-2 test, first 100
//     words; TinyStories 7.7-11.5); a sentence repeated gives 0.2-0.6. Warn below 2 (a third of the natural
//     minimum), judged only from 100 words on.

export const UNDECODABLE_MAX = 0.001;
export const CONTROL_MAX = 0.01;
/** Lowest V/√n measured on natural text, and the warning threshold (a third of it). */
export const HEAPS_NATURAL = 6;
export const HEAPS_MIN = HEAPS_NATURAL / 3;
export const WORDS_SAMPLE = 10_000;
export const WORDS_MIN = 100;

export interface TextStatistics {
  characters: number;
  undecodable: number;
  control: number;
  /** Words in the sample (at most WORDS_SAMPLE) and how many distinct. */
  words: number;
  distinctWords: number;
}

export function textStatistics(text: string): TextStatistics {
  let undecodable = 0, control = 0;
  for (let k = 0; k < text.length; k++) {
    const c = text.charCodeAt(k);
    if (c === 0xfffd) undecodable++;
    else if ((c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) || (c >= 0x7f && c <= 0x9f)) control++;
  }
  const distinct = new Set<string>();
  let words = 0;
  for (const m of text.matchAll(/\S+/g)) {
    if (words === WORDS_SAMPLE) break;
    distinct.add(m[0]);
    words++;
  }
  return { characters: text.length, undecodable, control, words, distinctWords: distinct.size };
}

const pct = (x: number) => `${(100 * x).toFixed(x < 0.01 ? 2 : 0)}%`;

/** Why `text` does not look like natural text (one clause per failed measure), or undefined when it does. */
export function calibrationTextWarning(text: string): string | undefined {
  const s = textStatistics(text);
  if (s.characters === 0) return undefined; // too short: refused later with its own message
  const reasons: string[] = [];
  if (s.undecodable / s.characters > UNDECODABLE_MAX) reasons.push(`not valid UTF-8 (${pct(s.undecodable / s.characters)} of its characters undecodable)`);
  if (s.control / s.characters > CONTROL_MAX) reasons.push(`${pct(s.control / s.characters)} control characters (binary data or UTF-16?)`);
  if (s.words >= WORDS_MIN && s.distinctWords / Math.sqrt(s.words) < HEAPS_MIN) {
    reasons.push(`only ${s.distinctWords} distinct words in ${s.words} (natural texts measured have ${Math.ceil(HEAPS_NATURAL * Math.sqrt(s.words))} or more at that length)`);
  }
  return reasons.length ? `does not look like natural text: ${reasons.join('; ')}; pruning goes on, but the result may be poor` : undefined;
}
