/**
 * Issue 10 §5, §6, §7 and §9 (dev IdP) with real PostgreSQL, psql and the real CLI: a PostgreSQL
 * client over lease.max_connections reads why; another local user is refused at `hoopctl
 * connect`'s port; a gateway killed mid-session leaves a true record (SQLite, and replicas on a
 * PostgreSQL store where only a gone replica's sessions are closed); replicas on one store are one
 * dev identity provider, and a logout on one is refused by the other.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, freePort, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { completeDeviceFlow } from './helpers/device-flow.ts';

let db: PgCluster;
let dbs = 0;
const OTHER_USER = 'hoop-other';
const isRoot = process.getuid?.() === 0;

before(async () => {
  db = await startPostgres();
  await db.psql('CREATE TABLE notes (id serial PRIMARY KEY, body text)', { db: 'app', user: 'app' });
  if (isRoot) {
    try { execFileSync('id', [OTHER_USER], { stdio: 'ignore' }); } catch { execFileSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', OTHER_USER]); }
  }
});
after(async () => { await db?.stop(); });

const appConn = (over: Record<string, unknown> = {}) => ({
  name: 'app', type: 'postgres', target: { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' }, access: { groups: ['ci'] }, ...over,
});

type Run = { code: number | null; stdout: string; stderr: string };
function psql(port: number, sql: string, opts: { as?: string; timeoutMs?: number } = {}): Promise<Run> {
  const args = ['-X', '-At', `postgres://app:x@127.0.0.1:${port}/app`, '-c', sql];
  const [cmd, argv] = opts.as ? ['runuser', ['-u', opts.as, '--', 'psql', ...args]] : ['psql', args];
  return new Promise((resolve) => {
    execFile(cmd, argv as string[], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' }, timeout: opts.timeoutMs ?? 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function connect(gw: GatewayProc, extra: string[] = []) {
  const port = await freePort();
  const live = gw.spawnCli(['connect', 'app', '--port', String(port), ...extra], { home: 'ci' });
  const lease = (await live.waitFor(/lease (ls_\w+) (granted|reused)/))[1];
  return { live, port, lease, async stop() { live.kill('SIGINT'); await live.exited; } };
}

test('postgres over lease.max_connections: psql reads an ErrorResponse saying why; another local user is refused at connect\'s port', async (t) => {
  const gw = await startGatewayProc((c) => { c.connections = [appConn({ lease: { max_connections: 1 } })]; }, { env: { APP_PW: 'app-secret', HOOP_LOG_LEVEL: 'warn' } });
  try {
    await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
    const c = await connect(gw);
    try {
      // one connection holds the lease's only slot
      const holder = psql(c.port, 'select pg_sleep(3)');
      await new Promise((r) => setTimeout(r, 1200));
      const over = await psql(c.port, 'select 1');
      assert.notEqual(over.code, 0);
      assert.match(over.stderr, /FATAL:\s+too many connections on lease ls_\w+: 1 open, the limit is 1 \(lease\.max_connections of connection "app"\)/);
      assert.equal((await holder).code, 0);
      assert.equal((await psql(c.port, 'select 41+1')).stdout.trim(), '42', 'the slot is free again');

      if (!isRoot) t.diagnostic('skipped the second-local-user checks: not root (useradd needs root)');
      else {
      const other = await psql(c.port, 'select 1', { as: OTHER_USER });
      assert.notEqual(other.code, 0);
      assert.match(other.stderr, new RegExp(`hoopctl: local user ${OTHER_USER} \\(uid \\d+\\) may not use this tunnel: it belongs to root`));
      await c.live.waitFor(new RegExp(`refused a local connection: local user ${OTHER_USER}`), 5000);
      // nothing reached the gateway: no session for that attempt
      assert.equal((await psql(c.port, 'select 7')).stdout.trim(), '7', 'the owner still gets through');
      }
    } finally {
      await c.stop();
    }
    // --socket-dir: a Unix socket in a 0700 folder, where the port check is not available
    const dir = join(mkdtempSync(join(tmpdir(), 'hoop-sock-')), 's');
    const port = await freePort();
    const live = gw.spawnCli(['connect', 'app', '--port', String(port), '--socket-dir', dir], { home: 'ci' });
    try {
      await live.waitFor(/Connected to app \(postgres\) on .*\.s\.PGSQL\.\d+/);
      const viaSocket = await new Promise<string>((resolve, reject) => execFile('psql', ['-X', '-At', `host=${dir} port=${port} dbname=app user=app`, '-c', 'select 6*7'], (err, out, errOut) => (err ? reject(new Error(String(errOut))) : resolve(String(out)))));
      assert.equal(viaSocket.trim(), '42');
      if (isRoot) {
        chmodSync(join(dir, '..'), 0o755);
        const denied = await new Promise<string>((resolve) => execFile('runuser', ['-u', OTHER_USER, '--', 'psql', '-X', `host=${dir} port=${port} dbname=app user=app`, '-c', 'select 1'], (_e, _o, errOut) => resolve(String(errOut))));
        assert.match(denied, /Permission denied/);
      }
    } finally {
      live.kill('SIGINT');
      await live.exited;
    }
  } finally {
    await gw.stop();
  }
});

async function admin(gw: GatewayProc, path: string): Promise<any> {
  const r = await gw.cli([...path.split(' '), '--json'], { home: 'admin' });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('SQLite: a gateway killed mid-session closes that session as interrupted at its next start, and sessions verify accepts the crash end', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-crash-'));
  const cfg = (c: { connections: unknown[] }) => { c.connections = [appConn()]; };
  let gw = await startGatewayProc(cfg, { dir, env: { APP_PW: 'app-secret' } });
  const port = gw.port;
  try {
    await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
    await loginClient(gw, 'admin', 'admin-bot', 'admin-secret');
    const c = await connect(gw);
    const sleeper = psql(c.port, "select 'before the crash'; select pg_sleep(20)");
    await new Promise((r) => setTimeout(r, 1500)); // the first statement's event and the row are written
    gw.proc.kill('SIGKILL');
    await new Promise((r) => gw.proc.once('close', r));
    await sleeper;
    await c.stop();
    gw = await startGatewayProc(cfg, { dir, port, env: { APP_PW: 'app-secret' } });
    const sessions = (await admin(gw, 'sessions')) as Array<{ id: string; endedAt: number | null; closeReason: string | null; startedAt: number }>;
    const s = sessions[0];
    assert.equal(s.closeReason, 'interrupted');
    assert.ok(s.endedAt !== null && s.endedAt >= s.startedAt && s.endedAt < Date.now() - 500, 'ended at its last recorded event, not at the restart');
    const v = await gw.cli(['sessions', 'verify', s.id], { home: 'admin' });
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /hash chain intact; the session was interrupted/);
    const events = (await admin(gw, 'audit --since 1h')) as Array<{ type: string; sessionId: string | null }>;
    assert.ok(events.some((e) => e.type === 'session.interrupted' && e.sessionId === s.id));
  } finally {
    await gw.stop();
  }
});

test('replicas on one PostgreSQL store: one dev IdP (login on A, used and logged out on B); only a gone replica\'s sessions are closed', async () => {
  await db.psql(`CREATE DATABASE hoop_h${++dbs} OWNER app`);
  const store = db.url(`hoop_h${dbs}`, 'app');
  const [pa, pb] = [await freePort(), await freePort()];
  const publicUrl = `http://127.0.0.1:${pa}`; // one public URL, as behind a load balancer
  const env = { APP_PW: 'app-secret', HOOP_REPLICA_HEARTBEAT_MS: '300', HOOP_REPLICA_DEAD_MS: '2500', HOOP_LOG_LEVEL: 'warn' };
  const cfg = (c: { store: string; connections: unknown[] }) => { c.store = store; (c as Record<string, unknown>).public_url = publicUrl; c.connections = [appConn()]; };
  const [a, b] = await Promise.all([startGatewayProc(cfg, { port: pa, env }), startGatewayProc(cfg, { port: pb, env })]);
  try {
    // device login: authorized at A, the browser steps served by B, the token redeemed at A
    const form = async (url: string, body: Record<string, string>) => (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body) })).json() as Promise<any>;
    const da = await form(`${a.url}/oidc/device/auth`, { client_id: 'hoopctl', scope: 'openid offline_access' });
    await completeDeviceFlow(String(da.verification_uri_complete).replace(a.url, b.url), 'alice', 'alice');
    const tok = await form(`${a.url}/oidc/token`, { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: da.device_code, client_id: 'hoopctl' });
    assert.ok(tok.access_token, JSON.stringify(tok));
    const whoami = (g: GatewayProc) => fetch(`${g.url}/api/whoami`, { headers: { authorization: `Bearer ${tok.access_token}` } });
    assert.equal((await whoami(b)).status, 200, 'B accepts what A issued');
    // the refresh token, rotated at B
    const refreshed = await form(`${b.url}/oidc/token`, { grant_type: 'refresh_token', refresh_token: tok.refresh_token, client_id: 'hoopctl' });
    assert.ok(refreshed.access_token, JSON.stringify(refreshed));
    // logged out through A: refused by B within a couple of seconds
    assert.equal((await fetch(`${a.url}/api/logout`, { method: 'POST', headers: { authorization: `Bearer ${tok.access_token}` } })).status, 200);
    let status = 0;
    for (let i = 0; i < 30 && status !== 401; i++) { status = (await whoami(b)).status; if (status !== 401) await new Promise((r) => setTimeout(r, 100)); }
    assert.equal(status, 401, 'B refuses the logged-out token');

    // a session on each replica; A is killed
    await Promise.all([loginClient(a, 'ci', 'ci-bot', 'ci-secret'), loginClient(b, 'ci', 'ci-bot', 'ci-secret'), loginClient(b, 'admin', 'admin-bot', 'admin-secret')]);
    const ca = await connect(a);
    const cb = await connect(b);
    const onA = psql(ca.port, "select 'on A'; select pg_sleep(15)");
    const onB = spawn('psql', ['-X', '-At', `postgres://app:x@127.0.0.1:${cb.port}/app`], { stdio: ['pipe', 'pipe', 'pipe'] });
    onB.stdin.write("select 'on B';\n");
    await new Promise((r) => setTimeout(r, 1500));
    a.proc.kill('SIGKILL');
    await new Promise((r) => a.proc.once('close', r));
    await onA;
    await ca.stop();
    const list = async () => (await admin(b, 'sessions')) as Array<{ id: string; closeReason: string | null; endedAt: number | null; replica?: string }>;
    const open = (await list()).filter((s) => s.endedAt === null);
    assert.equal(open.length, 2, 'just after the kill A\'s heartbeat is fresh: nothing is closed yet');
    let closed: Awaited<ReturnType<typeof list>> = [];
    for (let i = 0; i < 40 && !closed.length; i++) {
      await new Promise((r) => setTimeout(r, 250));
      closed = (await list()).filter((s) => s.closeReason === 'interrupted');
    }
    assert.equal(closed.length, 1, 'A\'s session is closed once A is gone');
    const stillOpen = (await list()).filter((s) => s.endedAt === null);
    assert.equal(stillOpen.length, 1, 'B\'s own live session is never closed');
    assert.notEqual(stillOpen[0].replica, closed[0].replica);
    const v = await b.cli(['sessions', 'verify', closed[0].id], { home: 'admin' });
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /interrupted/);
    onB.stdin.write("select 'B goes on';\n");
    onB.stdin.end();
    const out = await new Promise<string>((r) => { let o = ''; onB.stdout.on('data', (d) => { o += d; }); onB.on('close', () => r(o)); });
    assert.match(out, /B goes on/);
    await cb.stop();
  } finally {
    // a killed A has no exit code (the harness would wait for a second 'close')
    await Promise.all([a.proc.signalCode ? undefined : a.stop(), b.stop()]);
  }
});
