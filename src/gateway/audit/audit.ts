/**
 * The audit log: named, past-tense events (docs/events.md lists them). A failed write is logged,
 * never fatal to the request that caused it. Recording (per-session data) is kept apart: see
 * src/gateway/recording/.
 *
 * Writes are batched off the request path (store/write-batcher.ts): events wait in memory for at
 * most FLUSH_MS (or until FLUSH_EVENTS are queued) and are then written in order in one
 * transaction. Crash window: a gateway crash loses at most the last FLUSH_MS of audit events;
 * `flush()` (called on shutdown) writes everything queued.
 *
 * Every event is also a log line; the per-connection ones (session.*) at debug level, since a
 * busy gateway opens hundreds of connections a second and they are in the store anyway.
 */
import type { Logger } from '../log.ts';
import type { AuditEvent, Store } from '../store/store.ts';
import { WriteBatcher } from '../store/write-batcher.ts';

export type AuditInput = Partial<Omit<AuditEvent, 'type' | 'at' | 'data'>> & { data?: Record<string, unknown> };

/** how long an event may wait in memory before it is written */
export const FLUSH_MS = 50;
const FLUSH_EVENTS = 100;
const QUIET = new Set(['session.started', 'session.ended']);

export class Audit {
  readonly #log: Logger;
  readonly #batch: WriteBatcher<AuditEvent>;

  constructor(store: Store, log: Logger) {
    this.#log = log;
    this.#batch = new WriteBatcher((events) => store.appendAudit(events), (err, events) => {
      log.error({ err, events: events.length, types: [...new Set(events.map((e) => e.type))] }, 'audit write failed');
    }, { ms: FLUSH_MS, max: FLUSH_EVENTS });
  }

  emit(type: string, e: AuditInput = {}): void {
    const event: AuditEvent = {
      at: Date.now(), type, actor: e.actor ?? null, connection: e.connection ?? null,
      leaseId: e.leaseId ?? null, sessionId: e.sessionId ?? null, data: e.data ?? {},
    };
    const level = QUIET.has(type) ? 'debug' : 'info';
    if (this.#log.isLevelEnabled(level))
      this.#log[level]({ audit: type, ...event.data, actor: event.actor, connection: event.connection, lease: event.leaseId, session: event.sessionId }, type);
    this.#batch.add(event);
  }

  /** Writes every queued event; resolves when all events emitted so far are stored. */
  flush(): Promise<void> {
    return this.#batch.flush();
  }
}
