/**
 * The audit log: named, past-tense events (docs/events.md lists them). A failed write is logged,
 * never fatal to the request that caused it. Recording (per-session data) is kept apart: see
 * src/gateway/recording/.
 *
 * Writes are batched off the request path: events wait in memory for at most FLUSH_MS (or until
 * FLUSH_EVENTS are queued) and are then written in order, so a new tunnelled connection does not
 * wait for SQLite. Crash window: a gateway crash loses at most the last FLUSH_MS of audit events;
 * `flush()` (called on shutdown) writes everything queued.
 *
 * Every event is also a log line; the per-connection ones (session.*) at debug level, since a
 * busy gateway opens hundreds of connections a second and they are in the store anyway.
 */
import type { Logger } from '../log.ts';
import type { AuditEvent, Store } from '../store/store.ts';

export type AuditInput = Partial<Omit<AuditEvent, 'type' | 'at' | 'data'>> & { data?: Record<string, unknown> };

/** how long an event may wait in memory before it is written */
export const FLUSH_MS = 50;
const FLUSH_EVENTS = 100;
const QUIET = new Set(['session.started', 'session.ended']);

export class Audit {
  readonly #store: Store;
  readonly #log: Logger;
  #queue: AuditEvent[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  readonly #onTimer = () => { this.#timer = undefined; void this.flush(); };

  constructor(store: Store, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  emit(type: string, e: AuditInput = {}): void {
    const event: AuditEvent = {
      at: Date.now(), type, actor: e.actor ?? null, connection: e.connection ?? null,
      leaseId: e.leaseId ?? null, sessionId: e.sessionId ?? null, data: e.data ?? {},
    };
    const level = QUIET.has(type) ? 'debug' : 'info';
    if (this.#log.isLevelEnabled(level))
      this.#log[level]({ audit: type, ...event.data, actor: event.actor, connection: event.connection, lease: event.leaseId, session: event.sessionId }, type);
    this.#queue.push(event);
    if (this.#queue.length >= FLUSH_EVENTS) void this.flush();
    else if (!this.#timer) {
      this.#timer = setTimeout(this.#onTimer, FLUSH_MS);
      this.#timer.unref();
    }
  }

  /** Writes every queued event; resolves when all events emitted so far are stored. */
  flush(): Promise<void> {
    if (this.#timer) { clearTimeout(this.#timer); this.#timer = undefined; }
    const batch = this.#queue;
    if (!batch.length) return this.#writing;
    this.#queue = [];
    this.#writing = this.#writing.then(() => this.#store.appendAudit(batch).catch((err) => {
      this.#log.error({ err, events: batch.length, types: [...new Set(batch.map((e) => e.type))] }, 'audit write failed');
    }));
    return this.#writing;
  }
}
