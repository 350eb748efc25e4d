/** `hoopctl connect` edges found by trying it (issue 13): a taken port, a clamped duration, a reused lease's new reason. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { echoServer } from './helpers/net.ts';
import { freePort } from './helpers/postgres.ts';

let gw: GatewayProc;
let echo: Awaited<ReturnType<typeof echoServer>>;

before(async () => {
  echo = await echoServer();
  gw = await startGatewayProc((c) => {
    c.connections = [{ name: 'echo', type: 'tcp', target: { host: '127.0.0.1', port: echo.port }, access: { groups: ['ci'] }, lease: { default: '30m', max: '1h' } }];
  });
  await Promise.all([loginClient(gw, 'ci', 'ci-bot', 'ci-secret'), loginClient(gw, 'admin', 'admin-bot', 'admin-secret')]);
});
after(async () => {
  await gw?.stop();
  await echo?.close();
});

const leases = async () => JSON.parse((await gw.cli(['leases', '--json'], { home: 'ci' })).stdout) as Array<{ id: string; status: string; reason: string | null; duration: string }>;

test('connect --port <taken>: exit 2 before any lease is taken', async () => {
  const busy = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => busy.once('listening', r));
  try {
    const port = (busy.address() as net.AddressInfo).port;
    const r = await gw.cli(['connect', 'echo', '--port', String(port)], { home: 'ci' });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is in use; no lease was taken`));
    assert.equal((await leases()).length, 0);
  } finally {
    busy.close();
  }
});

test('a clamped --duration is said; a reused lease takes the new --reason, audited', async () => {
  const port = await freePort();
  const first = gw.spawnCli(['connect', 'echo', '--port', String(port), '--duration', '5h', '--reason', 'INC-1'], { home: 'ci' });
  await first.waitFor(/Try: nc/);
  assert.match(first.stderr(), /--duration 5h is above echo's lease\.max; the lease lasts 1h/);
  first.kill('SIGINT');
  await first.exited;
  const [l] = await leases();
  assert.equal(l.duration, '1h');
  const again = gw.spawnCli(['connect', 'echo', '--port', String(port), '--reason', 'INC-2'], { home: 'ci' });
  await again.waitFor(/Try: nc/);
  assert.match(again.stderr(), new RegExp(`reusing your active lease ${l.id} on echo; its reason is now "INC-2" \\(audited\\)`));
  again.kill('SIGINT');
  await again.exited;
  assert.equal((await leases())[0].reason, 'INC-2');
  const audit = JSON.parse((await gw.cli(['audit', '--json'], { home: 'admin' })).stdout) as Array<{ type: string; leaseId: string; data: { reason: string; previous: string } }>;
  const ev = audit.find((e) => e.type === 'lease.reason_updated' && e.leaseId === l.id);
  assert.deepEqual([ev?.data.reason, ev?.data.previous], ['INC-2', 'INC-1']);
});

test('connect --help names the real default ports', async () => {
  const r = await gw.cli(['connect', '--help']);
  assert.match(r.stdout.replace(/\s+/g, ' '), /postgres 5433, ssh 2222, http 8080, tcp 9000/);
});

test('hoopctl sessions shows live counts for a running session', async () => {
  const port = await freePort();
  const c = gw.spawnCli(['connect', 'echo', '--port', String(port), '--new-lease'], { home: 'ci' });
  await c.waitFor(/Try: nc/);
  const sock = net.connect(port, '127.0.0.1');
  try {
    await new Promise((r) => sock.once('connect', r));
    const echoed = new Promise((r) => sock.once('data', r));
    sock.write('hello');
    await echoed;
    let row: { endedAt: number | null; bytesIn: number; bytesOut: number } | undefined;
    for (let i = 0; i < 100; i++) {
      const rows = JSON.parse((await gw.cli(['sessions', '--json'], { home: 'ci' })).stdout) as Array<{ endedAt: number | null; bytesIn: number; bytesOut: number }>;
      row = rows.find((s) => s.endedAt === null && s.bytesIn > 0);
      if (row) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(row, 'a running session with its bytes so far');
    assert.equal(row.bytesIn, 5);
    assert.equal(row.bytesOut, 5);
  } finally {
    sock.destroy();
    c.kill('SIGINT');
    await c.exited;
  }
});
