/**
 * The PostgreSQL store (`store: postgres://...`), for several gateway replicas sharing leases,
 * sessions, audit and recordings. Same tables and semantics as sqlite-store.ts: timestamps are
 * BIGINT ms since epoch, JSON is kept as text, recordings are append-only by trigger.
 *
 * - Migrations are versioned in `schema_version` and run in one transaction holding an advisory
 *   lock, so replicas starting together apply each migration once (PostgreSQL DDL is transactional).
 * - Each write is one statement (batches go in as arrays through `unnest`), so it is one
 *   transaction and one round trip whatever the batch size.
 * - Every lease insert/update also `pg_notify`s `hoop_leases` in the same statement (delivered at
 *   commit); `watchLeases` LISTENs on a dedicated connection and reconnects when it drops.
 * - The password may be in the URL or, as for psql, in PGPASSWORD (node-postgres reads the libpq
 *   environment variables). Messages show the URL with the password replaced.
 */
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import type { IdpEntry, ReplicaBeat, RevokedToken } from './store.ts';
import type { AuditEvent, DecideResult, Lease, Review, ReviewDecision, ReviewFilter, LeaseFilter, LeaseStatus, PurgeRule, RecordingEntry, RecordingPurge, SessionFilter, SessionRow, Store } from './store.ts';
import { LEASE_COLS, REVIEW_COLS, applyDecision, reviewFromRow, reviewValues, decodeBatch, encodeBatches, leaseFromRow, purgeable, sessionFromRow, type Row } from './codec.ts';
import type { Logger } from '../log.ts';

/** The channel lease changes are announced on; the payload is "<origin>:<lease id>". */
export const LEASE_CHANNEL = 'hoop_leases';
/** The channel review changes are announced on; the payload is "<origin>:<review id>". */
export const REVIEW_CHANNEL = 'hoop_reviews';
/** pg_advisory_xact_lock key for migrations ("hoop" in ASCII). */
const MIGRATION_LOCK = 0x686f6f70;
const RECONNECT_MS = 1000;

