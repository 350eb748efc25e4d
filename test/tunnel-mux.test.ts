/**
 * The multiplexed tunnel (src/shared/mux.ts), the CLI's default: many TCP connections of one
 * `hoopctl connect` over one WebSocket. Per-stream flow control (a stalled reader holds back only
 * its own connection, and memory stays bounded), malformed frames, the per-connection fallback,
 * and an idle CLI that learns of a revocation through the shared WebSocket.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { WebSocket } from 'ws';
import { freePort } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { echoServer, pumpThrough } from './helpers/net.ts';
import { MUX_PROTOCOL } from '../src/shared/mux.ts';

let gw: GatewayProc;
let echo: Awaited<ReturnType<typeof echoServer>>;

/** a `tcp` connection "echo" to the echo server, for group ci */
const echoConnection = () => ({ name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci'] } });

/** a gateway with the echo connection, and user ci-bot logged in */
async function echoGateway(opts: Parameters<typeof startGatewayProc>[1] = {}, lease?: { default: string; max: string }): Promise<GatewayProc> {
  const g = await startGatewayProc((c) => {
    c.connections = [{ ...echoConnection(), ...(lease ? { lease } : {}) }];
  }, opts);
  await loginClient(g, 'ci', 'ci-bot', 'ci-secret');
  return g;
}

before(async () => {
  echo = await echoServer();
  gw = await echoGateway({}, { default: '30m', max: '1h' });
});
after(async () => { await gw?.stop(); await echo?.close(); });

async function connect(extra: string[] = [], env: NodeJS.ProcessEnv = {}, on: GatewayProc = gw) {
  const port = await freePort();
  const live = on.spawnCli(['connect', 'echo', '--port', String(port), ...extra], { home: 'ci', env });
  const m = await live.waitFor(/lease (ls_\w+) (granted|reused)/);
  return { live, port, lease: m[1] };
}

const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

async function api(method: string, path: string, body?: unknown) {
  const tok = JSON.parse(readFileSync(`${gw.home('ci')}/tokens.json`, 'utf8'))[gw.url].access_token;
  const res = await fetch(gw.url + path, { method, headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined });
  return res.json() as Promise<any>;
}

/** A fresh lease's tunnel token, and a function that opens raw multiplexed WebSockets with it. */
async function rawMux(): Promise<() => Promise<WebSocket>> {
  const l = await api('POST', '/api/leases', { connection: 'echo', new: true }) as { id: string };
  const tt = (await api('POST', `/api/leases/${l.id}/tunnel-token`)).token;
  return async () => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/tunnel/echo`, [MUX_PROTOCOL], { headers: { authorization: `Bearer ${tt}` } });
    await new Promise((r) => ws.once('open', r));
    assert.equal(ws.protocol, MUX_PROTOCOL);
    return ws;
  };
}

test('a connection whose reader stalls holds back only itself: others on the same tunnel flow, memory stays bounded, nothing is lost', async () => {
  const c = await connect(['--new-lease']);
  try {
    // A writes 256 MB into the echo but reads nothing: the echo's answers back up toward A (the
    // windows and the kernel buffers on the way absorb 34-67 MB here before A stalls; loopback
    // receive buffers may grow to 32 MB each)
    const a = net.connect({ port: c.port, host: '127.0.0.1' });
    await new Promise((r) => a.once('connect', r));
    a.pause();
    const total = 256 * 1024 * 1024;
    const chunk = Buffer.alloc(256 * 1024, 7);
    let written = 0;
    let aStalled = false;
    const pump = () => {
      while (written < total) {
        written += chunk.length;
        if (!a.write(chunk)) return a.once('drain', pump);
      }
    };
    pump();
    const rss0 = rssKb(gw.proc.pid!);
    // wait until A's writes stop being taken: backpressure reached A's own socket
    for (let i = 0; i < 100 && !aStalled; i++) {
      const before = written;
      await new Promise((r) => setTimeout(r, 100));
      aStalled = written === before && written < total;
    }
    assert.ok(aStalled, `A's writer never stalled (${written} of ${total} bytes taken)`);
    // B, a second connection over the same tunnel, still round-trips promptly and intact
    const t0 = Date.now();
    const b = await pumpThrough(c.port, 4 * 1024 * 1024);
    assert.equal(b.received, b.sent);
    assert.ok(Date.now() - t0 < 10_000, `B took ${Date.now() - t0} ms`);
    // what the gateway holds for the stalled connection is bounded (windows, not 64 MB)
    const grown = rssKb(gw.proc.pid!) - rss0;
    assert.ok(grown < 48 * 1024, `gateway RSS grew by ${grown} KB while A stalled`);
    // A resumes and gets every byte back
    let got = 0;
    let ok = true;
    const sevens = Buffer.alloc(1 << 20, 7);
    a.on('data', (d: Buffer) => {
      got += d.length;
      for (let off = 0; off < d.length; off += sevens.length) {
        const part = d.subarray(off, off + sevens.length);
        if (!part.equals(sevens.subarray(0, part.length))) ok = false;
      }
      if (got >= total) a.end();
    });
    a.resume();
    await new Promise((r) => a.once('close', r));
    assert.equal(got, total);
    assert.ok(ok, 'A received altered bytes');
  } finally {
    c.live.kill('SIGINT');
    await c.live.exited;
  }
});

