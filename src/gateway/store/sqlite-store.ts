/**
 * The embedded store on node:sqlite (WAL mode, versioned migrations). One process owns the file;
 * run several gateway replicas against a PostgreSQL store instead.
 */
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { ReplicaBeat, RevokedToken } from './store.ts';
import type { AuditEvent, DecideResult, Lease, Review, ReviewDecision, ReviewFilter, LeaseFilter, LeaseStatus, PurgeRule, RecordingEntry, RecordingPurge, SessionFilter, SessionRow, Store } from './store.ts';
import { LEASE_COLS, REVIEW_COLS, applyDecision, reviewFromRow, reviewValues, purgeable, decodeBatch, encodeBatches, leaseFromRow, sessionFromRow, type Row } from './codec.ts';

/** Migrations run in order, each once; `schema_version` records the last applied. Never edit a shipped one. */
const MIGRATIONS: string[] = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE leases (
     id TEXT PRIMARY KEY, connection TEXT NOT NULL, user TEXT NOT NULL, groups TEXT NOT NULL,
     status TEXT NOT NULL, reason TEXT, created_at INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
     expires_at INTEGER NOT NULL, ended_at INTEGER, ended_by TEXT, end_reason TEXT);
   CREATE INDEX leases_user ON leases(user, connection, status);
   CREATE TABLE sessions (
     id TEXT PRIMARY KEY, lease_id TEXT NOT NULL, user TEXT NOT NULL, connection TEXT NOT NULL, type TEXT NOT NULL,
     started_at INTEGER NOT NULL, ended_at INTEGER, bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0,
     statements INTEGER NOT NULL DEFAULT 0, blocked INTEGER NOT NULL DEFAULT 0, masked INTEGER NOT NULL DEFAULT 0, close_reason TEXT);
   CREATE INDEX sessions_started ON sessions(started_at);
   CREATE TABLE audit (
     id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, type TEXT NOT NULL, actor TEXT, connection TEXT,
     lease_id TEXT, session_id TEXT, data TEXT NOT NULL);
   CREATE INDEX audit_at ON audit(at);
   CREATE TABLE recordings (
     session_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, event TEXT NOT NULL, hash TEXT NOT NULL,
     PRIMARY KEY (session_id, seq));
   -- recordings are append-only: the database itself refuses edits
   CREATE TRIGGER recordings_no_update BEFORE UPDATE ON recordings BEGIN SELECT RAISE(ABORT, 'recordings are append-only'); END;
   CREATE TRIGGER recordings_no_delete BEFORE DELETE ON recordings BEGIN SELECT RAISE(ABORT, 'recordings are append-only'); END;`,
  // One row per sealed batch instead of one per entry: a row costs SQLite ~3 µs of b-tree and
  // index work, paid per statement on the data path's event loop. `entries` holds one line per
  // entry, "seq TAB at TAB event-JSON" (JSON.stringify never writes a raw newline or tab).
  `CREATE TABLE recording_batches (
     session_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, hash TEXT NOT NULL, entries TEXT NOT NULL,
     PRIMARY KEY (session_id, first_seq));
   CREATE TRIGGER recording_batches_no_update BEFORE UPDATE ON recording_batches BEGIN SELECT RAISE(ABORT, 'recordings are append-only'); END;
   CREATE TRIGGER recording_batches_no_delete BEFORE DELETE ON recording_batches BEGIN SELECT RAISE(ABORT, 'recordings are append-only'); END;`,
  // Retention (recording.retention): a session's recording may be deleted only once the session
  // is noted in recording_purges, itself append-only; a noted session takes no more appends.
  `CREATE TABLE recording_purges (session_id TEXT PRIMARY KEY, at INTEGER NOT NULL, reason TEXT NOT NULL);
   CREATE TRIGGER recording_purges_no_update BEFORE UPDATE ON recording_purges BEGIN SELECT RAISE(ABORT, 'recording purges are append-only'); END;
   CREATE TRIGGER recording_purges_no_delete BEFORE DELETE ON recording_purges BEGIN SELECT RAISE(ABORT, 'recording purges are append-only'); END;
   DROP TRIGGER recordings_no_delete;
   CREATE TRIGGER recordings_no_delete BEFORE DELETE ON recordings
     WHEN NOT EXISTS (SELECT 1 FROM recording_purges p WHERE p.session_id = OLD.session_id)
     BEGIN SELECT RAISE(ABORT, 'recordings are append-only'); END;
   DROP TRIGGER recording_batches_no_delete;
   CREATE TRIGGER recording_batches_no_delete BEFORE DELETE ON recording_batches
     WHEN NOT EXISTS (SELECT 1 FROM recording_purges p WHERE p.session_id = OLD.session_id)
     BEGIN SELECT RAISE(ABORT, 'recordings are append-only'); END;
   CREATE TRIGGER recording_batches_not_purged BEFORE INSERT ON recording_batches
     WHEN EXISTS (SELECT 1 FROM recording_purges p WHERE p.session_id = NEW.session_id)
     BEGIN SELECT RAISE(ABORT, 'the recording of this session was purged by retention'); END;
   CREATE INDEX sessions_connection_ended ON sessions(connection, ended_at);`,
  // Reviews (JIT lease approval, held statements). `decisions` is a JSON array of
  // {reviewer, decision, reason, at}: decided in one transaction (see decideReview).
  `CREATE TABLE reviews (
     id TEXT PRIMARY KEY, kind TEXT NOT NULL, connection TEXT NOT NULL, requester TEXT NOT NULL, lease_id TEXT, session_id TEXT,
     rule TEXT, statement TEXT, statement_hash TEXT, reason TEXT, groups TEXT NOT NULL, min_approvals INTEGER NOT NULL,
     status TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, decided_at INTEGER, decided_by TEXT,
     decision_reason TEXT, detached INTEGER NOT NULL DEFAULT 0, consumed_at INTEGER, decisions TEXT NOT NULL DEFAULT '[]');
   CREATE INDEX reviews_status ON reviews(status, created_at);
   CREATE INDEX reviews_lease ON reviews(lease_id);`,
  // Hardening (issue 10): access tokens revoked by `hoopctl logout` (sha256 of the token, kept
  // until it would have expired); gateway processes and their heartbeats, and which one runs each
  // session, so that a restart closes what a crash left open (session/recovery.ts).
  `CREATE TABLE revoked_tokens (key TEXT PRIMARY KEY, exp INTEGER NOT NULL, at INTEGER NOT NULL);
   CREATE INDEX revoked_tokens_at ON revoked_tokens(at);
   CREATE TABLE replicas (id TEXT PRIMARY KEY, started_at INTEGER NOT NULL, heartbeat_at INTEGER NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL);
   ALTER TABLE sessions ADD COLUMN replica TEXT;
   CREATE INDEX sessions_open ON sessions(ended_at) WHERE ended_at IS NULL;`,
];

export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  readonly #db: DatabaseSync;
  readonly #stmts = new Map<string, StatementSync>();

  constructor(file: string) {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    this.#db = new DatabaseSync(file);
    this.#db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;');
    this.#migrate();
  }

  #migrate(): void {
    this.#db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.#db.prepare('SELECT version FROM schema_version').get() as Row | undefined;
    let version = row ? Number(row.version) : 0;
    if (!row) this.#db.exec('INSERT INTO schema_version VALUES (0)');
    if (version > MIGRATIONS.length) throw new Error(`store schema version ${version} is newer than this hoopctl (${MIGRATIONS.length}); upgrade hoopctl`);
    for (; version < MIGRATIONS.length; version++) {
      this.#tx(() => {
        this.#db.exec(MIGRATIONS[version]);
        this.#db.prepare('UPDATE schema_version SET version = ?').run(version + 1);
      });
    }
  }

  #q(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (!s) this.#stmts.set(sql, (s = this.#db.prepare(sql)));
    return s;
  }

  async createLease(l: Lease): Promise<void> {
    this.#q(`INSERT INTO leases (id, connection, user, groups, status, reason, created_at, duration_ms, expires_at, ended_at, ended_by, end_reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(l.id, l.connection, l.user, JSON.stringify(l.groups), l.status, l.reason, l.createdAt, l.durationMs, l.expiresAt, l.endedAt, l.endedBy, l.endReason);
  }
  async getLease(id: string): Promise<Lease | undefined> {
    const r = this.#q('SELECT * FROM leases WHERE id = ?').get(id) as Row | undefined;
    return r && leaseFromRow(r);
  }
  async listLeases(f: LeaseFilter = {}): Promise<Lease[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (f.user) { where.push('user = ?'); args.push(f.user); }
    if (f.activeOnly) { where.push("status IN ('active','pending')"); }
    const rows = this.#q(`SELECT * FROM leases ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC LIMIT 1000`).all(...args) as Row[];
    return rows.map(leaseFromRow);
  }
  async findActiveLease(user: string, connection: string, now: number): Promise<Lease | undefined> {
    const r = this.#q(`SELECT * FROM leases WHERE user = ? AND connection = ? AND status = 'active' AND expires_at > ? ORDER BY expires_at DESC LIMIT 1`)
      .get(user, connection, now) as Row | undefined;
    return r && leaseFromRow(r);
  }
  async updateLease(id: string, patch: Parameters<Store['updateLease']>[1], opts: { ifStatus?: LeaseStatus } = {}): Promise<boolean> {
    const keys = Object.keys(patch).filter((k) => (patch as Record<string, unknown>)[k] !== undefined);
    if (!keys.length) return false;
    const args = keys.map((k) => (patch as Record<string, string | number | null>)[k]);
    const sql = `UPDATE leases SET ${keys.map((k) => `${LEASE_COLS[k]} = ?`).join(', ')} WHERE id = ?${opts.ifStatus ? ' AND status = ?' : ''}`;
    return Number(this.#q(sql).run(...args, id, ...(opts.ifStatus ? [opts.ifStatus] : [])).changes) > 0;
  }

  async createReview(r: Review): Promise<void> {
    this.#q(`INSERT INTO reviews (${REVIEW_COLS.join(', ')}) VALUES (${REVIEW_COLS.map(() => '?').join(', ')})`).run(...reviewValues(r));
  }
  async getReview(id: string): Promise<Review | undefined> {
    const r = this.#q('SELECT * FROM reviews WHERE id = ?').get(id) as Row | undefined;
    return r && reviewFromRow(r);
  }
  async listReviews(f: ReviewFilter = {}): Promise<Review[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (f.status) { where.push('status = ?'); args.push(f.status); }
    if (f.since !== undefined) { where.push('created_at >= ?'); args.push(f.since); }
    if (f.leaseId) { where.push('lease_id = ?'); args.push(f.leaseId); }
    if (f.sessionId) { where.push('session_id = ?'); args.push(f.sessionId); }
    const rows = this.#q(`SELECT * FROM reviews ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC LIMIT 1000`).all(...args) as Row[];
    return rows.map(reviewFromRow);
  }
  async decideReview(id: string, d: ReviewDecision): Promise<DecideResult> {
    // node:sqlite answers synchronously and this process owns the file: read, decide and write
    // run without yielding, inside one transaction
    let out: DecideResult = { result: 'not_found' };
    this.#tx(() => {
      const row = this.#q('SELECT * FROM reviews WHERE id = ?').get(id) as Row | undefined;
      if (!row) return;
      const r = reviewFromRow(row);
      const { result, next } = applyDecision(r, d);
      if (next) this.#saveDecision(next);
      out = { result, review: next ?? r } as DecideResult;
    });
    return out;
  }
  #saveDecision(r: Review): void {
    this.#q('UPDATE reviews SET status = ?, decided_at = ?, decided_by = ?, decision_reason = ?, decisions = ? WHERE id = ?')
      .run(r.status, r.decidedAt, r.decidedBy, r.decisionReason, JSON.stringify(r.decisions), r.id);
  }
  async finishReview(id: string, status: 'expired' | 'cancelled', at: number, reason: string | null): Promise<boolean> {
    return Number(this.#q(`UPDATE reviews SET status = ?, decided_at = ?, decision_reason = ? WHERE id = ? AND status = 'pending'`).run(status, at, reason, id).changes) > 0;
  }
  async consumeReview(id: string, at: number): Promise<boolean> {
    return Number(this.#q(`UPDATE reviews SET consumed_at = ? WHERE id = ? AND status = 'approved' AND consumed_at IS NULL`).run(at, id).changes) > 0;
  }

  async saveSessions(rows: SessionRow[]): Promise<void> {
    if (!rows.length) return;
    const upsert = this.#q(`INSERT INTO sessions (id, lease_id, user, connection, type, started_at, ended_at, bytes_in, bytes_out, statements, blocked, masked, close_reason, replica)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out,
               statements = excluded.statements, blocked = excluded.blocked, masked = excluded.masked, close_reason = excluded.close_reason`);
    this.#tx(() => {
      for (const s of rows) upsert.run(s.id, s.leaseId, s.user, s.connection, s.type, s.startedAt, s.endedAt, s.bytesIn, s.bytesOut, s.statements, s.blocked, s.masked, s.closeReason, s.replica ?? null);
    });
  }
  async getSession(id: string): Promise<SessionRow | undefined> {
    const r = this.#q('SELECT * FROM sessions WHERE id = ?').get(id) as Row | undefined;
    return r && sessionFromRow(r);
  }
  async listSessions(f: SessionFilter = {}): Promise<SessionRow[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (f.user) { where.push('user = ?'); args.push(f.user); }
    if (f.connection) { where.push('connection = ?'); args.push(f.connection); }
    if (f.leaseId) { where.push('lease_id = ?'); args.push(f.leaseId); }
    if (f.since !== undefined) { where.push('started_at >= ?'); args.push(f.since); }
    const rows = this.#q(`SELECT * FROM sessions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY started_at DESC LIMIT 1000`).all(...args) as Row[];
    return rows.map(sessionFromRow);
  }

  async appendAudit(events: AuditEvent[]): Promise<void> {
    if (!events.length) return;
    const ins = this.#q('INSERT INTO audit (at, type, actor, connection, lease_id, session_id, data) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.#tx(() => {
      for (const e of events) ins.run(e.at, e.type, e.actor, e.connection, e.leaseId, e.sessionId, JSON.stringify(e.data));
    });
  }

  /** one transaction: one WAL write for many rows instead of one per row */
  #tx(body: () => void): void {
    this.#db.exec('BEGIN');
    try {
      body();
      this.#db.exec('COMMIT');
    } catch (err) {
      this.#db.exec('ROLLBACK');
      throw err;
    }
  }
  async listAudit(f: { since?: number; limit?: number } = {}): Promise<AuditEvent[]> {
    const rows = this.#q('SELECT * FROM audit WHERE at >= ? ORDER BY id ASC LIMIT ?').all(f.since ?? 0, f.limit ?? 10_000) as Row[];
    return rows.map((r) => ({
      id: Number(r.id), at: Number(r.at), type: r.type as string, actor: (r.actor as string) ?? null, connection: (r.connection as string) ?? null,
      leaseId: (r.lease_id as string) ?? null, sessionId: (r.session_id as string) ?? null, data: JSON.parse(r.data as string),
    }));
  }

  async appendRecording(entries: RecordingEntry[]): Promise<void> {
    if (!entries.length) return;
    const ins = this.#q('INSERT INTO recording_batches (session_id, first_seq, last_seq, hash, entries) VALUES (?, ?, ?, ?, ?)');
    const rows = encodeBatches(entries);
    this.#tx(() => {
      for (const b of rows) ins.run(b.sessionId, b.firstSeq, b.lastSeq, b.hash, b.entries);
    });
  }
  async readRecording(sessionId: string): Promise<RecordingEntry[]> {
    // recordings written before batching, one row per entry
    const legacy = this.#q('SELECT * FROM recordings WHERE session_id = ? ORDER BY seq').all(sessionId) as Row[];
    const out: RecordingEntry[] = legacy.map((r) => ({ sessionId: r.session_id as string, seq: Number(r.seq), at: Number(r.at), event: r.event as string, hash: r.hash as string }));
    const batches = this.#q('SELECT hash, entries FROM recording_batches WHERE session_id = ? ORDER BY first_seq').all(sessionId) as Row[];
    for (const b of batches) decodeBatch(sessionId, b.hash as string, b.entries as string, out);
    if (legacy.length > 0 && batches.length > 0) out.sort((a, b) => a.seq - b.seq);
    return out;
  }

  async purgeRecordings(r: PurgeRule): Promise<number> {
    const args: Array<string | number> = [];
    let which = '';
    if (r.connection !== undefined) { which = 's.connection = ?'; args.push(r.connection); }
    else if (r.except?.length) { which = `s.connection NOT IN (${r.except.map(() => '?').join(', ')})`; args.push(...r.except); }
    const ids = (this.#db.prepare(`SELECT s.id FROM sessions s LEFT JOIN leases l ON l.id = s.lease_id
        WHERE ${which ? `${which} AND ` : ''}${purgeable('?', ['recording_batches', 'recordings'])}
        LIMIT ?`).all(...args, r.before, r.limit) as Row[]).map((x) => x.id as string);
    if (!ids.length) return 0;
    const note = this.#q('INSERT INTO recording_purges (session_id, at, reason) VALUES (?, ?, ?) ON CONFLICT DO NOTHING');
    const dropBatches = this.#q('DELETE FROM recording_batches WHERE session_id = ?');
    const dropLegacy = this.#q('DELETE FROM recordings WHERE session_id = ?');
    this.#tx(() => {
      for (const id of ids) {
        note.run(id, r.at, r.reason);
        dropBatches.run(id);
        dropLegacy.run(id);
      }
    });
    return ids.length;
  }
  async getRecordingPurge(sessionId: string): Promise<RecordingPurge | undefined> {
    const p = this.#q('SELECT * FROM recording_purges WHERE session_id = ?').get(sessionId) as Row | undefined;
    return p && { sessionId, at: Number(p.at), reason: p.reason as string };
  }

  async revokeToken(t: RevokedToken): Promise<void> {
    this.#q('DELETE FROM revoked_tokens WHERE exp < ?').run(t.at);
    this.#q('INSERT INTO revoked_tokens (key, exp, at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING').run(t.key, t.exp, t.at);
  }
  async listRevokedTokens(since: number, now: number): Promise<RevokedToken[]> {
    const rows = this.#q('SELECT key, exp, at FROM revoked_tokens WHERE at >= ? AND exp > ?').all(since, now) as Row[];
    return rows.map((r) => ({ key: r.key as string, exp: Number(r.exp), at: Number(r.at) }));
  }

  async heartbeat(r: ReplicaBeat, at: number): Promise<void> {
    this.#q(`INSERT INTO replicas (id, started_at, heartbeat_at, host, pid) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`).run(r.id, r.startedAt, at, r.host, r.pid);
  }
  async listOrphanSessions(self: string): Promise<SessionRow[]> {
    // one process owns a SQLite file: whatever another process left open, it left by stopping
    const rows = this.#q('SELECT * FROM sessions WHERE ended_at IS NULL AND (replica IS NULL OR replica <> ?) LIMIT 1000').all(self) as Row[];
    return rows.map(sessionFromRow);
  }
  async endOrphanSession(id: string, endedAt: number, reason: string): Promise<boolean> {
    return Number(this.#q('UPDATE sessions SET ended_at = ?, close_reason = ? WHERE id = ? AND ended_at IS NULL').run(endedAt, reason, id).changes) > 0;
  }

  async getMeta(key: string): Promise<string | undefined> {
    const r = this.#q('SELECT value FROM meta WHERE key = ?').get(key) as Row | undefined;
    return r?.value as string | undefined;
  }
  async setMeta(key: string, value: string): Promise<void> {
    this.#q('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }
  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    this.#q('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING').run(key, value);
    return (await this.getMeta(key))!;
  }

  async close(): Promise<void> {
    this.#stmts.clear();
    this.#db.close();
  }
}
