/**
 * Issue 10 §5 and §6 without PostgreSQL: the tunnel and the API are bounded (WINDOW credit, streams
 * per lease, the framer's allocation, request validation, types without an engine), the store's
 * files are private, and a logged-out token is refused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { chmodSync, mkdtempSync, readFileSync, statSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { freePort } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { MUX_PROTOCOL } from '../src/shared/mux.ts';
import { MessageFramer } from '../src/gateway/engines/postgres/framer.ts';

let gw: GatewayProc;
/** an echo server that counts the connections it accepted (the "target") */
let target: net.Server;
let accepted = 0;
const open = new Set<net.Socket>();

before(async () => {
  target = net.createServer((s) => { accepted++; open.add(s); s.on('close', () => open.delete(s)); s.on('error', () => {}); s.pipe(s); });
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  const port = (target.address() as net.AddressInfo).port;
  gw = await startGatewayProc((c) => {
    c.connections = [
      { name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port }, access: { groups: ['ci', 'dba'] }, lease: { max_connections: 3 } },
    ];
  }, { env: { HOOP_LOG_LEVEL: 'warn' } });
  await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
  await loginClient(gw, 'admin', 'admin-bot', 'admin-secret');
});
after(async () => {
  for (const s of open) s.destroy();
  await gw?.stop();
  target?.close();
});

const token = (home = 'ci') => JSON.parse(readFileSync(join(gw.home(home), 'tokens.json'), 'utf8'))[gw.url].access_token as string;
async function call(method: string, path: string, body?: unknown, home = 'ci', raw?: string) {
  const res = await fetch(gw.url + path, { method, headers: { authorization: `Bearer ${token(home)}`, 'content-type': 'application/json' }, body: raw ?? (body !== undefined ? JSON.stringify(body) : undefined) });
  return { status: res.status, body: await res.json() as any };
}

