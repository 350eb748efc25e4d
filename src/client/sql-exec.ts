/**
 * Running SQL through the gateway: the one engine behind `hoopctl exec` and `hoopctl mcp`
 * (issue 11). It takes (or reuses) a lease, waits for the lease's review when asked to, opens a
 * tunnel stream in-process and logs in over it (pg-wire.ts), runs statements one by one into a
 * ResultWriter, and maps what the gateway says to the CLI's exit codes:
 *
 *   ErrorResponse routine hoop_guardrail                              → 6 blocked
 *   NoticeResponse routine hoop_review_pending (no wait / wait over)  → 5, review id kept
 *   ErrorResponse routine hoop_review_rejected / _expired / _failed   → 5
 *   any other ErrorResponse                                           → 1
 *   lease ended (expired, revoked) under the session                  → 4
 *
 * Held statements: every session sets `hoop.detach_reviews=on`, so a review survives this process
 * going away (`exec` without --wait exits 5 at once; a later `exec --review r_…` with the same
 * statement runs it). A cancel (SIGTERM, --timeout) sends a CancelRequest through a new tunnel
 * stream with the BackendKeyData the gateway gave; the gateway maps it to the target's backend
 * (and withdraws a held statement).
 */
import { LocalTunnel, type LeaseInfo, type LeaseEnded } from './tunnel.ts';
import type { GatewayClient } from './gateway-client.ts';
import { waitForLease, type PendingLease } from './reviews.ts';
import { PgSession, PgServerError, SessionClosed, cancelRequest, rowValues, type Column, type PgFields, type StatementResult, type StatementSink } from './pg-wire.ts';
import { builtinTypeName } from './pg-type-names.ts';
import type { SplitStatement } from './sql-split.ts';
import { AccessDenied, ExitCode, HoopError, NotFound, ReviewNotApproved, toHoopError } from '../errors.ts';

export interface ConnectionInfo { name: string; type: string; database?: string; review?: boolean; review_groups?: string[]; guardrails?: boolean; masking?: boolean }

/** a progress event (`--json` on stderr; the MCP server logs them) */
export type ExecEvent = { event: 'lease' | 'waiting_approval' | 'approved' | 'rejected' | 'running' | 'completed' | 'cancelling' | 'error'; [k: string]: unknown };
export type Emit = (e: ExecEvent) => void;

export const REVIEW_ID = /\br_[A-Za-z0-9]+\b/;

export interface LeaseOptions {
  duration?: string;
  reason?: string;
  /** wait this long for a pending lease's review (undefined: do not wait, exit 5) */
  waitMs?: number;
  signal?: AbortSignal;
}

/**
 * The connection's description and an active lease on it, in one round trip: the connection list
 * and the lease request go out together (the gateway reuses the caller's active lease on that
 * connection). A re-run while an earlier lease request still waits for review does not file a
 * second one: the new pending lease is withdrawn and the earlier one (same review id) waited on.
 */
export async function openLease(gw: GatewayClient, name: string, opts: LeaseOptions, emit: Emit): Promise<{ conn: ConnectionInfo; lease: LeaseInfo }> {
  const [listed, requested] = await Promise.allSettled([
    gw.request<{ connections: ConnectionInfo[] }>('GET', '/api/connections'),
    gw.request<LeaseInfo & PendingLease & { reused?: boolean }>('POST', '/api/leases', { connection: name, duration: opts.duration, reason: opts.reason }),
  ]);
  if (listed.status === 'rejected') throw listed.reason;
  const { connections } = listed.value;
  const conn = connections.find((c) => c.name === name);
  // unknown and forbidden look the same (names are not disclosed): exit 4, with what may be used
  if (!conn || (requested.status === 'rejected' && requested.reason instanceof NotFound)) {
    throw new NotFound(`unknown connection "${name}"`, { hint: connections.length ? `you may use: ${connections.map((c) => c.name).join(', ')}` : 'you may use no connection; ask an admin for access' });
  }
  if (requested.status === 'rejected') throw requested.reason;
  let lease = requested.value;
  const reused = Boolean(lease.reused);
  if (lease.status === 'pending' && !reused) {
    const { leases } = await gw.request<{ leases: Array<LeaseInfo & PendingLease & { created_at?: string }> }>('GET', '/api/leases');
    const earlier = leases.find((l) => l.connection === name && l.status === 'pending' && l.id !== lease.id);
    if (earlier) {
      await gw.request('POST', `/api/leases/${lease.id}/revoke`).catch(() => {});
      lease = await gw.request('GET', `/api/leases/${earlier.id}`);
    }
  }
  if (lease.status === 'pending') lease = await awaitLeaseReview(gw, conn, lease, opts, emit);
  if (lease.status !== 'active') throw new AccessDenied(`lease ${lease.id} is ${lease.status}`, { code: `lease_${lease.status}` });
  emit({ event: 'lease', lease: lease.id, connection: name, type: conn.type, reused, expires_at: lease.expires_at });
  return { conn, lease };
}

