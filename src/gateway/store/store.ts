/**
 * The Store interface: everything the gateway persists. The embedded implementation is
 * node:sqlite (sqlite-store.ts); pg-store.ts implements it on PostgreSQL for several gateway
 * replicas (async on purpose, though SQLite answers synchronously). open-store.ts picks one by URL.
 */

export type LeaseStatus = 'pending' | 'active' | 'revoked' | 'expired' | 'rejected';

export interface Lease {
  id: string;
  connection: string;
  user: string;
  groups: string[];
  status: LeaseStatus;
  reason: string | null;
  createdAt: number;      // ms since epoch
  durationMs: number;
  expiresAt: number;      // for pending leases: when the review times out
  endedAt: number | null;
  endedBy: string | null;
  endReason: string | null;
}

export interface SessionRow {
  id: string;
  leaseId: string;
  user: string;
  connection: string;
  type: string;
  startedAt: number;
  endedAt: number | null;
  bytesIn: number;
  bytesOut: number;
  statements: number;
  blocked: number;
  masked: number;
  closeReason: string | null;
}

export interface AuditEvent {
  id?: number;
  at: number;
  type: string;           // noun.verb, past tense: lease.created, query.blocked, ...
  actor: string | null;
  connection: string | null;
  leaseId: string | null;
  sessionId: string | null;
  data: Record<string, unknown>;
}

export interface RecordingEntry {
  sessionId: string;
  seq: number;
  at: number;
  event: string;          // JSON of the RecordEvent (never holds a raw newline)
  /**
   * Hex sha256 chained over the previous hash and every entry since it, set on the last entry of
   * each batch the recorder sealed ('' on the others; every entry of recordings written before
   * batching carries its own). See recording/recorder.ts.
   */
  hash: string;
}

/** a session's recording deleted by the retention policy: when, and under which rule */
export interface RecordingPurge { sessionId: string; at: number; reason: string }

/**
 * Which recordings `purgeRecordings` deletes: those of sessions of `connection` (or of every
 * connection not in `except`) that were over before `before` — ended, or, a session whose end was
 * never written (a crash), once its lease had ended or expired.
 */
export interface PurgeRule { connection?: string; except?: string[]; before: number; at: number; reason: string; limit: number }

export interface LeaseFilter { user?: string; activeOnly?: boolean }
export interface SessionFilter { user?: string; connection?: string; since?: number; leaseId?: string }

export interface Store {
  readonly kind: string;
  createLease(lease: Lease): Promise<void>;
  getLease(id: string): Promise<Lease | undefined>;
  listLeases(filter?: LeaseFilter): Promise<Lease[]>;
  /** an active, unexpired lease of this user on this connection (newest first) */
  findActiveLease(user: string, connection: string, now: number): Promise<Lease | undefined>;
  /**
   * Changes a lease; with `ifStatus`, only while it still has that status (two replicas ending the
   * same lease at its expiry: one wins). Resolves whether a row changed.
   */
  updateLease(id: string, patch: Partial<Pick<Lease, 'status' | 'endedAt' | 'endedBy' | 'endReason' | 'expiresAt'>>, opts?: { ifStatus?: LeaseStatus }): Promise<boolean>;
  /**
   * Only on stores shared by several replicas: calls `onChange(leaseId)` soon after another process
   * created or changed that lease, and `onChange(undefined)` when changes may have been missed
   * (the notification channel was lost and is back): reload every lease then. Returns unwatch.
   */
  watchLeases?(onChange: (leaseId: string | undefined) => void): () => void;

  /** inserts or replaces each row (its newest state), all in one transaction */
  saveSessions(rows: SessionRow[]): Promise<void>;
  getSession(id: string): Promise<SessionRow | undefined>;
  listSessions(filter?: SessionFilter): Promise<SessionRow[]>;

  /** appends events in order, all or none (one transaction) */
  appendAudit(events: AuditEvent[]): Promise<void>;
  listAudit(filter?: { since?: number; limit?: number }): Promise<AuditEvent[]>;

  /** appends sealed batches (each run of one session's entries ends with a hashed entry) */
  appendRecording(entries: RecordingEntry[]): Promise<void>;
  /** every entry of a session's recording, in seq order */
  readRecording(sessionId: string): Promise<RecordingEntry[]>;
  /**
   * Retention: deletes the recordings the rule selects, at most `limit` sessions, in one
   * transaction. Each session is first noted in `recording_purges` (append-only itself): the
   * database lets only a noted session's recording rows be deleted, and refuses further appends to
   * it. Resolves the number of sessions purged.
   */
  purgeRecordings(rule: PurgeRule): Promise<number>;
  /** whether (when, why) a session's recording was purged */
  getRecordingPurge(sessionId: string): Promise<RecordingPurge | undefined>;

  /** a small key/value area for gateway secrets (tunnel-token key) and settings */
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /** stores `value` unless the key has one; resolves the value stored (replicas racing agree on one) */
  setMetaIfAbsent(key: string, value: string): Promise<string>;

  close(): Promise<void>;
}
