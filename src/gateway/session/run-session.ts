/**
 * The session orchestrator (Teleport lib/srv/db/server.go handleConnection): what every protocol
 * shares, in order — the lease was checked at the upgrade; here we open the session record and
 * recorder, register with the lease monitor, create the engine, and from then on any failure goes
 * through the engine's terminate(). Engines never see leases, tokens or the store.
 *
 * The session row is written behind the data path, batched with other sessions' rows
 * (`sessionRows`, store/write-batcher.ts): once when the session starts and once when it ends;
 * a session that ends within the batch window is written once, with its final figures. A gateway
 * crash can lose the rows of sessions that began less than ROWS_MS before it (the audit log has
 * the same window, see src/gateway/audit/audit.ts). The per-session logger and recorder are only
 * built when something uses them (a `tcp` session records nothing).
 */
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import type { GatewayConfig } from '../config/load.ts';
import type { ConnectionConfig } from '../config/schema.ts';
import { getEngine, type EngineContext, type SessionStats } from '../engines/engine.ts';
import type { Store, Lease, SessionRow } from '../store/store.ts';
import { WriteBatcher } from '../store/write-batcher.ts';
import type { Audit } from '../audit/audit.ts';
import type { Logger } from '../log.ts';
import { Recorder } from '../recording/recorder.ts';
import type { LeaseService } from './leases.ts';
import type { ReviewService } from './reviews.ts';
import { CloseCode, type WsDuplex } from '../../shared/ws-duplex.ts';

export interface SessionDeps {
  cfg: GatewayConfig; store: Store; audit: Audit; leases: LeaseService; reviews?: ReviewService; log: Logger; sessionRows: SessionRows;
  /** this gateway process's id (session/recovery.ts): written on each session row */
  replica?: string;
}

/** how long a session row may wait in memory before it is written (see the header) */
export const ROWS_MS = 50;
export type SessionRows = WriteBatcher<SessionRow>;

/** The batched writer of session rows (one per gateway; flushed at shutdown). */
export function sessionRowWriter(store: Store, log: Logger): SessionRows {
  return new WriteBatcher((rows) => store.saveSessions(rows), (err, rows) => log.error({ err, sessions: rows.map((r) => r.id) }, 'session rows write failed'), {
    ms: ROWS_MS, max: 200, key: (r) => r.id,
  });
}

/** how often the rows of running sessions are written with their counts so far */
export const LIVE_ROWS_MS = 2000;

/**
 * Running sessions' counters reach the store every LIVE_ROWS_MS (one timer for all sessions, rows
 * only for those whose counters moved), so `hoopctl sessions` shows live bytes and statements
 * instead of zeros until the end. Rows go through the same batcher as the start and end rows.
 */
const live = new Map<string, { rows: SessionRows; row: SessionRow; stats: SessionStats; last: number }>();
let liveTimer: NodeJS.Timeout | undefined;
function trackLive(id: string, rows: SessionRows, row: SessionRow, stats: SessionStats): () => void {
  live.set(id, { rows, row, stats, last: 0 });
  liveTimer ??= setInterval(() => {
    for (const e of live.values()) {
      const moved = e.stats.bytesIn + e.stats.bytesOut + e.stats.statements + e.stats.blocked;
      if (moved === e.last) continue;
      e.last = moved;
      e.rows.add({ ...e.row, ...e.stats });
    }
  }, LIVE_ROWS_MS).unref();
  return () => {
    live.delete(id);
    if (live.size === 0) { clearInterval(liveTimer); liveTimer = undefined; }
  };
}

/** closes the streams this long after asking the engine to say goodbye */
const GOODBYE_MS = 250;
/** how long an engine may run on after its client stream closed */
const ENGINE_GRACE_MS = 5000;

export function dialTarget(conn: ConnectionConfig, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: conn.target.host, port: conn.target.port, allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 30_000 });
    const timer = setTimeout(() => s.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.removeAllListeners('error'); resolve(s); });
    s.once('error', (err) => { clearTimeout(timer); reject(new Error(`cannot reach target ${conn.target.host}:${conn.target.port} of connection "${conn.name}": ${(err as NodeJS.ErrnoException).code ?? err.message}`)); });
  });
}

