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

export type ReviewStatus = 'pending' | 'approved' | 'rejected' | 'expired' | 'cancelled';
/** `lease`: JIT approval of a lease; `statement`: one SQL statement held; `command`: one SSH command held */
export type ReviewKind = 'lease' | 'statement' | 'command';

export interface ReviewDecision { reviewer: string; decision: 'approve' | 'reject'; reason: string | null; at: number }

export interface Review {
  id: string;
  kind: ReviewKind;
  connection: string;
  requester: string;
  leaseId: string | null;
  sessionId: string | null;
  /** the guardrail rule (or pattern) that held a statement; null for a lease */
  rule: string | null;
  /** what reviewers see: the statement with sensitive literals masked; null for a lease */
  statement: string | null;
  /** sha256 of the exact statement that runs once approved (hex); null for a lease */
  statementHash: string | null;
  /** the requester's reason */
  reason: string | null;
  /** who may decide: members of these groups, never the requester */
  groups: string[];
  minApprovals: number;
  status: ReviewStatus;
  createdAt: number;
  /** no decision by then: expired */
  expiresAt: number;
  decidedAt: number | null;
  /** the rejecter, or the approver whose approval reached min_approvals */
  decidedBy: string | null;
  decisionReason: string | null;
  /** the request survives its client's disconnect (`hoop.detach_reviews`), to be used later */
  detached: boolean;
  /** when an approved detached statement was run (`hoop.review`): once only */
  consumedAt: number | null;
  decisions: ReviewDecision[];
}

/** what `decideReview` did, atomically */
export type DecideResult =
  | { result: 'recorded' | 'decided'; review: Review }
  | { result: 'duplicate' | 'not_pending' | 'expired'; review: Review }
  | { result: 'not_found' };

export interface ReviewFilter { status?: ReviewStatus; since?: number; leaseId?: string; sessionId?: string }

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
  /** the gateway process (replica id) that runs it; absent on rows written before replicas were tracked */
  replica?: string | null;
}

/** a gateway process, as its heartbeat in the store shows it (crash recovery, session/recovery.ts) */
export interface ReplicaBeat { id: string; startedAt: number; host: string; pid: number }

/** an access token refused from now on (`hoopctl logout`); `key` is sha256 of the token, `exp` when it would expire anyway */
export interface RevokedToken { key: string; exp: number; at: number }

/** one stored artifact of the dev IdP (oidc-provider adapter: grants, sessions, device codes, ...) */
export interface IdpEntry { key: string; model: string; payload: string; exp: number | null; grantId: string | null; uid: string | null; userCode: string | null }

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
  updateLease(id: string, patch: Partial<Pick<Lease, 'status' | 'endedAt' | 'endedBy' | 'endReason' | 'expiresAt' | 'reason'>>, opts?: { ifStatus?: LeaseStatus }): Promise<boolean>;
  /**
   * Only on stores shared by several replicas: calls `onChange(leaseId)` soon after another process
   * created or changed that lease, and `onChange(undefined)` when changes may have been missed
   * (the notification channel was lost and is back): reload every lease then. Returns unwatch.
   */
  watchLeases?(onChange: (leaseId: string | undefined) => void): () => void;

  createReview(review: Review): Promise<void>;
  getReview(id: string): Promise<Review | undefined>;
  /** newest first, at most 1000 */
  listReviews(filter?: ReviewFilter): Promise<Review[]>;
  /**
   * One reviewer's decision, in one transaction that locks the review: refused when the review is
   * no longer pending, past `expiresAt` (then marked expired), or already decided by this
   * reviewer; a rejection ends it, and the approval that reaches `minApprovals` approves it.
   * Two decisions at the same instant (two replicas) see each other: one consistent outcome.
   */
  decideReview(id: string, decision: ReviewDecision): Promise<DecideResult>;
  /** ends a pending review without a decision (`expired`, `cancelled`); resolves whether it was pending */
  finishReview(id: string, status: 'expired' | 'cancelled', at: number, reason: string | null): Promise<boolean>;
  /** marks an approved review used; resolves false when it was not approved or already used */
  consumeReview(id: string, at: number): Promise<boolean>;
  /** like watchLeases, for reviews created or changed by another replica */
  watchReviews?(onChange: (reviewId: string | undefined) => void): () => void;

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

  /** records a token as revoked until `exp` (and forgets revocations whose token expired) */
  revokeToken(t: RevokedToken): Promise<void>;
  /** revocations recorded at or after `since` whose token has not expired by `now` */
  listRevokedTokens(since: number, now: number): Promise<RevokedToken[]>;

  /** this replica is alive at `at` (inserted on first call) */
  heartbeat(r: ReplicaBeat, at: number): Promise<void>;
  /**
   * Sessions left open (no end written) by a gateway that is gone, never those of `self`.
   * SQLite (one process owns the file): every open session of another process. PostgreSQL: those
   * of a replica whose last heartbeat is before `deadBefore` (or that never beat), and rows
   * without a replica (written by an older gateway) once their lease is over at `now`.
   */
  listOrphanSessions(self: string, deadBefore: number, now: number): Promise<SessionRow[]>;
  /** ends an open session as interrupted; resolves false when it had ended meanwhile (another replica got there first) */
  endOrphanSession(id: string, endedAt: number, reason: string): Promise<boolean>;

  /**
   * The dev IdP's state, only on stores shared by replicas (PostgreSQL): with it, every replica
   * serves the same logins, grants and refresh tokens (idp/store.ts). Absent: a local file.
   */
  idp?: {
    get(key: string): Promise<IdpEntry | undefined>;
    findBy(model: string, field: 'uid' | 'userCode', value: string): Promise<IdpEntry | undefined>;
    put(e: IdpEntry): Promise<void>;
    delete(key: string): Promise<void>;
    deleteGrant(grantId: string, models: string[]): Promise<void>;
  };

  /** a small key/value area for gateway secrets (tunnel-token key) and settings */
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /** stores `value` unless the key has one; resolves the value stored (replicas racing agree on one) */
  setMetaIfAbsent(key: string, value: string): Promise<string>;

  close(): Promise<void>;
}
