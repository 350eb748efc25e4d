/**
 * Runs the PostgreSQL engine behind a plain TCP listener on 127.0.0.1 (what the WebSocket tunnel
 * hands it in production), with a real EngineContext whose record/audit calls are collected.
 */
import net from 'node:net';
import { execFile } from 'node:child_process';
import { pino } from 'pino';
import { configSchema, type ConnectionConfig } from '../../src/gateway/config/schema.ts';
import { postgresEngine } from '../../src/gateway/engines/postgres/postgres-engine.ts';
import type { EngineContext, RecordEvent, SessionStats } from '../../src/gateway/engines/engine.ts';
import type { PgCluster } from './postgres.ts';

export interface GatewaySession { ctx: EngineContext; stats: SessionStats; done: Promise<void>; engine: ReturnType<typeof postgresEngine.create> }

export interface TestGateway {
  port: number;
  conn: ConnectionConfig;
  events: RecordEvent[];
  audits: Array<{ type: string; data: Record<string, unknown> }>;
  sessions: GatewaySession[];
  /** sum of all sessions' stats */
  stats(): SessionStats;
  close(): Promise<void>;
}

export interface GatewayOptions {
  target?: Record<string, unknown>;
  guardrails?: Record<string, unknown>;
  masking?: Record<string, unknown>;
  recording?: Record<string, unknown>;
  password?: string;
  requestReview?: EngineContext['requestReview'];
  /** benchmarks: do not keep recorded events */
  discardEvents?: boolean;
  /** benchmarks: where each session's events go instead (e.g. a real Recorder on a store) */
  recorder?: (sessionId: string) => (e: RecordEvent) => void;
}

export async function startGateway(pg: PgCluster, opts: GatewayOptions = {}): Promise<TestGateway> {
  const cfg = configSchema.parse({
    auth: { issuer: 'dev' },
    connections: [{
      name: 'db', type: 'postgres',
      target: { host: '127.0.0.1', port: pg.port, database: 'app', user: 'app', password_env: 'PG_TEST_PASSWORD', ...opts.target },
      access: { groups: ['eng'] },
      ...(opts.guardrails ? { guardrails: opts.guardrails } : {}),
      ...(opts.masking ? { masking: opts.masking } : {}),
      ...(opts.recording ? { recording: opts.recording } : {}),
    }],
  });
  const conn = cfg.connections[0];
  const events: RecordEvent[] = [];
  const audits: TestGateway['audits'] = [];
  const sessions: GatewaySession[] = [];
  const log = pino({ level: process.env.HOOP_TEST_LOG ?? 'silent' });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.setNoDelay(true);
    const stats: SessionStats = { bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0 };
    const abort = new AbortController();
    const ctx: EngineContext = {
      sessionId: `se_${sessions.length}`, leaseId: 'le_test', user: 'alice', groups: ['eng'], connection: conn,
      secret: { password: opts.password ?? 'app-secret' }, log, stats,
      dialTarget: () => new Promise((resolve, reject) => {
        const s = net.connect({ host: conn.target.host, port: conn.target.port, noDelay: true });
        s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
        s.once('error', reject);
      }),
      record: opts.recorder ? opts.recorder(`se_${sessions.length}`) : (e) => { if (!opts.discardEvents) events.push(e); },
      audit: (type, data) => { audits.push({ type, data }); },
      signal: abort.signal,
      ...(opts.requestReview ? { requestReview: opts.requestReview } : {}),
    };
    const engine = postgresEngine.create(ctx);
    const done = engine.handle(socket);
    sessions.push({ ctx, stats, done, engine });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, conn, events, audits, sessions,
    stats() {
      const t: SessionStats = { bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0 };
      for (const s of sessions) for (const k of Object.keys(t) as Array<keyof SessionStats>) t[k] += s.stats[k];
      return t;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all(sessions.map((s) => s.done));
    },
  };
}

export interface PsqlResult { code: number; stdout: string; stderr: string }

/** Runs real psql against the test gateway (never prompts for a password: the lease is the login). */
export function psqlVia(port: number, sql: string | string[], opts: { db?: string; user?: string; args?: string[]; env?: Record<string, string> } = {}): Promise<PsqlResult> {
  const cmds = (Array.isArray(sql) ? sql : [sql]).flatMap((s) => ['-c', s]);
  return new Promise((resolve) => {
    execFile('psql', ['-XAtw', '-h', '127.0.0.1', '-p', String(port), '-U', opts.user ?? 'someone', '-d', opts.db ?? 'whatever', ...(opts.args ?? []), ...cmds],
      { env: { ...process.env, PGCONNECT_TIMEOUT: '10', PGPASSWORD: '', ...opts.env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }));
  });
}
