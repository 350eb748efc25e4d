/**
 * The audit log: named, past-tense events (docs/events.md lists them). A failed write is logged,
 * never fatal to the request that caused it. Recording (per-session data) is kept apart: see
 * src/gateway/recording/.
 */
import type { Logger } from '../log.ts';
import type { AuditEvent, Store } from '../store/store.ts';

export type AuditInput = Partial<Omit<AuditEvent, 'type' | 'at' | 'data'>> & { data?: Record<string, unknown> };

export class Audit {
  readonly #store: Store;
  readonly #log: Logger;
  constructor(store: Store, log: Logger) {
    this.#store = store;
    this.#log = log;
  }
  emit(type: string, e: AuditInput = {}): void {
    const event: AuditEvent = {
      at: Date.now(), type, actor: e.actor ?? null, connection: e.connection ?? null,
      leaseId: e.leaseId ?? null, sessionId: e.sessionId ?? null, data: e.data ?? {},
    };
    this.#log.info({ audit: type, ...event.data, actor: event.actor, connection: event.connection, lease: event.leaseId, session: event.sessionId }, type);
    this.#store.appendAudit(event).catch((err) => this.#log.error({ err, audit: type }, 'audit write failed'));
  }
}
