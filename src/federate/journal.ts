// The server's append-only journal (state/journal.jsonl): one JSON event per line, each appended and fsync'ed before
// the server answers the request that caused it. Replaying it after a kill rebuilds the federation: joined clients,
// rounds and their assignments, accepted uploads, rejected requests (those with the federation token), drops,
// aggregated blocks, committed rounds. A line torn by a kill
// mid-write can only be the last one; it is dropped (its request was never answered, so the client retries).
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs';

export type JournalEvent =
  | { e: 'join'; id: string; key: string; capacity: number; name?: string; nonce: string }
  | { e: 'round'; round: number; seed: number; assignments: Record<string, number[]> }
  | { e: 'upload'; round: number; block: number; client: string; file: string; sha256: string; nonce: string }
  | { e: 'drop'; round: number; client: string; reason: string }
  | { e: 'reject'; round: number; client?: string; block?: number; status: number; reason: string }
  | { e: 'aggregate'; round: number; block: number; file: string; uploads: number; stats?: Record<string, { zeros: number; unanimous: number; expanded: number; size: number }> }
  | { e: 'commit'; round: number; model: string }
  | { e: 'failed'; round: number; reason: string }
  | { e: 'done' };

export class Journal {
  constructor(readonly path: string) {}

  /** Every complete event, in order; a torn last line (no newline yet) is cut off the file. */
  read(): JournalEvent[] {
    if (!existsSync(this.path)) return [];
    const text = readFileSync(this.path, 'utf8');
    const complete = text.slice(0, text.lastIndexOf('\n') + 1);
    if (complete.length < text.length) truncateSync(this.path, Buffer.byteLength(complete));
    return complete.split('\n').filter((line) => line !== '').map((line, i) => {
      try {
        return JSON.parse(line) as JournalEvent;
      } catch (e) {
        throw new Error(`${this.path}: line ${i + 1} is not JSON (${(e as Error).message})`);
      }
    });
  }

  append(event: JournalEvent): void {
    const fd = openSync(this.path, 'a');
    try {
      writeSync(fd, `${JSON.stringify(event)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
