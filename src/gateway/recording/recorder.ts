/**
 * Session recordings: append-only, tamper-evident. Each entry's hash is
 * sha256(previous hash ‖ seq ‖ at ‖ event JSON), so editing, dropping or reordering any entry
 * breaks every later hash (`hoopctl sessions verify`). Entries are batched and flushed every
 * 50 ms (and at session end) so a crash loses at most that window, never the whole session.
 */
import { createHash } from 'node:crypto';
import type { RecordEvent } from '../engines/engine.ts';
import type { RecordingEntry, Store } from '../store/store.ts';
import type { Logger } from '../log.ts';

export const GENESIS = '0'.repeat(64);
const FLUSH_MS = 50;
const FLUSH_ENTRIES = 256;

export function chainHash(prev: string, seq: number, at: number, event: string): string {
  return createHash('sha256').update(prev).update('\n').update(String(seq)).update('\n').update(String(at)).update('\n').update(event).digest('hex');
}

export class Recorder {
  readonly #sessionId: string;
  readonly #store: Store;
  readonly #log: Logger;
  #seq = 0;
  #prev = GENESIS;
  #pending: RecordingEntry[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();

  constructor(sessionId: string, store: Store, log: Logger) {
    this.#sessionId = sessionId;
    this.#store = store;
    this.#log = log;
  }

  record(event: RecordEvent): void {
    const at = Date.now();
    let json: string;
    try {
      json = JSON.stringify(event);
    } catch (err) {
      this.#log.error({ err, type: event.type }, 'recording event not serializable');
      return;
    }
    const seq = ++this.#seq;
    this.#prev = chainHash(this.#prev, seq, at, json);
    this.#pending.push({ sessionId: this.#sessionId, seq, at, event: json, hash: this.#prev });
    if (this.#pending.length >= FLUSH_ENTRIES) void this.flush();
    else if (!this.#timer) {
      this.#timer = setTimeout(() => void this.flush(), FLUSH_MS);
      this.#timer.unref();
    }
  }

  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending;
    if (!batch.length) return this.#flushing;
    this.#pending = [];
    this.#flushing = this.#flushing
      .then(() => this.#store.appendRecording(batch))
      .catch((err) => this.#log.error({ err, session: this.#sessionId, entries: batch.length }, 'recording write failed'));
    return this.#flushing;
  }
}

/** Verifies a recording's chain; returns the first bad sequence number, or null when intact. */
export function verifyChain(entries: RecordingEntry[]): { ok: true; entries: number } | { ok: false; seq: number; problem: string } {
  let prev = GENESIS;
  let expect = 1;
  for (const e of entries) {
    if (e.seq !== expect) return { ok: false, seq: expect, problem: `entry ${expect} is missing` };
    if (chainHash(prev, e.seq, e.at, e.event) !== e.hash) return { ok: false, seq: e.seq, problem: `entry ${e.seq} was altered` };
    prev = e.hash;
    expect++;
  }
  return { ok: true, entries: entries.length };
}
