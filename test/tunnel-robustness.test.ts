/**
 * Tunnels under stress: keepalive pings keep idle tunnels alive, backpressure bounds memory when
 * one side stops reading (both directions), and the whole path works over TLS (wss://).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync, mkdtempSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { freePort } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { echoServer, pumpThrough } from './helpers/net.ts';

let gw: GatewayProc;
let echo: Awaited<ReturnType<typeof echoServer>>;
let sink: net.Server;      // accepts and never reads
let source: net.Server;    // writes as fast as it can
const held = new Set<net.Socket>();

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

async function listen(handler: (s: net.Socket) => void): Promise<net.Server> {
  const srv = net.createServer((s) => { held.add(s); s.on('error', () => {}); handler(s); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return srv;
}
const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;

before(async () => {
  echo = await echoServer();
  sink = await listen((s) => s.pause());
  const chunk = Buffer.alloc(1 << 20, 7);
  source = await listen((s) => {
    const pump = () => { while (!s.destroyed && s.write(chunk)); };
    s.on('drain', pump);
    pump();
  });
  gw = await startGatewayProc((c) => {
    (c as Record<string, unknown>).tunnel_keepalive = '1s';
    c.connections = [
      { name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci'] } },
      { name: 'sink', type: 'tcp', target: { host: '127.0.0.1', port: portOf(sink) }, access: { groups: ['ci'] } },
      { name: 'source', type: 'tcp', target: { host: '127.0.0.1', port: portOf(source) }, access: { groups: ['ci'] } },
    ];
  }, { env: { HOOP_LOG_LEVEL: 'warn' } });
  await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
});
after(async () => {
  for (const s of held) s.destroy();
  await gw?.stop();
  await echo?.close();
  sink?.close();
  source?.close();
});

async function connect(conn: string) {
  const port = await freePort();
  const live = gw.spawnCli(['connect', conn, '--port', String(port)], { home: 'ci' });
  await live.waitFor(/lease ls_\w+ (granted|reused)/);
  return { live, port };
}

test('keepalive: the gateway pings tunnels at tunnel_keepalive, and an idle tunnel keeps working', async () => {
  const token = JSON.parse(readFileSync(join(gw.home('ci'), 'tokens.json'), 'utf8'))[gw.url].access_token;
  const h = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const lease = await (await fetch(`${gw.url}/api/leases`, { method: 'POST', headers: h, body: JSON.stringify({ connection: 'echo' }) })).json() as { id: string };
  const tt = (await (await fetch(`${gw.url}/api/leases/${lease.id}/tunnel-token`, { method: 'POST', headers: h })).json() as { token: string }).token;
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/tunnel/echo`, { headers: { authorization: `Bearer ${tt}` } });
  let pings = 0;
  ws.on('ping', () => pings++);
  await new Promise((r) => ws.once('open', r));
  await new Promise((r) => setTimeout(r, 2600));
  assert.ok(pings >= 2, `saw ${pings} pings in 2.6 s`);
  ws.close();

  const c = await connect('echo');
  try {
    const s = net.connect(c.port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    s.write('before');
    await new Promise((r) => s.once('data', r));
    await new Promise((r) => setTimeout(r, 3500)); // several keepalive rounds with no data
    s.write('after');
    const back = await new Promise<Buffer>((r) => s.once('data', r));
    assert.equal(back.toString(), 'after');
    s.destroy();
  } finally {
    c.live.kill('SIGINT');
    await c.live.exited;
  }
});

/**
 * Opens one tunnelled connection on `conn`, runs `drive` on it, and returns how much the gateway
 * and the CLI grew (MB) while it ran.
 */