export async function runSession(deps: SessionDeps, lease: Lease, conn: ConnectionConfig, groups: string[], stream: WsDuplex): Promise<void> {
  const { store, audit, leases, sessionRows } = deps;
  // a tunnel failure (an oversized frame, a reset) may come before the engine listens: it ends the
  // stream, which ends the session below; it must never be an unhandled 'error'
  stream.on('error', () => {});
  const id = `se_${randomUUID().replaceAll('-', '').slice(0, 20)}`;
  let logger: Logger | undefined;
  const getLog = () => (logger ??= deps.log.child({ session: id, lease: lease.id, connection: conn.name }));
  const stats: SessionStats = { bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0 };
  const startedAt = Date.now();
  const row: SessionRow = { id, leaseId: lease.id, user: lease.user, connection: conn.name, type: conn.type, startedAt, endedAt: null, bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0, closeReason: null, replica: deps.replica ?? null };
  sessionRows.add(row);
  const untrack = trackLive(id, sessionRows, row, stats);
  const audited = { actor: lease.user, connection: conn.name, leaseId: lease.id, sessionId: id };
  audit.emit('session.started', audited);
  let recorder: Recorder | undefined;
  const abort = new AbortController();
  let closeReason: string | null = null;
  let leaseEnd: { code: number; reason: string } | undefined;

  const ctx: EngineContext = {
    sessionId: id, leaseId: lease.id, user: lease.user, groups, connection: conn, secret: deps.cfg.secrets.get(conn.name) ?? {}, stats,
    get log() { return getLog(); },
    dialTarget: () => dialTarget(conn),
    record: (e) => (recorder ??= new Recorder(id, store, getLog())).record(e),
    audit: (type, data) => audit.emit(type, { ...audited, data }),
    signal: abort.signal,
    pinHostKey: async (key) => {
      // one pin per connection and target address: pointing a connection elsewhere starts afresh
      const metaKey = `ssh.pinned_host_key.${conn.name}@${conn.target.host}:${conn.target.port}`;
      const known = await store.getMeta(metaKey);
      if (known !== undefined) return { key: known, first: false };
      const stored = await store.setMetaIfAbsent(metaKey, key);
      return { key: stored, first: stored === key };
    },
  };
  const reviews = deps.reviews;
  if (reviews) {
    // a held statement is withdrawn when its client asks (signal) or the lease ends (abort)
    ctx.requestReview = (req) => reviews.requestStatement(
      { sessionId: id, leaseId: lease.id, user: lease.user, connection: conn, reason: lease.reason, record: ctx.record, detached: Boolean(req.detach), resume: req.resume ?? null },
      { ...req, signal: req.signal ? AbortSignal.any([req.signal, abort.signal]) : abort.signal },
    );
  }
  const engine = (await getEngine(conn.type)).create(ctx);

  const release = leases.hold(lease.id, {
    close(code, reason) {
      closeReason ??= reason;
      leaseEnd = { code, reason };
      abort.abort(reason);
      try { engine.terminate(reason); } catch (err) { getLog().warn({ err }, 'engine terminate failed'); }
      setTimeout(() => stream.closeWith(code, reason), GOODBYE_MS).unref();
    },
  });

  // safety net: once the client stream is gone, an engine gets ENGINE_GRACE_MS to wind down
  const clientGone = new Promise<void>((resolve) => {
    if (stream.destroyed) return resolve();
    stream.once('close', () => resolve());
  }).then(() => new Promise<'stuck'>((resolve) => setTimeout(() => resolve('stuck'), ENGINE_GRACE_MS).unref()));
  try {
    const how = await Promise.race([engine.handle(stream), clientGone]);
    if (how === 'stuck') {
      getLog().warn('engine did not finish after the client closed; terminating it');
      engine.terminate('client closed');
    }
    closeReason ??= 'client closed';
  } catch (err) {
    const msg = (err as Error).message;
    closeReason ??= msg;
    getLog().info({ err: msg }, 'session ended with error');
    const unreachable = /cannot reach target/.test(msg);
    try { engine.terminate(msg); } catch { /* best effort */ }
    stream.closeWith(unreachable ? CloseCode.targetUnreachable : CloseCode.engineError, msg);
  } finally {
    release();
    // the lease's code reaches the CLI even when the engine finished before GOODBYE_MS
    if (leaseEnd) stream.closeWith(leaseEnd.code, leaseEnd.reason);
    else if (!stream.destroyed) stream.destroy();
    await recorder?.close(closeReason);
    untrack();
    sessionRows.add({ ...row, endedAt: Date.now(), closeReason, ...stats });
    audit.emit('session.ended', { ...audited, data: { reason: closeReason, bytes_in: stats.bytesIn, bytes_out: stats.bytesOut, durationMs: Date.now() - startedAt } });
  }
}
