/**
 * Runs the ssh engine in-process behind a plain TCP listener on 127.0.0.1 (what the tunnel hands
 * it in production), with an EngineContext whose record/audit calls are collected and whose
 * review and host-key hooks the test supplies. The user side is a Node ssh2 Client (`userSsh`).
 */
import net from 'node:net';
import { pino } from 'pino';
import ssh2 from 'ssh2';
import { configSchema, type ConnectionConfig } from '../../src/gateway/config/schema.ts';
import { sshEngine } from '../../src/gateway/engines/ssh/ssh-engine.ts';
import type { EngineContext, RecordEvent, SessionStats } from '../../src/gateway/engines/engine.ts';
import type { Sshd } from './sshd.ts';
import { readFileSync } from 'node:fs';

export interface SshTestGateway {
  port: number;
  conn: ConnectionConfig;
  events: RecordEvent[];
  audits: Array<{ type: string; data: Record<string, unknown> }>;
  sessions: Array<{ ctx: EngineContext; done: Promise<unknown>; engine: ReturnType<typeof sshEngine.create> }>;
  close(): Promise<void>;
}

export interface SshGatewayOptions {
  target?: Record<string, unknown>;
  ssh?: Record<string, unknown>;
  guardrails?: Record<string, unknown>;
  recording?: Record<string, unknown>;
  requestReview?: EngineContext['requestReview'];
  pinHostKey?: EngineContext['pinHostKey'];
}

const hostKey = (() => {
  let k: { private: string; public: string } | undefined;
  return () => {
    if (!k) {
      for (;;) {
        const g = ssh2.utils.generateKeyPairSync('ed25519');
        if (!(ssh2.utils.parseKey(g.private) instanceof Error)) { k = { private: g.private, public: g.public }; break; }
      }
    }
    return k;
  };
})();

export async function startSshGateway(sshd: Sshd, opts: SshGatewayOptions = {}): Promise<SshTestGateway> {
  const cfg = configSchema.parse({
    auth: { issuer: 'dev' },
    connections: [{
      name: 'box', type: 'ssh',
      target: { host: '127.0.0.1', port: sshd.port, user: sshd.user, private_key_file: sshd.clientKeyFile, host_key: sshd.hostKey, ...opts.target },
      access: { groups: ['eng'] },
      ...(opts.ssh ? { ssh: opts.ssh } : {}),
      ...(opts.guardrails ? { guardrails: opts.guardrails } : {}),
      ...(opts.recording ? { recording: opts.recording } : {}),
    }],
  });
  const conn = cfg.connections[0];
  const events: RecordEvent[] = [];
  const audits: SshTestGateway['audits'] = [];
  const sessions: SshTestGateway['sessions'] = [];
  const log = pino({ level: process.env.HOOP_TEST_LOG ?? 'silent' });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.setNoDelay(true);
    const stats: SessionStats = { bytesIn: 0, bytesOut: 0, statements: 0, blocked: 0, masked: 0 };
    const ctx: EngineContext = {
      sessionId: `se_${sessions.length}`, leaseId: 'le_test', user: 'alice', groups: ['eng'], connection: conn,
      secret: { privateKey: readFileSync(sshd.clientKeyFile, 'utf8'), gatewayHostKey: hostKey() }, log, stats,
      dialTarget: () => new Promise((resolve, reject) => {
        const s = net.connect({ host: conn.target.host, port: conn.target.port, noDelay: true });
        s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
        s.once('error', reject);
      }),
      record: (e) => { events.push(e); },
      audit: (type, data) => { audits.push({ type, data }); },
      signal: new AbortController().signal,
      ...(opts.requestReview ? { requestReview: opts.requestReview } : {}),
      ...(opts.pinHostKey ? { pinHostKey: opts.pinHostKey } : {}),
    };
    const engine = sshEngine.create(ctx);
    const done = engine.handle(socket).catch((err: Error) => err);
    sessions.push({ ctx, done, engine });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, conn, events, audits, sessions,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // an engine that does not finish once its client is gone is a bug: say so instead of hanging
      let timer: NodeJS.Timeout | undefined;
      const stuck = new Promise<'stuck'>((r) => { timer = setTimeout(() => r('stuck'), 10_000); });
      const how = await Promise.race([Promise.all(sessions.map((s) => s.done)), stuck]);
      clearTimeout(timer);
      if (how === 'stuck') throw new Error('an ssh engine session did not finish within 10 s of its client closing');
    },
  };
}

/** the user's side: a Node ssh2 client logged in to the in-process gateway (no auth: the lease is it) */
export function userSsh(port: number, extra: Partial<ssh2.ConnectConfig> = {}): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client();
    c.once('ready', () => resolve(c));
    c.once('error', reject);
    c.connect({ host: '127.0.0.1', port, username: 'whoever', authHandler: ['none'], readyTimeout: 10_000, ...extra });
  });
}

export interface ExecResult { code: number | null; signal: string | null; stdout: string; stderr: string }

export function execVia(c: ssh2.Client, command: string, opts: ssh2.ExecOptions = {}, input?: string): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    c.exec(command, opts, (err, ch) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      let code: number | null = null;
      let signal: string | null = null;
      ch.on('data', (d: Buffer) => { stdout += d; });
      ch.stderr.on('data', (d: Buffer) => { stderr += d; });
      ch.on('exit', (c2: number | null, s?: string) => { code = c2; signal = s ?? null; });
      ch.on('close', () => resolve({ code, signal, stdout, stderr }));
      if (input !== undefined) ch.end(input);
    });
  });
}