test('several connections at once over one tunnel arrive intact and each is its own session', async () => {
  const c = await connect(['--new-lease']);
  try {
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => pumpThrough(c.port, (i + 1) * 512 * 1024)));
    for (const r of results) assert.equal(r.received, r.sent);
  } finally {
    c.live.kill('SIGINT');
    await c.live.exited;
  }
  let mine: { endedAt: number | null }[] = [];
  for (let i = 0; i < 40 && (mine.length < 8 || !mine.every((s) => s.endedAt)); i++) {
    if (i) await new Promise((r) => setTimeout(r, 50));
    mine = (await api('GET', '/api/sessions?conn=echo')).sessions.filter((s: { leaseId: string }) => s.leaseId === c.lease);
  }
  assert.equal(mine.length, 8);
});

test('HOOP_TUNNEL_MUX=0: one WebSocket per connection still works', async () => {
  const c = await connect([], { HOOP_TUNNEL_MUX: '0' });
  try {
    const rs = await Promise.all([pumpThrough(c.port, 3 * 1024 * 1024), pumpThrough(c.port, 1024)]);
    for (const r of rs) assert.equal(r.received, r.sent);
  } finally {
    c.live.kill('SIGINT');
    await c.live.exited;
  }
});

test('an idle connect learns of a revocation through the shared WebSocket and exits 4', async () => {
  const c = await connect(['--new-lease']);
  const r = await pumpThrough(c.port, 1000); // opens the shared WebSocket, then nothing is open
  assert.equal(r.received, r.sent);
  const t0 = Date.now();
  await api('POST', `/api/leases/${c.lease}/revoke`);
  const res = await c.live.exited;
  assert.equal(res.code, 4, res.stdout + res.stderr);
  assert.match(res.stdout + res.stderr, /revoked/i);
  assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
});

/** raw frames: type u8 | id u32 | length u32 | payload */
function frame(type: number, id: number, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h[0] = type;
  h.writeUInt32BE(id, 1);
  h.writeUInt32BE(payload.length, 5);
  return Buffer.concat([h, payload]);
}

test('malformed multiplexed frames end that WebSocket with 4007; the gateway and other tunnels carry on', async () => {
  const openWs = await rawMux();
  const open = async () => {
    const ws = await openWs();
    return { ws, closed: new Promise<[number, string]>((r) => ws.once('close', (code, reason) => r([code, reason.toString()]))) };
  };
  const cases: [string, Buffer | string][] = [
    ['truncated frame header', Buffer.from([2, 0, 0])],
    ['frame longer than its message', frame(2, 1, Buffer.from('abc')).subarray(0, 10)],
    ['unknown frame type 9', frame(9, 1)],
    ['unexpected OPEN frame', Buffer.concat([frame(1, 5), frame(1, 5)])],
    ['text message on a multiplexed tunnel', 'hello'],
  ];
  for (const [why, bytes] of cases) {
    const t = await open();
    t.ws.send(bytes);
    assert.deepEqual(await t.closed, [4007, why]);
  }
  // a well-formed exchange by hand: OPEN, DATA and EOF; the echo's DATA comes back, then CLOSE 1000
  const t = await open();
  const got: Buffer[] = [];
  t.ws.on('message', (m: Buffer) => got.push(m));
  t.ws.send(Buffer.concat([frame(1, 1), frame(2, 1, Buffer.from('still here')), frame(3, 1)]));
  for (let i = 0; i < 50 && !Buffer.concat(got).includes(Buffer.from([4, 0, 0, 0, 1])); i++) await new Promise((r) => setTimeout(r, 20));
  const all = Buffer.concat(got);
  assert.ok(all.includes(Buffer.from('still here')), all.toString('hex'));
  // the echo ended after our EOF, so its side sends only the normal CLOSE (1000) that ends both
  assert.ok(all.includes(frame(4, 1, Buffer.from([0x03, 0xe8]))), all.toString('hex'));
  t.ws.close();
  assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
});

