/**
 * Issue 10 §4 and §8 through the whole product (psql → `hoopctl connect` → WebSocket → gateway
 * → real PostgreSQL): a lease that ends cancels the statement running on the target, so a
 * statement that sleeps and then writes never writes; a client that sends Terminate right
 * behind its startup message is not told its Terminate is an invalid message.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { startPostgres, freePort, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';
import { startupMessage } from '../src/gateway/engines/postgres/messages.ts';

let db: PgCluster;
let gw: GatewayProc;

before(async () => {
  db = await startPostgres();
  await db.psql('create table writes(id int)', { db: 'app', user: 'app' });
  gw = await startGatewayProc((c) => {
    c.connections = [{ name: 'app', type: 'postgres', target: { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' }, access: { groups: ['ci'] } }];
  }, { env: { APP_PW: 'app-secret' } });
  await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
});
after(async () => {
  await gw?.stop();
  await db?.stop();
});

async function connect(): Promise<{ port: number; lease: string; stop(): Promise<void> }> {
  const port = await freePort();
  const c = gw.spawnCli(['connect', 'app', '--port', String(port)], { home: 'ci' });
  await c.waitFor(/Try: psql/);
  const leases = JSON.parse((await gw.cli(['leases', '--json'], { home: 'ci' })).stdout) as Array<{ id: string; status: string }>;
  const lease = leases.find((l) => l.status === 'active')!.id;
  return { port, lease, stop: async () => { c.kill('SIGINT'); await c.exited; } };
}

test('revoke cancels the running statement: a sleep-then-write never writes, and the backend is gone', async () => {
  const c = await connect();
  try {
    const psql = new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile('psql', ['-X', `postgres://x:y@127.0.0.1:${c.port}/app`, '-c', "set application_name = 'sleeper'; select pg_sleep(3); insert into writes values (1)"],
        { env: { ...process.env, PGCONNECT_TIMEOUT: '10' } }, (err, _o, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr: String(stderr) }));
    });
    // wait until the statement runs on the target
    for (let i = 0; i < 100; i++) {
      if ((await db.psql("select count(*) from pg_stat_activity where application_name = 'sleeper' and state = 'active'", { db: 'app' })).trim() === '1') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const rv = await gw.cli(['revoke', c.lease], { home: 'ci' });
    assert.equal(rv.code, 0, rv.stderr);
    const r = await psql;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /revoked|lease/i);
    // well past the sleep: the insert never ran, and no backend of it is left
    await new Promise((r2) => setTimeout(r2, 3500));
    assert.equal((await db.psql('select count(*) from writes', { db: 'app' })).trim(), '0');
    assert.equal((await db.psql("select count(*) from pg_stat_activity where application_name = 'sleeper'", { db: 'app' })).trim(), '0');
  } finally { await c.stop(); }
});

test('a Terminate pipelined behind the startup message, through the tunnel, is a clean goodbye', async () => {
  const c = await connect();
  try {
    for (const [split, ssl] of [[false, false], [true, false], [false, true]]) {
      const s = net.connect(c.port, '127.0.0.1');
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.on('error', () => {});
      await new Promise((r) => s.once('connect', r));
      if (ssl) {
        // as libpq does: SSLRequest, wait for 'N', then the startup message
        s.write(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]));
        await new Promise((r) => s.once('data', r));
      }
      const startup = startupMessage([['user', 'x'], ['database', 'app']]);
      const terminate = Buffer.from([0x58, 0, 0, 0, 4]);
      if (split) { s.write(startup); s.end(terminate); } else s.end(Buffer.concat([startup, terminate]));
      await new Promise((r) => s.once('close', r));
      const text = Buffer.concat(got).toString('latin1');
      assert.ok(!/invalid frontend message/.test(text), text);
    }
  } finally { await c.stop(); }
});