async function muxSocket(): Promise<WebSocket> {
  const l = (await call('POST', '/api/leases', { connection: 'echo', new: true })).body as { id: string };
  const tt = (await call('POST', `/api/leases/${l.id}/tunnel-token`)).body.token as string;
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/tunnel/echo`, [MUX_PROTOCOL], { headers: { authorization: `Bearer ${tt}` } });
  await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
  return ws;
}
const frame = (type: number, id: number, payload = Buffer.alloc(0)) => {
  const h = Buffer.alloc(9);
  h[0] = type; h.writeUInt32BE(id, 1); h.writeUInt32BE(payload.length, 5);
  return Buffer.concat([h, payload]);
};
const closedWith = (ws: WebSocket) => new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: String(reason) })));

test('mux: a WINDOW granting more credit than the receiver offered closes that WebSocket only', async () => {
  const bad = await muxSocket();
  const good = await muxSocket();
  const closed = closedWith(bad);
  const u32 = Buffer.alloc(4); u32.writeUInt32BE(0xffffffff);
  bad.send(Buffer.concat([frame(1, 1), frame(5, 1, u32)]));
  const c = await closed;
  assert.equal(c.code, 4007);
  assert.match(c.reason, /WINDOW credit beyond the window offered/);
  // the other WebSocket still relays
  const back = new Promise<Buffer>((r) => good.on('message', (m: Buffer) => { if (m[0] === 2) r(m.subarray(9)); }));
  good.send(Buffer.concat([frame(1, 1), frame(2, 1, Buffer.from('still here'))]));
  assert.equal(String(await back), 'still here');
  good.close();
});

test('300 OPEN frames in one message: only lease.max_connections reach the target, the rest are closed with the reason', async () => {
  const before = accepted;
  const ws = await muxSocket();
  const closes: string[] = [];
  ws.on('message', (m: Buffer) => {
    for (let off = 0; off + 9 <= m.length;) {
      const len = m.readUInt32BE(off + 5);
      if (m[off] === 4) closes.push(`${m.readUInt16BE(off + 9)} ${m.subarray(off + 11, off + 9 + len)}`);
      off += 9 + len;
    }
  });
  const opens: Buffer[] = [];
  for (let i = 1; i <= 300; i++) opens.push(frame(1, i));
  ws.send(Buffer.concat(opens));
  for (let i = 0; i < 100 && closes.length < 297; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(closes.length, 297, 'every stream over the limit is closed');
  assert.ok(closes.every((c) => c.startsWith('4008 too many connections')), String(closes.find((c) => !c.startsWith('4008'))));
  // the lease's limit names itself; streams beyond the per-WebSocket bound (mux.ts) are refused there
  assert.ok(closes.some((c) => /^4008 too many connections on lease ls_\w+: 3 open, the limit is 3 \(lease\.max_connections of connection "echo"\)/.test(c)), closes[0]);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(accepted - before <= 3, `the target saw ${accepted - before} connections`);
  ws.close();
  const audit = await call('GET', '/api/audit?since=1h', undefined, 'admin');
  assert.ok(audit.body.events.some((e: { type: string }) => e.type === 'session.refused'), 'refusals are audited');
});

test('hoopctl connect prints why the gateway refused a connection over the limit', async () => {
  const port = await freePort();
  const live = gw.spawnCli(['connect', 'echo', '--port', String(port), '--new-lease'], { home: 'ci' });
  await live.waitFor(/lease ls_\w+ granted/);
  try {
    const socks: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      await new Promise((r) => s.once('connect', r));
      socks.push(s);
    }
    await live.waitFor(/connection refused by gateway: too many connections on lease ls_\w+: 3 open, the limit is 3/, 10_000);
    for (const s of socks) s.destroy();
  } finally {
    live.kill('SIGINT');
    await live.exited;
  }
});

test('framer: a header declaring 60 MB holds only what arrived, and grows as bytes come', () => {
  const got: number[] = [];
  const f = new MessageFramer((_c, _b, s, e) => got.push(e - s));
  const h = Buffer.alloc(5);
  h[0] = 0x51; h.writeInt32BE(60 * 1024 * 1024 + 4, 1);
  f.push(Buffer.concat([h, Buffer.alloc(10)]));
  const cap = () => ((f as unknown as { partial: Buffer | null }).partial?.length ?? 0);
  assert.ok(cap() <= 64 * 1024, `buffered ${cap()} bytes for 15 received`);
  for (let i = 0; i < 10; i++) f.push(Buffer.alloc(100_000));
  assert.ok(cap() <= 4 * 1_000_015, `buffered ${cap()} bytes for 1 MB received`);
  // a whole message, split anywhere, still arrives whole
  const g: Buffer[] = [];
  const f2 = new MessageFramer((_c, b, s, e) => g.push(Buffer.from(b.subarray(s, e))));
  const body = Buffer.alloc(300_000, 7);
  const msg = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 0]), body]);
  msg.writeInt32BE(body.length + 4, 1);
  for (let off = 0; off < msg.length; off += 7777) f2.push(msg.subarray(off, off + 7777));
  assert.equal(g.length, 1);
  assert.ok(g[0].equals(msg));
});

test('API: malformed bodies and query strings are 400s naming the field, on every route', async () => {
  const cases: Array<[string, string, unknown, string, string?]> = [
    ['POST', '/api/leases', { connection: 'echo', duration: { toString: 1 } }, 'duration'],
    ['POST', '/api/leases', { connection: 'echo', reason: { a: 1 } }, 'reason'],
    ['POST', '/api/leases', { connection: 'echo', duration: 'banana' }, 'duration'],
    ['POST', '/api/leases', { connection: ['echo'] }, 'connection'],
    ['POST', '/api/leases', { connection: 'echo', new: 'yes' }, 'new'],
    ['POST', '/api/leases', { connection: 'echo', sneaky: 1 }, 'sneaky'],
    ['POST', '/api/reviews/rv_x/approve', { reason: { toString: 1 } }, 'reason'],
    ['POST', '/api/reviews/rv_x/reject', { reason: 7 }, 'reason'],
    ['POST', '/api/leases/ls_x/revoke', { reason: 'x' }, 'reason'],
    ['GET', '/api/sessions?since=banana', undefined, 'since'],
    ['GET', '/api/reviews?since=banana', undefined, 'since'],
    ['GET', '/api/reviews?mine=maybe', undefined, 'mine'],
    ['GET', '/api/leases?all=2', undefined, 'all'],
    ['GET', '/api/leases/ls_x/wait?timeout_ms=-1', undefined, 'timeout_ms'],
    ['GET', '/api/connections?x=1', undefined, 'x'],
    ['GET', '/api/audit?since=banana', undefined, 'since', 'admin'],
  ];
  for (const [method, path, body, field, home] of cases) {
    const r = await call(method, path, body, home);
    assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.field, field, `${method} ${path}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.message, new RegExp(`"${field}"`));
  }
  const bad = await call('POST', '/api/leases', undefined, 'ci', '[1,2]');
  assert.equal(bad.status, 400);
  // the tunnel path: a bad percent-escape is the client's error
  const res = await new Promise<string>((resolve) => {
    const s = net.connect(gw.port, '127.0.0.1', () => s.write(`GET /tunnel/%E0%A4%A HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer x\r\n\r\n`));
    let out = '';
    s.on('data', (d) => { out += d; });
    s.on('close', () => resolve(out));
  });
  assert.match(res, /^HTTP\/1\.1 400/);
  assert.match(res, /malformed percent-escape/);
  // the CLI: --since banana is refused, not ignored
  const a = await gw.cli(['audit', '--since', 'banana'], { home: 'admin' });
  assert.equal(a.code, 2, a.stderr);
  assert.match(a.stderr, /"since".*duration/);
  assert.equal((await call('GET', '/api/audit?since=1h', undefined, 'admin')).status, 200);
});