async function awaitLeaseReview(gw: GatewayClient, conn: ConnectionInfo, lease: LeaseInfo & PendingLease, opts: LeaseOptions, emit: Emit): Promise<LeaseInfo & PendingLease> {
  const reviewId = lease.review_id ?? lease.review?.id;
  const approve = `hoopctl approve ${reviewId}`;
  emit({ event: 'waiting_approval', kind: 'lease', review_id: reviewId, lease: lease.id, connection: conn.name, approve_command: approve, groups: lease.review?.groups ?? conn.review_groups ?? [] });
  if (opts.waitMs === undefined) {
    throw new ReviewNotApproved('review_pending', `lease ${lease.id} on ${conn.name} waits for approval: review ${reviewId}`, {
      reviewId, hint: `ask a reviewer (${(conn.review_groups ?? []).join(', ') || 'reviewer groups'}) to run \`${approve}\`, then run this again (the approved lease is reused), or pass --wait 15m`,
    });
  }
  const timeout = AbortSignal.timeout(opts.waitMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const done = await waitForLease<LeaseInfo & PendingLease>(gw, lease.id, signal);
  if (!done) {
    throw new ReviewNotApproved('review_pending', `lease ${lease.id} on ${conn.name} was not approved within the wait: review ${reviewId} is still pending`, { reviewId, hint: `a reviewer runs \`${approve}\`; run this again then (the lease is reused)` });
  }
  if (done.status === 'active') {
    emit({ event: 'approved', kind: 'lease', review_id: reviewId, lease: done.id, by: done.review?.decided_by ?? null });
    return done;
  }
  const why = done.end_reason ?? `lease ${done.status}`;
  emit({ event: 'rejected', kind: 'lease', review_id: reviewId, lease: done.id, reason: why });
  throw new ReviewNotApproved(done.review?.status === 'expired' ? 'review_expired' : 'review_rejected', `review ${reviewId} of lease ${done.id}: ${why}`, { reviewId });
}

export interface ColumnInfo { name: string; type: string; type_oid: number }

/** What a statement's output goes to (exec's formats, the MCP server's collector). */
export interface ResultWriter {
  /** a statement starts; `resume` restarts reading after a sink method returned false */
  begin(stmt: SplitStatement, index: number, resume: () => void): void;
  /** its columns, with type names (only for statements that return rows) */
  columns(cols: ColumnInfo[]): boolean | void;
  /** a DataRow (see StatementSink.row) */
  row(buf: Buffer, start: number, end: number): boolean | void;
  copyData?(buf: Buffer, start: number, end: number): boolean | void;
  notice(f: PgFields): void;
  /** its end: command tag, or the error (with the exit code it maps to) */
  end(stmt: SplitStatement, index: number, r: StatementResult, exit: number): void;
}

export interface RunOptions {
  statements: SplitStatement[];
  writer: ResultWriter;
  continueOnError?: boolean;
  /** wait this long for a held statement's review (undefined: leave at once, exit 5) */
  waitMs?: number;
  /** resume with this approved review (`hoop.review`) */
  review?: string;
  /** aborting cancels the running statement on the target and ends the run */
  signal?: AbortSignal;
  /** look up names of types created in the database (a side session); else "oid NNN" */
  typeLookup?: boolean;
  applicationName?: string;
}

export interface RunOutcome {
  exit: number;
  ran: number;
  failed: number;
  cancelled: boolean;
  /** the first failure */
  error?: HoopError;
  reviewId?: string;
}

/** Maps one statement's error to an exit code (the routine marks the gateway's own refusals). */
export function exitFor(f: PgFields): number {
  if (f.routine === 'hoop_guardrail') return ExitCode.blocked;
  if (f.routine === 'hoop_review_rejected' || f.routine === 'hoop_review_expired' || f.routine === 'hoop_review_failed') return ExitCode.rejected;
  return ExitCode.target;
}

/** The lease's tunnel, sessions on it, cancel requests, type names. */
export class SqlTarget {
  readonly tunnel: LocalTunnel;
  readonly conn: ConnectionInfo;
  readonly lease: LeaseInfo;
  leaseEnded: LeaseEnded | undefined;
  readonly #types = new Map<number, string>();
  #side: Promise<PgSession> | undefined;

  constructor(gw: GatewayClient, conn: ConnectionInfo, lease: LeaseInfo) {
    this.conn = conn;
    this.lease = lease;
    this.tunnel = new LocalTunnel(gw, lease);
    this.tunnel.on('lease-ended', (e: LeaseEnded) => { this.leaseEnded ??= e; });
  }

  /** A logged-in session (startup parameters beyond the defaults in `params`). */
  async session(params: Record<string, string> = {}): Promise<PgSession> {
    if (this.conn.type !== 'postgres') throw new HoopError('unsupported', `connection "${this.conn.name}" is ${this.conn.type}: running input needs a postgres connection; wrap a client instead: hoopctl exec ${this.conn.name} -- <command>`, { status: 400, exit: ExitCode.usage, expose: true });
    const stream = await this.tunnel.stream();
    // failures reach the session through its link's close; the stream's own 'error' has no reader
    stream.on('error', () => {});
    try {
      return await PgSession.open((h) => stream.link(h), {
        user: this.lease.user.replace(/[^\w@.-]/g, '_') || 'hoop', database: this.conn.database ?? 'postgres',
        application_name: 'hoopctl exec', client_encoding: 'UTF8', ...params,
      });
    } catch (err) {
      stream.destroy();
      throw this.sessionError(err);
    }
  }

  /** what a failed session means to the user */
  sessionError(err: unknown): HoopError {
    if (this.leaseEnded) return new AccessDenied(`${this.leaseEnded.reason} (lease ${this.lease.id})`, { code: 'lease_ended' });
    if (err instanceof PgServerError) {
      const f = err.fields;
      if (f.sqlstate === '57P01' && /lease/i.test(f.message)) return new AccessDenied(f.message, { code: 'lease_ended' });
      return new HoopError('target_error', f.message, { exit: ExitCode.target, expose: true, details: { sqlstate: f.sqlstate } });
    }
    if (err instanceof SessionClosed) return new HoopError('session_closed', `the gateway closed the session: ${err.message}`, { exit: ExitCode.unreachable, expose: true });
    return toHoopError(err);
  }

  /** CancelRequest for `s`'s running statement, through a new tunnel stream (the gateway maps the key). */
  async cancel(s: PgSession): Promise<void> {
    const stream = await this.tunnel.stream();
    stream.on('error', () => {});
    await new Promise<void>((resolve) => {
      const link = stream.link({ data: () => {}, end: () => resolve(), close: () => resolve(), drain: () => {} });
      link.start();
      // no end(): like libpq, send the request and wait for the gateway to close once it has
      // forwarded it (an early EOF can end the gateway's side before the target got the cancel)
      link.write(cancelRequest(s.pid, s.secret));
      setTimeout(resolve, 3000).unref();
    });
    stream.destroy();
  }

  /** Column type names; types created in the database are looked up once on a side session. */
  async typeNames(cols: Column[], lookup: boolean): Promise<ColumnInfo[]> {
    const unknown = cols.map((c) => c.typeOid).filter((o) => !builtinTypeName(o) && !this.#types.has(o));
    if (unknown.length && lookup) {
      try {
        this.#side ??= this.session({ application_name: 'hoopctl exec (types)' });
        const side = await this.#side;
        await side.query(`select oid::int8, format_type(oid, null) from pg_catalog.pg_type where oid in (${[...new Set(unknown)].join(',')})`, {
          row: (buf, start) => { const [oid, name] = rowValues(buf, start); this.#types.set(Number(oid), name ?? ''); },
        });
      } catch { /* names stay "oid NNN": the result matters more than its labels */ }
    }
    return cols.map((c) => ({ name: c.name, type: builtinTypeName(c.typeOid) ?? (this.#types.get(c.typeOid) || `oid ${c.typeOid}`), type_oid: c.typeOid }));
  }

  async close(): Promise<void> {
    const side = this.#side;
    this.#side = undefined;
    if (side) await side.then((s) => s.closeGracefully(), () => {});
    await this.tunnel.close();
  }
}

/** The startup parameters of an exec session: reviews outlive the client; resume one if given. */
export function sessionParams(o: { review?: string; applicationName?: string }): Record<string, string> {
  return { 'hoop.detach_reviews': 'on', ...(o.review ? { 'hoop.review': o.review } : {}), ...(o.applicationName ? { application_name: o.applicationName } : {}) };
}

/**
 * Runs the statements one at a time on one session, stopping at the first failure unless
 * `continueOnError` (psql's ON_ERROR_STOP). Never throws for a statement's error: the outcome
 * carries the exit code; throws only when no session could be opened.
 */
export async function runStatements(target: SqlTarget, o: RunOptions, emit: Emit): Promise<RunOutcome> {
  const out: RunOutcome = { exit: 0, ran: 0, failed: 0, cancelled: false };
  if (o.signal?.aborted) return { ...out, cancelled: true, exit: ExitCode.target };
  const session = await target.session(sessionParams(o));
  let running = false;
  const onAbort = () => {
    if (out.cancelled) return;
    out.cancelled = true;
    if (!running) return;
    emit({ event: 'cancelling', reason: String(o.signal?.reason ?? 'cancelled') });
    target.cancel(session).catch(() => {});
    // a gateway that does not answer the cancel: leave anyway
    setTimeout(() => session.destroy(), 5000).unref();
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  // aborted while the session was being opened (a short --timeout on a slow login): nothing runs
  if (o.signal?.aborted) onAbort();
  const fail = (err: HoopError, reviewId?: string) => {
    out.failed++;
    if (!out.error) {
      out.error = err;
      out.exit = err.exit;
      out.reviewId = reviewId;
    }
  };
  try {
    for (let i = 0; i < o.statements.length; i++) {
      if (out.cancelled) break;
      const stmt = o.statements[i];
      emit({ event: 'running', statement: i + 1, line: stmt.line, text: stmt.text.length > 200 ? `${stmt.text.slice(0, 200)}…` : stmt.text });
      let held: string | undefined;
      let heldOver: 'left' | 'wait' | undefined;
      let waitTimer: NodeJS.Timeout | undefined;
      const answered = () => {
        if (!held) return;
        emit({ event: 'approved', kind: 'statement', review_id: held, statement: i + 1 });
        held = undefined;
        clearTimeout(waitTimer);
      };
      const sink: StatementSink = {
        columns: (cols) => {
          answered();
          const known = cols.every((c) => builtinTypeName(c.typeOid));
          if (known) return o.writer.columns(cols.map((c) => ({ name: c.name, type: builtinTypeName(c.typeOid)!, type_oid: c.typeOid })));
          // look the names up before any row is written, holding the rest of the stream meanwhile
          void target.typeNames(cols, o.typeLookup ?? true).then((named) => {
            if (o.writer.columns(named) !== false) session.resume();
          });
          return false;
        },
        row: (buf, s, e) => o.writer.row(buf, s, e),
        copyData: (buf, s, e) => { answered(); return o.writer.copyData?.(buf, s, e); },
        notice: (f) => {
          if (f.routine === 'hoop_review_pending') {
            held = REVIEW_ID.exec(f.message)?.[0] ?? '?';
            emit({ event: 'waiting_approval', kind: 'statement', review_id: held, statement: i + 1, approve_command: `hoopctl approve ${held}`, message: f.message });
            // the gateway's hint (cancel to withdraw) is for a client that waits; this one leaves
            o.writer.notice(o.waitMs === undefined ? { ...f, hint: undefined } : f);
            if (o.waitMs === undefined) {
              heldOver = 'left';
              session.destroy(); // hoop.detach_reviews=on: the review stays open
            } else {
              waitTimer = setTimeout(() => { heldOver = 'wait'; session.destroy(); }, o.waitMs);
              waitTimer.unref();
            }
            return;
          }
          o.writer.notice(f);
        },
      };
      o.writer.begin(stmt, i, () => session.resume());
      running = true;
      let r: StatementResult;
      try {
        r = await session.query(stmt.text, sink);
      } catch (err) {
        running = false;
        clearTimeout(waitTimer);
        if (heldOver && held) {
          const resume = `hoopctl exec ${target.conn.name} --review ${held}`;
          fail(new ReviewNotApproved('review_pending', heldOver === 'left'
            ? `statement ${i + 1} is held for review ${held}`
            : `statement ${i + 1} was not approved within the wait: review ${held} is still pending`, {
            reviewId: held, details: { statement: i + 1 },
            hint: `a reviewer runs \`hoopctl approve ${held}\`; then run the same input with ${resume} (statements before it run again)`,
          }), held);
          return out;
        }
        if (out.cancelled) return { ...out, exit: out.exit || ExitCode.target };
        fail(target.sessionError(err));
        return out;
      } finally {
        clearTimeout(waitTimer);
      }
      running = false;
      out.ran++;
      if (r.error) {
        const f = r.error;
        const code = exitFor(f);
        if (held && code === ExitCode.rejected) emit({ event: 'rejected', kind: 'statement', review_id: held, statement: i + 1, reason: f.message });
        else answered();
        o.writer.end(stmt, i, r, code);
        const err = new HoopError(code === ExitCode.blocked ? 'blocked' : code === ExitCode.rejected ? (f.routine ?? 'review_rejected') : 'sql_error', f.message, {
          exit: code as HoopError['exit'], expose: true, details: { sqlstate: f.sqlstate, statement: i + 1, line: stmt.line },
        });
        fail(err, held ?? REVIEW_ID.exec(f.message)?.[0]);
        if (out.cancelled || !o.continueOnError) break;
      } else {
        answered();
        o.writer.end(stmt, i, r, 0);
      }
    }
    if (out.cancelled && !out.exit) out.exit = ExitCode.target;
    return out;
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    await session.closeGracefully();
  }
}