async function memoryGrowthWhile(conn: string, drive: (s: net.Socket) => Promise<void>): Promise<{ gateway: number; cli: number }> {
  const c = await connect(conn);
  try {
    const gwBefore = rssKb(gw.proc.pid!);
    const cliBefore = rssKb(c.live.proc.pid!);
    const s = net.connect(c.port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    await drive(s);
    const growth = { gateway: (rssKb(gw.proc.pid!) - gwBefore) / 1024, cli: (rssKb(c.live.proc.pid!) - cliBefore) / 1024 };
    s.destroy();
    return growth;
  } finally {
    c.live.kill('SIGINT');
    await c.live.exited;
  }
}

test('backpressure upload: a target that stops reading holds the client back; gateway and CLI memory stay bounded', async () => {
  let accepted = 0;
  const grew = await memoryGrowthWhile('sink', async (s) => {
    const chunk = Buffer.alloc(1 << 20, 1);
    const deadline = Date.now() + 3000;
    // write until the local socket reports a full buffer for 1 s (bounded by the deadline and 1 GB)
    while (Date.now() < deadline && accepted < 1024) {
      accepted++;
      if (s.write(chunk)) continue;
      const drained = await Promise.race([new Promise((r) => s.once('drain', () => r(true))), new Promise((r) => setTimeout(() => r(false), 1000))]);
      if (!drained) break;
    }
  });
  assert.ok(accepted < 200, `the client could push ${accepted} MB into a target that reads nothing`);
  assert.ok(grew.gateway < 64, `gateway grew ${grew.gateway.toFixed(1)} MB`);
  assert.ok(grew.cli < 64, `CLI grew ${grew.cli.toFixed(1)} MB`);
});

test('backpressure download: a client that stops reading holds the target back; memory stays bounded', async () => {
  let resumed = false;
  const grew = await memoryGrowthWhile('source', async (s) => {
    let got = 0;
    let stopped = false;
    s.on('data', (d: Buffer) => { got += d.length; if (!stopped && got > 8 << 20) { stopped = true; s.pause(); } });
    await new Promise((r) => setTimeout(r, 3000));
    // and the stream resumes when the client reads again
    const before = got;
    s.resume();
    await new Promise((r) => setTimeout(r, 300));
    resumed = got > before + (1 << 20);
  });
  assert.ok(grew.gateway < 64, `gateway grew ${grew.gateway.toFixed(1)} MB while the client read nothing`);
  assert.ok(grew.cli < 64, `CLI grew ${grew.cli.toFixed(1)} MB while the client read nothing`);
  assert.ok(resumed, 'data flows again once the client reads');
});

test('TLS: gateway with tls serves https/wss; login, connect and 10 MB round trip work', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const port = await freePort();
  const tls = await startGatewayProc((c) => {
    (c as Record<string, unknown>).tls = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
    (c as Record<string, unknown>).public_url = `https://127.0.0.1:${port}`;
    c.connections = [{ name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci'] } }];
  }, { port, healthUrl: `https://127.0.0.1:${port}`, env: { NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') } });
  const env = { NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') };
  try {
    assert.equal(tls.url, `https://127.0.0.1:${port}`);
    const r = await tls.cli(['login', '--client-credentials'], { home: 'ci', env: { ...env, HOOP_CLIENT_ID: 'ci-bot', HOOP_CLIENT_SECRET: 'ci-secret' } });
    assert.equal(r.code, 0, r.stderr);
    const who = JSON.parse((await tls.cli(['whoami', '--json'], { home: 'ci', env })).stdout);
    assert.equal(who.issuer, `https://127.0.0.1:${port}/oidc`);
    const lp = await freePort();
    const live = tls.spawnCli(['connect', 'echo', '--port', String(lp)], { home: 'ci', env });
    await live.waitFor(/lease ls_\w+ granted/);
    const p = await pumpThrough(lp, 10 << 20);
    assert.equal(p.received, p.sent);
    live.kill('SIGINT');
    await live.exited;
    // without the CA, the CLI refuses the gateway's certificate
    const bad = await tls.cli(['whoami'], { home: 'ci' });
    assert.equal(bad.code, 7);
  } finally {
    await tls.stop();
  }
});
