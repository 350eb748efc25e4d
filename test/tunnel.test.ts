/**
 * Issue 3: leases and WebSocket tunnels through the real CLI (`hoopctl connect`) and gateway:
 * psql to a real PostgreSQL over a `tcp` connection, expiry and revocation closing open
 * connections, refused tunnel tokens, unknown names, a target that is down, 100 MB both ways.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import net from 'node:net';
import { WebSocket } from 'ws';
import { SignJWT } from 'jose';
import { startPostgres, freePort, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { echoServer, pumpThrough, holdOpen } from './helpers/net.ts';

const exec = promisify(execFile);
let pg: PgCluster;
let gw: GatewayProc;
let echo: Awaited<ReturnType<typeof echoServer>>;
let deadPort: number;

before(async () => {
  [pg, echo, deadPort] = await Promise.all([startPostgres(), echoServer(), freePort()]);
  gw = await startGatewayProc((c) => {
    c.connections = [
      { name: 'pg-raw', type: 'tcp', target: { host: '127.0.0.1', port: pg.port }, access: { groups: ['ci', 'dba'] } },
      { name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci', 'dba'] }, lease: { default: '30m', max: '1h' } },
      { name: 'echo2', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci'] } },
      { name: 'down', type: 'tcp', target: { host: '127.0.0.1', port: deadPort }, access: { groups: ['ci'] } },
    ];
  });
  await Promise.all([loginClient(gw, 'ci', 'ci-bot', 'ci-secret'), loginClient(gw, 'dba', 'dba-bot', 'dba-secret'), loginClient(gw, 'admin', 'admin-bot', 'admin-secret')]);
});
after(async () => { await gw?.stop(); await echo?.close(); await pg?.stop(); });

async function connect(conn: string, extra: string[] = [], home = 'ci') {
  const port = await freePort();
  const live = gw.spawnCli(['connect', conn, '--port', String(port), ...extra], { home });
  const m = await live.waitFor(/lease (ls_\w+) (granted|reused)/);
  return { live, port, lease: m[1], how: m[2] };
}

test('psql through a tcp connection to a real PostgreSQL; the session is recorded', async () => {
  const c = await connect('pg-raw');
  try {
    const { stdout } = await exec('psql', ['-XAtq', `postgres://app:app-secret@127.0.0.1:${c.port}/app`, '-c', 'select 40 + 2'], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' } });
    assert.equal(stdout.trim(), '42');
  } finally {
    c.live.kill('SIGINT');
  }
  const r = await c.live.exited;
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Stopped\. Lease ls_\w+ stays valid until/);
  // the lease outlived the CLI; a second connect reuses it
  const again = await connect('pg-raw');
  assert.equal(again.lease, c.lease);
  assert.equal(again.how, 'reused');
  again.live.kill('SIGINT');
  await again.live.exited;
  const fresh = await connect('pg-raw', ['--new-lease']);
  assert.notEqual(fresh.lease, c.lease);
  fresh.live.kill('SIGINT');
  await fresh.live.exited;
  const sessions = JSON.parse((await gw.cli(['leases', '--json'], { home: 'ci' })).stdout);
  assert.ok(sessions.some((l: { id: string; status: string }) => l.id === c.lease && l.status === 'active'));
  const res = await fetch(`${gw.url}/api/sessions?conn=pg-raw`, { headers: { authorization: `Bearer ${await tokenOf('ci')}` } });
  const rows = (await res.json() as any).sessions as Array<{ leaseId: string; bytesIn: number; bytesOut: number; closeReason: string; endedAt: number }>;
  const s = rows.find((x) => x.leaseId === c.lease);
  assert.ok(s, 'a session row for the psql connection');
  assert.ok(s.bytesIn > 50 && s.bytesOut > 200, JSON.stringify(s));
  assert.ok(s.endedAt);
});

async function tokenOf(home: string): Promise<string> {
  const { readFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  return JSON.parse(readFileSync(join(gw.home(home), 'tokens.json'), 'utf8'))[gw.url].access_token;
}

test('lease expiry closes open connections within a second and refuses new ones; CLI exits 4', async () => {
  const c = await connect('echo', ['--duration', '3s', '--new-lease'], 'dba');
  const lease = JSON.parse((await gw.cli(['leases', '--json'], { home: 'dba' })).stdout).find((l: { id: string }) => l.id === c.lease);
  const expiresAt = Date.parse(lease.expires_at);
  const held = await holdOpen(c.port);
  held.socket.write('ping');
  const closedAt = await held.closed;
  assert.ok(closedAt - expiresAt < 1000, `closed ${closedAt - expiresAt} ms after expiry`);
  assert.ok(closedAt >= expiresAt - 50, 'not closed before expiry');
  const r = await c.live.exited;
  assert.equal(r.code, 4);
  assert.match(r.stderr, /lease expired/);
  const list = JSON.parse((await gw.cli(['leases', '--json'], { home: 'dba' })).stdout);
  assert.equal(list.find((l: { id: string }) => l.id === c.lease).status, 'expired');
});

test('revocation from another CLI process (owner or admin) closes the open tunnel; others are refused', async () => {
  const c = await connect('echo', ['--new-lease']);
  const held = await holdOpen(c.port);
  const other = await gw.cli(['revoke', c.lease], { home: 'dba' });
  assert.equal(other.code, 4, other.stderr);
  assert.match(other.stderr, /no lease "ls_\w+"/);
  const t0 = Date.now();
  const rv = await gw.cli(['revoke', c.lease, '--json'], { home: 'admin' });
  assert.equal(rv.code, 0, rv.stderr);
  assert.equal(JSON.parse(rv.stdout).status, 'revoked');
  const closedAt = await held.closed;
  assert.ok(closedAt - t0 < 3000);
  const r = await c.live.exited;
  assert.equal(r.code, 4);
  assert.match(r.stderr, /lease revoked by admin-bot/);
  assert.equal((await gw.cli(['revoke', c.lease], { home: 'ci' })).code, 4);
});

test('on a terminal (tmux), connect draws a live view; Ctrl-C stops it', async (t) => {
  try { await exec('tmux', ['-V']); } catch { t.skip('tmux is not installed'); return; }
  const session = `hoopconn${process.pid}`;
  const port = await freePort();
  const env = { HOOP_CONFIG_DIR: gw.home('ci'), HOOP_GATEWAY: gw.url, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent' };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}='${v}'`).join(' ');
  await exec('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '20', `env -u CI -u CONTINUOUS_INTEGRATION ${envArgs} '${process.execPath}' '${new URL('../bin/hoopctl', import.meta.url).pathname}' connect echo --port ${port}; sleep 30`]);
  const screen = async () => (await exec('tmux', ['capture-pane', '-p', '-t', session]).catch((e) => ({ stdout: `(tmux: ${e.stderr})` }))).stdout;
  const waitFor = async (re: RegExp) => {
    for (let i = 0; i < 100; i++) { const s = await screen(); if (re.test(s)) return s; await new Promise((r) => setTimeout(r, 100)); }
    throw new Error(`screen never matched ${re}:\n${await screen()}`);
  };
  try {
    await waitFor(new RegExp(`echo \\(tcp\\) on 127\\.0\\.0\\.1:${port}`));
    await waitFor(/connect with: nc 127\.0\.0\.1/);
    await waitFor(/lease ls_\w+: \d+h\d\dm\d\ds left/);
    await pumpThrough(port, 1 << 20);
    await waitFor(/connections: 0 open, 1 total\s+up 1\.0 MB\s+down 1\.0 MB/);
    await exec('tmux', ['send-keys', '-t', session, 'C-c']);
    // the listener is gone once the CLI stopped
    for (let i = 0; i < 50; i++) {
      const refused = await new Promise<boolean>((r) => { const s = net.connect(port, '127.0.0.1'); s.once('connect', () => { s.destroy(); r(false); }); s.once('error', () => r(true)); });
      if (refused) break;
      assert.ok(i < 49, 'connect still listening after Ctrl-C');
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await exec('tmux', ['kill-session', '-t', session]).catch(() => {});
  }
});

test('leases --all is for admins only', async () => {
  const r = await gw.cli(['leases', '--all'], { home: 'ci' });
  assert.equal(r.code, 4);
  assert.match(r.stderr, /--all lists every user's leases and needs an admin group \(sec-admins\)/);
  const a = await gw.cli(['leases', '--all', '--json'], { home: 'admin' });
  assert.equal(a.code, 0, a.stderr);
  assert.ok(new Set(JSON.parse(a.stdout).map((l: { user: string }) => l.user)).size >= 2);
});

test('unknown connection: exit 4 with the names the user may use', async () => {
  const r = await gw.cli(['connect', 'nope'], { home: 'ci' });
  assert.equal(r.code, 4);
  assert.match(r.stderr, /unknown connection "nope"\n\s+connections you may use: pg-raw, echo, echo2, down/);
  const d = await gw.cli(['connect', 'echo2'], { home: 'dba' });
  assert.equal(d.code, 4);
  assert.match(d.stderr, /unknown connection "echo2"/, 'a connection outside your groups is not even named');
});

async function upgrade(conn: string, token: string): Promise<{ status?: number; error?: string; opened?: boolean }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/tunnel/${conn}`, { headers: { authorization: `Bearer ${token}` } });
    ws.on('open', () => { ws.close(); resolve({ opened: true }); });
    ws.on('unexpected-response', (_q, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, error: JSON.parse(body).error }));
    });
    ws.on('error', () => {});
  });
}

test('tunnel tokens: forged, for another connection, expired or for an ended lease are refused at the upgrade', async () => {
  const api = async (home: string, method: string, path: string, body?: unknown) => {
    const r = await fetch(gw.url + path, { method, headers: { authorization: `Bearer ${await tokenOf(home)}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
    return { status: r.status, body: await r.json() as any };
  };
  const lease = (await api('ci', 'POST', '/api/leases', { connection: 'echo', new: true })).body;
  const tt = (await api('ci', 'POST', `/api/leases/${lease.id}/tunnel-token`)).body.token as string;
  assert.deepEqual(await upgrade('echo', tt), { opened: true });
  // the same token on another connection
  assert.deepEqual(await upgrade('echo2', tt), { status: 403, error: 'tunnel_token_wrong_connection' });
  // forged: right shape, wrong key
  const forged = await new SignJWT({ lid: lease.id, conn: 'echo' }).setProtectedHeader({ alg: 'HS256', typ: 'hoop-tunnel+jwt' })
    .setSubject('ci-bot').setIssuer(gw.url).setAudience('hoop-tunnel').setExpirationTime('1m').sign(new Uint8Array(32));
  assert.deepEqual(await upgrade('echo', forged), { status: 401, error: 'tunnel_token_invalid' });
  // the user's IdP token is not a tunnel token
  assert.deepEqual(await upgrade('echo', await tokenOf('ci')), { status: 401, error: 'tunnel_token_invalid' });
  assert.deepEqual(await upgrade('echo', 'garbage'), { status: 401, error: 'tunnel_token_invalid' });
  // another user cannot mint a token for this lease
  assert.equal((await api('dba', 'POST', `/api/leases/${lease.id}/tunnel-token`)).status, 404);
  // after revocation the still-unexpired token is refused
  await api('ci', 'POST', `/api/leases/${lease.id}/revoke`);
  assert.deepEqual(await upgrade('echo', tt), { status: 403, error: 'lease_not_active' });
  assert.equal((await api('ci', 'POST', `/api/leases/${lease.id}/tunnel-token`)).status, 403);
});

test('malformed tunnel traffic: an oversized frame (1009) or an unknown control frame (4007) ends that tunnel only', async () => {
  const api = async (method: string, path: string, body?: unknown) => (await fetch(gw.url + path, { method, headers: { authorization: `Bearer ${await tokenOf('ci')}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined })).json() as any;
  const lease = await api('POST', '/api/leases', { connection: 'echo', new: true });
  const tt = (await api('POST', `/api/leases/${lease.id}/tunnel-token`)).token;
  const open = async () => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/tunnel/echo`, { headers: { authorization: `Bearer ${tt}` } });
    await new Promise((r) => ws.once('open', r));
    return { ws, closed: new Promise<[number, string]>((r) => ws.once('close', (code, reason) => r([code, reason.toString()]))) };
  };
  const big = await open();
  big.ws.send(Buffer.alloc(5 * 1024 * 1024));
  assert.equal((await big.closed)[0], 1009);
  const ctl = await open();
  ctl.ws.send('rm -rf /');
  assert.deepEqual(await ctl.closed, [4007, 'unknown control frame on the tunnel']);
  // the gateway and other tunnels are fine
  const ok = await open();
  ok.ws.send(Buffer.from('still here'));
  const echoed = await new Promise<Buffer>((r) => ok.ws.once('message', (m: Buffer) => r(m)));
  assert.equal(echoed.toString(), 'still here');
  ok.ws.close();
  await new Promise((r) => setTimeout(r, 200));
  const { sessions } = await api('GET', '/api/sessions?conn=echo');
  const mine = sessions.filter((s: { leaseId: string }) => s.leaseId === lease.id);
  assert.equal(mine.length, 3);
  assert.ok(mine.every((s: { endedAt: number | null }) => s.endedAt), JSON.stringify(mine));
});

test('tunnel token expiry: a token past its TTL is refused', async () => {
  const short = await startGatewayProc((c) => {
    (c as Record<string, unknown>).tunnel_token_ttl = '1s';
    c.connections = [{ name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci'] } }];
  });
  try {
    await loginClient(short, 'ci', 'ci-bot', 'ci-secret');
    const { readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const idp = JSON.parse(readFileSync(join(short.home('ci'), 'tokens.json'), 'utf8'))[short.url].access_token;
    const h = { authorization: `Bearer ${idp}`, 'content-type': 'application/json' };
    const lease = (await (await fetch(`${short.url}/api/leases`, { method: 'POST', headers: h, body: JSON.stringify({ connection: 'echo' }) })).json() as any);
    const tt = ((await (await fetch(`${short.url}/api/leases/${lease.id}/tunnel-token`, { method: 'POST', headers: h })).json() as any)).token;
    await new Promise((r) => setTimeout(r, 2100));
    const res = await new Promise<{ status?: number; error?: string }>((resolve) => {
      const ws = new WebSocket(`${short.url.replace('http', 'ws')}/tunnel/echo`, { headers: { authorization: `Bearer ${tt}` } });
      ws.on('open', () => { ws.close(); resolve({}); });
      ws.on('unexpected-response', (_q, r) => { let b = ''; r.on('data', (d) => { b += d; }); r.on('end', () => resolve({ status: r.statusCode, error: JSON.parse(b).error })); });
    });
    assert.deepEqual(res, { status: 401, error: 'tunnel_token_expired' });
    // while the CLI, which fetches tokens ahead of expiry, keeps working across several TTLs
    const port = await freePort();
    const live = short.spawnCli(['connect', 'echo', '--port', String(port)], { home: 'ci' });
    await live.waitFor(/lease (ls_\w+) reused/);
    for (let i = 0; i < 3; i++) {
      const r = await pumpThrough(port, 1000);
      assert.equal(r.received, r.sent);
      await new Promise((res2) => setTimeout(res2, 800));
    }
    live.kill('SIGINT');
    await live.exited;
  } finally {
    await short.stop();
  }
});

test('target down: the client is closed, the gateway stays up, the session records why', async () => {
  const c = await connect('down', ['--new-lease']);
  const held = await holdOpen(c.port);
  await held.closed;
  assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
  c.live.kill('SIGINT');
  await c.live.exited;
  // session rows are written in batches within 50 ms
  let s: { closeReason: string | null } | undefined;
  for (let i = 0; i < 40 && !s?.closeReason; i++) {
    if (i) await new Promise((r) => setTimeout(r, 50));
    const res = await fetch(`${gw.url}/api/sessions?conn=down`, { headers: { authorization: `Bearer ${await tokenOf('ci')}` } });
    [s] = (await res.json() as any).sessions;
  }
  assert.match(s!.closeReason!, /cannot reach target 127\.0\.0\.1:\d+ of connection "down": ECONNREFUSED/);
});

test('100 MB each way arrives byte-identical (hash compared)', async () => {
  const c = await connect('echo');
  try {
    const r = await pumpThrough(c.port, 100 * 1024 * 1024);
    assert.equal(r.sentBytes, 100 * 1024 * 1024);
    assert.equal(r.receivedBytes, r.sentBytes);
    assert.equal(r.received, r.sent);
  } finally {
    c.live.kill('SIGINT');
    await c.live.exited;
  }
});

test('sessions and audit from the CLI: sessions are listed with bytes; the audit log is for admins and names every step', async () => {
  const mine = await gw.cli(['sessions', '--conn', 'pg-raw', '--json'], { home: 'ci' });
  assert.equal(mine.code, 0, mine.stderr);
  const rows = JSON.parse(mine.stdout);
  assert.ok(rows.length >= 1 && rows.every((r: { user: string; connection: string }) => r.user === 'ci-bot' && r.connection === 'pg-raw'));
  assert.ok(rows.some((r: { bytesOut: number }) => r.bytesOut > 0));
  const text = await gw.cli(['sessions'], { home: 'ci' });
  assert.match(text.stdout, /^ID\s+CONNECTION\s+USER\s+STARTED/);
  assert.equal((await gw.cli(['sessions', '--user', 'dba-bot'], { home: 'ci' })).code, 4);
  const denied = await gw.cli(['audit'], { home: 'ci' });
  assert.equal(denied.code, 4);
  assert.match(denied.stderr, /the audit log needs an admin group \(sec-admins\)/);
  const audit = await gw.cli(['audit', '--since', '1h', '--json'], { home: 'admin' });
  assert.equal(audit.code, 0, audit.stderr);
  const types = new Set(JSON.parse(audit.stdout).map((e: { type: string }) => e.type));
  for (const t of ['lease.created', 'lease.expired', 'lease.revoked', 'session.started', 'session.ended']) assert.ok(types.has(t), `audit has ${t}`);
});

test('leases survive a gateway restart', async () => {
  const lease = JSON.parse((await gw.cli(['leases', '--json'], { home: 'ci' })).stdout).find((l: { status: string; connection: string }) => l.status === 'active' && l.connection === 'pg-raw');
  assert.ok(lease);
  const { port, dir } = gw;
  await gw.proc.kill('SIGTERM');
  await new Promise((r) => gw.proc.once('close', r));
  const old = gw;
  gw = await startGatewayProc((c) => {
    c.connections = [{ name: 'pg-raw', type: 'tcp', target: { host: '127.0.0.1', port: pg.port }, access: { groups: ['ci', 'dba'] } }];
  }, { dir, port });
  (gw as { home: typeof old.home }).home = old.home;
  const c = await connect('pg-raw');
  assert.equal(c.lease, lease.id);
  assert.equal(c.how, 'reused');
  const { stdout } = await exec('psql', ['-XAtq', `postgres://app:app-secret@127.0.0.1:${c.port}/app`, '-c', 'select 1']);
  assert.equal(stdout.trim(), '1');
  c.live.kill('SIGINT');
  await c.live.exited;
});