test('config: a type without an engine (http) is refused at load, naming the key', async () => {
  await assert.rejects(startGatewayProc((c) => {
    c.connections = [{ name: 'web', type: 'http', target: { port: 80, url: 'http://127.0.0.1/' }, access: { groups: ['eng'] } }];
  }), /connections\[0\]\.type: type http is not supported by this gateway yet \(no engine serves it; a session on it would never end\)/);
});

test('store files: 0600 in a 0700 folder, loose ones tightened at start with a warning; CLI folder 0700, tokens 0600', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-modes-'));
  const data = join(dir, 'data');
  mkdirSync(data, { mode: 0o755 });
  chmodSync(data, 0o755);
  const g1 = await startGatewayProc(() => {}, { dir });
  await g1.stop();
  // a first run made them private
  assert.equal(statSync(data).mode & 0o777, 0o700);
  for (const f of ['hoop.db', 'dev-idp-keys.json']) assert.equal(statSync(join(data, f)).mode & 0o777, 0o600, f);
  // loosened by hand (a restore, a cp -r): the next start tightens them and says so
  chmodSync(data, 0o755);
  chmodSync(join(data, 'hoop.db'), 0o644);
  chmodSync(join(data, 'dev-idp-keys.json'), 0o644);
  const g2 = await startGatewayProc(() => {}, { dir });
  try {
    for (const f of ['hoop.db', 'hoop.db-wal', 'hoop.db-shm', 'dev-idp-keys.json']) assert.equal(statSync(join(data, f)).mode & 0o777, 0o600, f);
    assert.equal(statSync(data).mode & 0o777, 0o700);
    assert.match(g2.logs(), /hoop\.db was accessible to other local users; changed to 600/);
    await loginClient(g2, 'ci', 'ci-bot', 'ci-secret');
    assert.equal(statSync(g2.home('ci')).mode & 0o777, 0o700);
    assert.equal(statSync(join(g2.home('ci'), 'tokens.json')).mode & 0o777, 0o600);
  } finally {
    await g2.stop();
  }
});

test('logout: the gateway refuses the logged-out access token from then on, across a restart', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-logout-'));
  let g = await startGatewayProc(() => {}, { dir });
  try {
    await loginClient(g, 'u', 'ci-bot', 'ci-secret');
    const tok = JSON.parse(readFileSync(join(g.home('u'), 'tokens.json'), 'utf8'))[g.url].access_token as string;
    const whoami = () => fetch(`${g.url}/api/whoami`, { headers: { authorization: `Bearer ${tok}` } });
    assert.equal((await whoami()).status, 200);
    const out = await g.cli(['logout', '--json'], { home: 'u' });
    assert.equal(out.code, 0, out.stderr);
    assert.equal(JSON.parse(out.stdout).gateway_refuses_token, true);
    const r = await whoami();
    assert.equal(r.status, 401);
    assert.equal(((await r.json()) as { error: string }).error, 'token_revoked');
    const port = g.port;
    await g.proc.kill('SIGTERM');
    await new Promise((r) => g.proc.once('close', r));
    g = await startGatewayProc(() => {}, { dir, port });
    assert.equal((await whoami()).status, 401, 'the revocation is in the store');
  } finally {
    await g.stop();
  }
});