/** Migrations run in order, each once; `schema_version` records the last applied. Never edit a shipped one. */
const MIGRATIONS: string[] = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE leases (
     id TEXT PRIMARY KEY, connection TEXT NOT NULL, "user" TEXT NOT NULL, groups TEXT NOT NULL,
     status TEXT NOT NULL, reason TEXT, created_at BIGINT NOT NULL, duration_ms BIGINT NOT NULL,
     expires_at BIGINT NOT NULL, ended_at BIGINT, ended_by TEXT, end_reason TEXT);
   CREATE INDEX leases_user ON leases ("user", connection, status);
   CREATE INDEX leases_open ON leases (status) WHERE status IN ('active', 'pending');
   CREATE TABLE sessions (
     id TEXT PRIMARY KEY, lease_id TEXT NOT NULL, "user" TEXT NOT NULL, connection TEXT NOT NULL, type TEXT NOT NULL,
     started_at BIGINT NOT NULL, ended_at BIGINT, bytes_in BIGINT NOT NULL DEFAULT 0, bytes_out BIGINT NOT NULL DEFAULT 0,
     statements BIGINT NOT NULL DEFAULT 0, blocked BIGINT NOT NULL DEFAULT 0, masked BIGINT NOT NULL DEFAULT 0, close_reason TEXT);
   CREATE INDEX sessions_started ON sessions (started_at);
   CREATE INDEX sessions_lease ON sessions (lease_id);
   CREATE TABLE audit (
     id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, type TEXT NOT NULL, actor TEXT, connection TEXT,
     lease_id TEXT, session_id TEXT, data TEXT NOT NULL);
   CREATE INDEX audit_at ON audit (at);
   -- one row per sealed batch, "seq TAB at TAB event-JSON" per line (codec.ts); no per-entry table:
   -- there are no recordings from before batching to read here
   CREATE TABLE recording_batches (
     session_id TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, hash TEXT NOT NULL, entries TEXT NOT NULL,
     PRIMARY KEY (session_id, first_seq));
   -- recordings are append-only: the database itself refuses edits
   CREATE FUNCTION hoop_recordings_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION 'recordings are append-only'; END $$;
   CREATE TRIGGER recording_batches_no_change BEFORE UPDATE OR DELETE ON recording_batches
     FOR EACH ROW EXECUTE FUNCTION hoop_recordings_append_only();
   CREATE TRIGGER recording_batches_no_truncate BEFORE TRUNCATE ON recording_batches
     FOR EACH STATEMENT EXECUTE FUNCTION hoop_recordings_append_only();`,
  // Retention (recording.retention): a session's recording may be deleted only once the session
  // is noted in recording_purges, itself append-only; a noted session takes no more appends.
  `CREATE TABLE recording_purges (session_id TEXT PRIMARY KEY, at BIGINT NOT NULL, reason TEXT NOT NULL);
   CREATE FUNCTION hoop_recording_purges_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION 'recording purges are append-only'; END $$;
   CREATE TRIGGER recording_purges_no_change BEFORE UPDATE OR DELETE ON recording_purges
     FOR EACH ROW EXECUTE FUNCTION hoop_recording_purges_append_only();
   CREATE TRIGGER recording_purges_no_truncate BEFORE TRUNCATE ON recording_purges
     FOR EACH STATEMENT EXECUTE FUNCTION hoop_recording_purges_append_only();
   CREATE OR REPLACE FUNCTION hoop_recordings_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF TG_OP = 'DELETE' THEN
         IF EXISTS (SELECT 1 FROM recording_purges p WHERE p.session_id = OLD.session_id) THEN RETURN OLD; END IF;
       END IF;
       RAISE EXCEPTION 'recordings are append-only';
     END $$;
   CREATE FUNCTION hoop_recordings_not_purged() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF EXISTS (SELECT 1 FROM recording_purges p WHERE p.session_id = NEW.session_id) THEN
         RAISE EXCEPTION 'the recording of session % was purged by retention', NEW.session_id;
       END IF;
       RETURN NEW;
     END $$;
   CREATE TRIGGER recording_batches_not_purged BEFORE INSERT ON recording_batches
     FOR EACH ROW EXECUTE FUNCTION hoop_recordings_not_purged();
   CREATE INDEX sessions_connection_ended ON sessions (connection, ended_at);`,
  // Reviews (JIT lease approval, held statements); see sqlite-store.ts. decideReview locks the row.
  `CREATE TABLE reviews (
     id TEXT PRIMARY KEY, kind TEXT NOT NULL, connection TEXT NOT NULL, requester TEXT NOT NULL, lease_id TEXT, session_id TEXT,
     rule TEXT, statement TEXT, statement_hash TEXT, reason TEXT, groups TEXT NOT NULL, min_approvals INTEGER NOT NULL,
     status TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, decided_at BIGINT, decided_by TEXT,
     decision_reason TEXT, detached INTEGER NOT NULL DEFAULT 0, consumed_at BIGINT, decisions TEXT NOT NULL DEFAULT '[]');
   CREATE INDEX reviews_status ON reviews (status, created_at);
   CREATE INDEX reviews_lease ON reviews (lease_id);`,
  // Hardening (issue 10): revoked access tokens (logout), replicas' heartbeats and the replica of
  // each session (crash recovery), and the dev IdP's state shared by every replica.
  `CREATE TABLE revoked_tokens (key TEXT PRIMARY KEY, exp BIGINT NOT NULL, at BIGINT NOT NULL);
   CREATE INDEX revoked_tokens_at ON revoked_tokens (at);
   CREATE TABLE replicas (id TEXT PRIMARY KEY, started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL);
   ALTER TABLE sessions ADD COLUMN replica TEXT;
   CREATE INDEX sessions_open ON sessions (replica) WHERE ended_at IS NULL;
   CREATE TABLE idp_entries (key TEXT PRIMARY KEY, model TEXT NOT NULL, payload TEXT NOT NULL, exp BIGINT,
     grant_id TEXT, uid TEXT, user_code TEXT);
   CREATE INDEX idp_entries_grant ON idp_entries (grant_id) WHERE grant_id IS NOT NULL;
   CREATE INDEX idp_entries_uid ON idp_entries (model, uid) WHERE uid IS NOT NULL;
   CREATE INDEX idp_entries_user_code ON idp_entries (model, user_code) WHERE user_code IS NOT NULL;`,
];

/** the schema version this code migrates to */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** The URL with its password replaced, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

function describe(err: unknown): string {
  const e = err as { message?: string; code?: string; errors?: Array<{ message?: string }> };
  if (e?.message?.includes('client password must be a string')) return 'the server asks for a password: put it in the URL or in PGPASSWORD';
  // a refused connect to a name with several addresses is an AggregateError with an empty message
  return e?.message || e?.errors?.[0]?.message || e?.code || String(err);
}

function idpFromRow(r: Row): IdpEntry {
  return {
    key: r.key as string, model: r.model as string, payload: r.payload as string, exp: r.exp == null ? null : Number(r.exp),
    grantId: (r.grant_id as string) ?? null, uid: (r.uid as string) ?? null, userCode: (r.user_code as string) ?? null,
  };
}

export class PgStore implements Store {
  readonly kind = 'postgres';
  readonly #pool: pg.Pool;
  readonly #config: pg.ClientConfig;
  readonly #log?: Logger;
  /** tags our own lease notifications so the LeaseService of this process skips them */
  readonly #origin = randomUUID();
  readonly #unwatch = new Set<() => void>();

  private constructor(url: string, log?: Logger) {
    // keepAlive: a connection cut without a FIN (a failover, a NAT timeout) is noticed
    this.#config = { connectionString: url, connectionTimeoutMillis: 10_000, keepAlive: true, application_name: 'hoopctl-gateway' };
    this.#log = log;
    this.#pool = new pg.Pool({ ...this.#config, max: 10, idleTimeoutMillis: 30_000 });
    // an idle pooled connection that dies emits here; unhandled, it would crash the gateway
    this.#pool.on('error', (err) => this.#log?.warn({ err: describe(err) }, 'PostgreSQL store connection lost; it is replaced on next use'));
  }

  /** Connects and migrates; rejects with a message naming the (password-less) URL. */
  static async open(url: string, opts: { log?: Logger } = {}): Promise<PgStore> {
    const store = new PgStore(url, opts.log);
    try {
      await store.#migrate();
      return store;
    } catch (err) {
      await store.#pool.end().catch(() => {});
      throw new Error(`cannot open the PostgreSQL store at ${redactUrl(url)}: ${describe(err)}`, { cause: err });
    }
  }

  async #migrate(): Promise<void> {
    // a client of its own, not the pool's: when a pooled connect fails during authentication,
    // node-postgres leaves the socket open, and the failed start would hang instead of exiting
    const c = new pg.Client(this.#config);
    c.on('error', () => {}); // surfaces as the rejected query below
    await c.connect().catch(async (err) => { await c.end().catch(() => {}); throw err; });
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await c.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
      const { rows } = await c.query('SELECT version FROM schema_version');
      let version = rows.length ? Number(rows[0].version) : 0;
      if (!rows.length) await c.query('INSERT INTO schema_version VALUES (0)');
      if (version > MIGRATIONS.length) throw new Error(`store schema version ${version} is newer than this hoopctl (${MIGRATIONS.length}); upgrade hoopctl`);
      for (; version < MIGRATIONS.length; version++) await c.query(MIGRATIONS[version]);
      await c.query('UPDATE schema_version SET version = $1', [version]);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      await c.end().catch(() => {});
    }
  }

  async #rows(sql: string, args: unknown[] = []): Promise<Row[]> {
    return (await this.#pool.query(sql, args)).rows;
  }

  async createLease(l: Lease): Promise<void> {
    await this.#pool.query(
      `WITH i AS (INSERT INTO leases (id, connection, "user", groups, status, reason, created_at, duration_ms, expires_at, ended_at, ended_by, end_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id)
       SELECT pg_notify('${LEASE_CHANNEL}', $13::text || ':' || id) FROM i`,
      [l.id, l.connection, l.user, JSON.stringify(l.groups), l.status, l.reason, l.createdAt, l.durationMs, l.expiresAt, l.endedAt, l.endedBy, l.endReason, this.#origin]);
  }
  async getLease(id: string): Promise<Lease | undefined> {
    const [r] = await this.#rows('SELECT * FROM leases WHERE id = $1', [id]);
    return r && leaseFromRow(r);
  }
  async listLeases(f: LeaseFilter = {}): Promise<Lease[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.user) { args.push(f.user); where.push(`"user" = $${args.length}`); }
    if (f.activeOnly) where.push("status IN ('active', 'pending')");
    const rows = await this.#rows(`SELECT * FROM leases ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC LIMIT 1000`, args);
    return rows.map(leaseFromRow);
  }
  async findActiveLease(user: string, connection: string, now: number): Promise<Lease | undefined> {
    const [r] = await this.#rows(`SELECT * FROM leases WHERE "user" = $1 AND connection = $2 AND status = 'active' AND expires_at > $3 ORDER BY expires_at DESC LIMIT 1`, [user, connection, now]);
    return r && leaseFromRow(r);
  }
  async updateLease(id: string, patch: Parameters<Store['updateLease']>[1], opts: { ifStatus?: LeaseStatus } = {}): Promise<boolean> {
    const keys = Object.keys(patch).filter((k) => (patch as Record<string, unknown>)[k] !== undefined);
    if (!keys.length) return false;
    const args: unknown[] = keys.map((k) => (patch as Record<string, unknown>)[k]);
    const set = keys.map((k, i) => `${LEASE_COLS[k]} = $${i + 1}`).join(', ');
    args.push(id, this.#origin);
    let where = `id = $${args.length - 1}`;
    if (opts.ifStatus) { args.push(opts.ifStatus); where += ` AND status = $${args.length}`; }
    const r = await this.#pool.query(
      `WITH u AS (UPDATE leases SET ${set} WHERE ${where} RETURNING id) SELECT pg_notify('${LEASE_CHANNEL}', $${keys.length + 2}::text || ':' || id) FROM u`, args);
    return (r.rowCount ?? 0) > 0;
  }

  async createReview(r: Review): Promise<void> {
    const args: unknown[] = reviewValues(r);
    args.push(this.#origin);
    await this.#pool.query(
      `WITH i AS (INSERT INTO reviews (${REVIEW_COLS.map((c) => `"${c}"`).join(', ')}) VALUES (${REVIEW_COLS.map((_, i) => `$${i + 1}`).join(', ')}) RETURNING id)
       SELECT pg_notify('${REVIEW_CHANNEL}', $${args.length}::text || ':' || id) FROM i`, args);
  }
  async getReview(id: string): Promise<Review | undefined> {
    const [r] = await this.#rows('SELECT * FROM reviews WHERE id = $1', [id]);
    return r && reviewFromRow(r);
  }
  async listReviews(f: ReviewFilter = {}): Promise<Review[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (sql: string, v: unknown) => { args.push(v); where.push(`${sql} $${args.length}`); };
    if (f.status) add('status =', f.status);
    if (f.since !== undefined) add('created_at >=', f.since);
    if (f.leaseId) add('lease_id =', f.leaseId);
    if (f.sessionId) add('session_id =', f.sessionId);
    const rows = await this.#rows(`SELECT * FROM reviews ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC LIMIT 1000`, args);
    return rows.map(reviewFromRow);
  }
  async decideReview(id: string, d: ReviewDecision): Promise<DecideResult> {
    const c = await this.#pool.connect();
    try {
      await c.query('BEGIN');
      // the row lock orders decisions made at the same instant on several replicas: the second
      // one reads the first one's outcome
      const { rows: [row] } = await c.query('SELECT * FROM reviews WHERE id = $1 FOR UPDATE', [id]);
      if (!row) { await c.query('ROLLBACK'); return { result: 'not_found' }; }
      const r = reviewFromRow(row);
      const { result, next } = applyDecision(r, d);
      if (next) {
        await c.query(`WITH u AS (UPDATE reviews SET status = $1, decided_at = $2, decided_by = $3, decision_reason = $4, decisions = $5 WHERE id = $6 RETURNING id)
                       SELECT pg_notify('${REVIEW_CHANNEL}', $7::text || ':' || id) FROM u`,
        [next.status, next.decidedAt, next.decidedBy, next.decisionReason, JSON.stringify(next.decisions), id, this.#origin]);
      }
      await c.query('COMMIT');
      return { result, review: next ?? r } as DecideResult;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }
  async finishReview(id: string, status: 'expired' | 'cancelled', at: number, reason: string | null): Promise<boolean> {
    const r = await this.#pool.query(
      `WITH u AS (UPDATE reviews SET status = $1, decided_at = $2, decision_reason = $3 WHERE id = $4 AND status = 'pending' RETURNING id)
       SELECT pg_notify('${REVIEW_CHANNEL}', $5::text || ':' || id) FROM u`, [status, at, reason, id, this.#origin]);
    return (r.rowCount ?? 0) > 0;
  }
  async consumeReview(id: string, at: number): Promise<boolean> {
    const r = await this.#pool.query(`UPDATE reviews SET consumed_at = $1 WHERE id = $2 AND status = 'approved' AND consumed_at IS NULL`, [at, id]);
    return (r.rowCount ?? 0) > 0;
  }

  async saveSessions(rows: SessionRow[]): Promise<void> {
    if (!rows.length) return;
    // one statement cannot upsert a row twice: keep each id's newest state
    const byId = new Map<string, SessionRow>();
    for (const s of rows) byId.set(s.id, s);
    const list = [...byId.values()];
    const col = <K extends keyof SessionRow>(k: K) => list.map((s) => s[k]);
    await this.#pool.query(
      `INSERT INTO sessions (id, lease_id, "user", connection, type, started_at, ended_at, bytes_in, bytes_out, statements, blocked, masked, close_reason, replica)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                            $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::text[])
       ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out,
         statements = excluded.statements, blocked = excluded.blocked, masked = excluded.masked, close_reason = excluded.close_reason`,
      [col('id'), col('leaseId'), col('user'), col('connection'), col('type'), col('startedAt'), col('endedAt'), col('bytesIn'), col('bytesOut'),
        col('statements'), col('blocked'), col('masked'), col('closeReason'), list.map((s) => s.replica ?? null)]);
  }
  async getSession(id: string): Promise<SessionRow | undefined> {
    const [r] = await this.#rows('SELECT * FROM sessions WHERE id = $1', [id]);
    return r && sessionFromRow(r);
  }
  async listSessions(f: SessionFilter = {}): Promise<SessionRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (sql: string, v: unknown) => { args.push(v); where.push(`${sql} $${args.length}`); };
    if (f.user) add('"user" =', f.user);
    if (f.connection) add('connection =', f.connection);
    if (f.leaseId) add('lease_id =', f.leaseId);
    if (f.since !== undefined) add('started_at >=', f.since);
    const rows = await this.#rows(`SELECT * FROM sessions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY started_at DESC LIMIT 1000`, args);
    return rows.map(sessionFromRow);
  }

  async appendAudit(events: AuditEvent[]): Promise<void> {
    if (!events.length) return;
    // ORDER BY ord: ids (the audit order) are drawn in the order of the batch
    await this.#pool.query(
      `INSERT INTO audit (at, type, actor, connection, lease_id, session_id, data)
       SELECT at, type, actor, connection, lease_id, session_id, data
       FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
         WITH ORDINALITY AS t (at, type, actor, connection, lease_id, session_id, data, ord)
       ORDER BY ord`,
      [events.map((e) => e.at), events.map((e) => e.type), events.map((e) => e.actor), events.map((e) => e.connection),
        events.map((e) => e.leaseId), events.map((e) => e.sessionId), events.map((e) => JSON.stringify(e.data))]);
  }
  async listAudit(f: { since?: number; limit?: number } = {}): Promise<AuditEvent[]> {
    const rows = await this.#rows('SELECT * FROM audit WHERE at >= $1 ORDER BY id ASC LIMIT $2', [f.since ?? 0, f.limit ?? 10_000]);
    return rows.map((r) => ({
      id: Number(r.id), at: Number(r.at), type: r.type as string, actor: (r.actor as string) ?? null, connection: (r.connection as string) ?? null,
      leaseId: (r.lease_id as string) ?? null, sessionId: (r.session_id as string) ?? null, data: JSON.parse(r.data as string),
    }));
  }

  async appendRecording(entries: RecordingEntry[]): Promise<void> {
    if (!entries.length) return;
    const rows = encodeBatches(entries);
    await this.#pool.query(
      `INSERT INTO recording_batches (session_id, first_seq, last_seq, hash, entries)
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])`,
      [rows.map((b) => b.sessionId), rows.map((b) => b.firstSeq), rows.map((b) => b.lastSeq), rows.map((b) => b.hash), rows.map((b) => b.entries)]);
  }
  async readRecording(sessionId: string): Promise<RecordingEntry[]> {
    const out: RecordingEntry[] = [];
    for (const b of await this.#rows('SELECT hash, entries FROM recording_batches WHERE session_id = $1 ORDER BY first_seq', [sessionId]))
      decodeBatch(sessionId, b.hash as string, b.entries as string, out);
    return out;
  }

  async purgeRecordings(r: PurgeRule): Promise<number> {
    const args: unknown[] = [r.before, r.limit, r.at, r.reason];
    let which = '';
    if (r.connection !== undefined) { args.push(r.connection); which = `s.connection = $${args.length} AND`; }
    else if (r.except?.length) { args.push(r.except); which = `s.connection <> ALL($${args.length}::text[]) AND`; }
    const c = await this.#pool.connect();
    try {
      await c.query('BEGIN');
      // the notes first, in their own statement: the DELETE's trigger must see them
      const { rows } = await c.query(`INSERT INTO recording_purges (session_id, at, reason)
          SELECT s.id, $3, $4 FROM sessions s LEFT JOIN leases l ON l.id = s.lease_id
          WHERE ${which} ${purgeable('$1', ['recording_batches'])}
          LIMIT $2
        ON CONFLICT DO NOTHING RETURNING session_id`, args);
      const ids = rows.map((x) => x.session_id as string);
      if (ids.length) await c.query('DELETE FROM recording_batches WHERE session_id = ANY($1::text[])', [ids]);
      await c.query('COMMIT');
      return ids.length;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }
  async getRecordingPurge(sessionId: string): Promise<RecordingPurge | undefined> {
    const [p] = await this.#rows('SELECT * FROM recording_purges WHERE session_id = $1', [sessionId]);
    return p && { sessionId, at: Number(p.at), reason: p.reason as string };
  }

  async revokeToken(t: RevokedToken): Promise<void> {
    await this.#pool.query(`WITH gone AS (DELETE FROM revoked_tokens WHERE exp < $3)
      INSERT INTO revoked_tokens (key, exp, at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING`, [t.key, t.exp, t.at]);
  }
  async listRevokedTokens(since: number, now: number): Promise<RevokedToken[]> {
    const rows = await this.#rows('SELECT key, exp, at FROM revoked_tokens WHERE at >= $1 AND exp > $2', [since, now]);
    return rows.map((r) => ({ key: r.key as string, exp: Number(r.exp), at: Number(r.at) }));
  }

  async heartbeat(r: ReplicaBeat, at: number): Promise<void> {
    await this.#pool.query(`INSERT INTO replicas (id, started_at, heartbeat_at, host, pid) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`, [r.id, r.startedAt, at, r.host, r.pid]);
  }
  async listOrphanSessions(self: string, deadBefore: number, now: number): Promise<SessionRow[]> {
    const rows = await this.#rows(`SELECT s.* FROM sessions s
        LEFT JOIN replicas r ON r.id = s.replica
        LEFT JOIN leases l ON l.id = s.lease_id
      WHERE s.ended_at IS NULL AND s.replica IS DISTINCT FROM $1 AND (
        (s.replica IS NOT NULL AND (r.id IS NULL OR r.heartbeat_at < $2))
        OR (s.replica IS NULL AND (l.id IS NULL OR l.status <> 'active' OR l.expires_at <= $3)))
      LIMIT 1000`, [self, deadBefore, now]);
    return rows.map(sessionFromRow);
  }
  async endOrphanSession(id: string, endedAt: number, reason: string): Promise<boolean> {
    const r = await this.#pool.query('UPDATE sessions SET ended_at = $1, close_reason = $2 WHERE id = $3 AND ended_at IS NULL', [endedAt, reason, id]);
    return (r.rowCount ?? 0) > 0;
  }

  readonly idp = {
    get: async (key: string): Promise<IdpEntry | undefined> => {
      const [r] = await this.#rows('SELECT * FROM idp_entries WHERE key = $1 AND (exp IS NULL OR exp > $2)', [key, Date.now()]);
      return r && idpFromRow(r);
    },
    findBy: async (model: string, field: 'uid' | 'userCode', value: string): Promise<IdpEntry | undefined> => {
      const col = field === 'uid' ? 'uid' : 'user_code';
      const [r] = await this.#rows(`SELECT * FROM idp_entries WHERE model = $1 AND ${col} = $2 AND (exp IS NULL OR exp > $3) LIMIT 1`, [model, value, Date.now()]);
      return r && idpFromRow(r);
    },
    put: async (e: IdpEntry): Promise<void> => {
      // expired entries go as new ones come: the table holds what is alive, plus a moment's worth
      await this.#pool.query(`WITH gone AS (DELETE FROM idp_entries WHERE exp < $8)
        INSERT INTO idp_entries (key, model, payload, exp, grant_id, uid, user_code) VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (key) DO UPDATE SET model = excluded.model, payload = excluded.payload, exp = excluded.exp,
          grant_id = excluded.grant_id, uid = excluded.uid, user_code = excluded.user_code`,
      [e.key, e.model, e.payload, e.exp, e.grantId, e.uid, e.userCode, Date.now()]);
    },
    delete: async (key: string): Promise<void> => {
      await this.#pool.query('DELETE FROM idp_entries WHERE key = $1', [key]);
    },
    deleteGrant: async (grantId: string, models: string[]): Promise<void> => {
      await this.#pool.query('DELETE FROM idp_entries WHERE grant_id = $1 AND model = ANY($2::text[])', [grantId, models]);
    },
  };

  async getMeta(key: string): Promise<string | undefined> {
    const [r] = await this.#rows('SELECT value FROM meta WHERE key = $1', [key]);
    return r?.value as string | undefined;
  }
  async setMeta(key: string, value: string): Promise<void> {
    await this.#pool.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]);
  }
  async setMetaIfAbsent(key: string, value: string): Promise<string> {
    await this.#pool.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value]);
    // a second statement: its snapshot sees the row a concurrent winner committed
    return (await this.getMeta(key))!;
  }

  /**
   * LISTENs on a connection of its own (a pooled one would be handed to queries). When it drops,
   * reconnects every second and then calls `onChange(undefined)`: notifications sent meanwhile
   * are lost, so the caller reloads.
   */
  watchLeases(onChange: (leaseId: string | undefined) => void): () => void {
    return this.#listen(LEASE_CHANNEL, onChange);
  }
  watchReviews(onChange: (reviewId: string | undefined) => void): () => void {
    return this.#listen(REVIEW_CHANNEL, onChange);
  }

  #listen(channel: string, onChange: (id: string | undefined) => void): () => void {
    let stopped = false;
    let client: pg.Client | undefined;
    let timer: NodeJS.Timeout | undefined;
    let lostOnce = false;
    const lost = (c: pg.Client, err?: unknown) => {
      if (client !== c || stopped) return;
      client = undefined;
      if (!lostOnce) this.#log?.warn({ err: describe(err ?? 'connection ended'), channel }, 'change listener lost; reconnecting (polling covers the gap)');
      lostOnce = true;
      c.end().catch(() => {});
      timer = setTimeout(connect, RECONNECT_MS);
      timer.unref();
    };
    const connect = async () => {
      if (stopped) return;
      const c = new pg.Client({ ...this.#config, application_name: 'hoopctl-gateway-listen' });
      client = c;
      c.on('error', (err) => lost(c, err));
      c.on('end', () => lost(c));
      c.on('notification', (n) => {
        if (n.channel !== channel || !n.payload) return;
        const i = n.payload.indexOf(':');
        if (n.payload.slice(0, i) !== this.#origin) onChange(n.payload.slice(i + 1));
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${channel}`);
      } catch (err) {
        lost(c, err);
        return;
      }
      if (stopped) { c.end().catch(() => {}); return; }
      if (lostOnce) {
        lostOnce = false;
        this.#log?.info({ channel }, 'change listener reconnected');
        onChange(undefined);
      }
    };
    void connect();
    const unwatch = () => {
      stopped = true;
      clearTimeout(timer);
      client?.end().catch(() => {});
      client = undefined;
      this.#unwatch.delete(unwatch);
    };
    this.#unwatch.add(unwatch);
    return unwatch;
  }

  async close(): Promise<void> {
    for (const u of [...this.#unwatch]) u();
    await this.#pool.end();
  }
}