test('a peer that ignores its window is cut off (that stream only, 4007), not buffered without bound', async () => {
  const ws = await (await rawMux())();
  let closed: Buffer | undefined;
  ws.on('message', (m: Buffer) => {
    // look for CLOSE (4) of stream 1 among the frames
    for (let off = 0; off + 9 <= m.length; ) {
      const len = m.readUInt32BE(off + 5);
      if (m[off] === 4 && m.readUInt32BE(off + 1) === 1) closed = m.subarray(off + 9, off + 9 + len);
      off += 9 + len;
    }
  });
  // never credit the echo's answers, and keep sending (up to 256 MB in 512 KB frames: the limit plus
  // what the sockets on the way hold, up to 32 MB per loopback receive buffer)
  ws.send(frame(1, 1));
  const chunk = Buffer.alloc(512 * 1024, 1);
  // (without the limit the stream would queue all of it and never be closed)
  for (let i = 0; i < 512 && !closed; i++) {
    ws.send(frame(2, 1, chunk));
    while (ws.bufferedAmount > 1024 * 1024 && !closed) await new Promise((r) => setTimeout(r, 5));
  }
  for (let i = 0; i < 100 && !closed; i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(closed, 'the stream was not closed');
  assert.equal(closed.readUInt16BE(0), 4007);
  assert.equal(closed.subarray(2).toString(), 'the peer ignored flow control');
  // the WebSocket itself still carries new streams
  const got: Buffer[] = [];
  ws.removeAllListeners('message');
  ws.on('message', (m: Buffer) => got.push(m));
  ws.send(Buffer.concat([frame(1, 2), frame(2, 2, Buffer.from('after'))]));
  for (let i = 0; i < 50 && !Buffer.concat(got).includes(Buffer.from('after')); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(Buffer.concat(got).includes(Buffer.from('after')));
  ws.close();
});

test('a running connect survives a gateway restart: open connections end, new ones ride a new WebSocket', async () => {
  const own = await echoGateway();
  let again: GatewayProc | undefined;
  let live: ReturnType<GatewayProc['spawnCli']> | undefined;
  try {
    const c = await connect([], {}, own);
    live = c.live;
    const { port } = c;
    const first = await pumpThrough(port, 256 * 1024);
    assert.equal(first.received, first.sent);
    const held = net.connect({ port, host: '127.0.0.1' });
    held.on('error', () => {});
    const heldClosed = new Promise((r) => held.once('close', r));
    await new Promise((r) => held.once('connect', r));
    const { port: gwPort, dir } = own;
    own.proc.kill('SIGTERM');
    await new Promise((r) => own.proc.once('close', r));
    await heldClosed; // the open connection ended with its gateway
    // the same state directory and port; the running CLI keeps its login
    again = await startGatewayProc((cfg) => { cfg.connections = [echoConnection()]; }, { dir, port: gwPort });
    const second = await pumpThrough(port, 256 * 1024);
    assert.equal(second.received, second.sent);
    live.kill('SIGINT');
    assert.equal((await live.exited).code, 0);
  } finally {
    if (live?.proc.exitCode === null) live.kill('SIGKILL');
    await again?.stop();
    if (own.proc.exitCode === null) await own.stop();
  }
});

test('against a gateway that does not multiplex (HOOP_TUNNEL_MUX=0 there), the CLI falls back to one WebSocket per connection', async () => {
  const plain = await echoGateway({ env: { HOOP_TUNNEL_MUX: '0' } });
  let live: ReturnType<GatewayProc['spawnCli']> | undefined;
  try {
    const c = await connect([], {}, plain);
    live = c.live;
    const { port } = c;
    const rs = await Promise.all([pumpThrough(port, 1024 * 1024), pumpThrough(port, 1000)]);
    for (const r of rs) assert.equal(r.received, r.sent);
    const more = await pumpThrough(port, 1000);
    assert.equal(more.received, more.sent);
    live.kill('SIGINT');
    const res = await live.exited;
    assert.equal(res.code, 0);
    assert.doesNotMatch(res.stdout + res.stderr, /refused/);
  } finally {
    if (live?.proc.exitCode === null) live.kill('SIGKILL');
    await plain.stop();
  }
});
