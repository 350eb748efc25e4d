/**
 * Session recordings: append-only, tamper-evident. Entries are sealed in batches: the hash of a
 * batch is sha256(previous hash ‖ seq ‖ at ‖ event JSON ‖ seq ‖ at ‖ event JSON ‖ ...) over its
 * entries in order, stored on its last entry, so editing, dropping or reordering any entry
 * breaks that hash and every later one (`verifyChain`, `hoopctl sessions verify`). A cut at the
 * very end would leave an intact (shorter) chain, so a session that ends normally closes its
 * recording with a `recording.closed` entry that counts the entries: a recording of an ended
 * session without it lost its end (cut off, or the gateway crashed before the session ended).
 * A batch of one entry hashes exactly as the per-entry chain of recordings written before
 * batching, which therefore still verify.
 *
 * Cost (the recorder runs on the data path's event loop): one JSON.stringify per event, and per
 * batch one SHA-256 over its bytes and one SQLite row (sqlite-store.ts). Engines keep events few:
 * the PostgreSQL engine writes one `query.completed` per statement (text, timing, rows) rather
 * than separate start/result/end events.
 *
 * Crash window: a batch is sealed and written every FLUSH_MS (or every FLUSH_ENTRIES entries)
 * and at session end, so a gateway crash loses at most the last FLUSH_MS of each session's
 * events, never what was written before (SQLite WAL, synchronous=NORMAL: committed transactions
 * survive a process crash; an OS crash may also lose the last WAL frames not yet on disk).
 */
import { hash } from 'node:crypto';
import type { RecordEvent } from '../engines/engine.ts';
import type { RecordingEntry, Store } from '../store/store.ts';
import type { Logger } from '../log.ts';

export const GENESIS = '0'.repeat(64);
/** the type of a recording's last entry when its session ended normally */
export const CLOSED = 'recording.closed';
/** how long an event may wait in memory before it is written */
export const FLUSH_MS = 200;
const FLUSH_ENTRIES = 1024;

/** the text a batch's hash covers after the previous hash: `\n seq \n at \n event` per entry */
function sealed(e: { seq: number; at: number; event: string }): string {
  return `\n${e.seq}\n${e.at}\n${e.event}`;
}

/** The chain hash of one entry after `prev` (a batch of one; kept for callers of the old API). */
export function chainHash(prev: string, seq: number, at: number, event: string): string {
  return hash('sha256', prev + sealed({ seq, at, event }), 'hex');
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
  readonly #onTimer = () => { this.#timer = undefined; void this.flush(); };

  constructor(sessionId: string, store: Store, log: Logger) {
    this.#sessionId = sessionId;
    this.#store = store;
    this.#log = log;
  }

  /**
   * Queues an event. It is serialized a moment later (setImmediate), after the engine has written
   * what it was doing to the sockets: JSON.stringify is off the statement's round trip. Engines
   * hand over events they no longer change.
   */
  record(event: RecordEvent): void {
    this.#raw.push([{ sessionId: this.#sessionId, seq: ++this.#seq, at: Date.now(), event: '', hash: '' }, event]);
    if (this.#raw.length === 1) setImmediate(this.#serialize);
  }

  /** events queued by record(): each entry (its JSON still to come) with its event */
  #raw: Array<[RecordingEntry, RecordEvent]> = [];
  readonly #serialize = (): void => {
    const raw = this.#raw;
    if (!raw.length) return;
    this.#raw = [];
    for (const [entry, event] of raw) {
      try {
        entry.event = JSON.stringify(event);
      } catch (err) {
        // keep the seq (a gap would read as a removed entry): record that the event was lost
        this.#log.error({ err, type: event.type }, 'recording event not serializable');
        entry.event = JSON.stringify({ type: 'recording.error', lost: String(event.type), error: (err as Error).message });
      }
      this.#pending.push(entry);
    }
    if (this.#pending.length >= FLUSH_ENTRIES) void this.flush();
    else if (!this.#timer) {
      this.#timer = setTimeout(this.#onTimer, FLUSH_MS);
      this.#timer.unref();
    }
  };

  /** Ends the recording: a last entry that counts them all, sealed and written with the rest. */
  close(reason: string | null): Promise<void> {
    this.record({ type: CLOSED, entries: this.#seq + 1, reason });
    return this.flush();
  }

  /** Seals what is pending and writes it; resolves when everything recorded so far is stored. */
  flush(): Promise<void> {
    this.#serialize();
    if (this.#timer) { clearTimeout(this.#timer); this.#timer = undefined; }
    const batch = this.#pending;
    if (!batch.length) return this.#flushing;
    this.#pending = [];
    let text = this.#prev;
    for (const e of batch) text += sealed(e);
    this.#prev = batch[batch.length - 1].hash = hash('sha256', text, 'hex');
    this.#flushing = this.#flushing
      .then(() => this.#store.appendRecording(batch))
      .catch((err) => this.#log.error({ err, session: this.#sessionId, entries: batch.length }, 'recording write failed'));
    return this.#flushing;
  }
}

/**
 * Verifies a recording (entries in seq order, as `readRecording` returns them): every seq from 1
 * on is present once, and each hash covers the previous one and every entry since. Entries
 * after the last hash (none in a recording the recorder wrote) count as altered. With
 * `ended` (the session is over), a recording must end with its `recording.closed` entry
 * counting every entry, or its end was cut off.
 */
export function verifyChain(entries: RecordingEntry[], opts: { ended?: boolean } = {}): { ok: true; entries: number } | { ok: false; seq: number; problem: string } {
  let prev = GENESIS;
  let text = GENESIS;
  let expect = 1;
  let firstOpen = 1;
  for (const e of entries) {
    if (e.seq !== expect) return { ok: false, seq: expect, problem: `entry ${expect} is missing` };
    // a raw newline could move text between fields; the recorder never writes one
    if (e.event.includes('\n')) return { ok: false, seq: e.seq, problem: `entry ${e.seq} was altered` };
    text += sealed(e);
    expect++;
    if (e.hash === '') continue;
    if (hash('sha256', text, 'hex') !== e.hash) return { ok: false, seq: firstOpen, problem: `an entry in ${firstOpen}..${e.seq} was altered` };
    prev = e.hash;
    text = prev;
    firstOpen = expect;
  }
  if (text !== prev) return { ok: false, seq: firstOpen, problem: `entries from ${firstOpen} on are not sealed by a hash` };
  if (opts.ended && entries.length > 0) {
    const last = entries[entries.length - 1];
    let closed: { type?: unknown; entries?: unknown } | undefined;
    try { closed = JSON.parse(last.event); } catch { /* not JSON: not the closing entry */ }
    if (closed?.type !== CLOSED || closed.entries !== entries.length) {
      return { ok: false, seq: last.seq + 1, problem: `the recording ends early: nothing after entry ${last.seq} survives, and the session's closing entry is missing (entries were removed, or the gateway stopped before the session ended)` };
    }
  }
  return { ok: true, entries: entries.length };
}
