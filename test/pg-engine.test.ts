/**
 * The PostgreSQL engine with real clients (psql, node-postgres) against a real PostgreSQL 15:
 * handshake, target auth methods and TLS, wrong secret, cancel, lease termination, target loss,
 * malformed input.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startPostgres, type PgCluster } from './helpers/postgres.ts';
import { startGateway, psqlVia, type TestGateway } from './helpers/pg-engine.ts';
import { registeredBackends } from '../src/gateway/engines/postgres/cancel-registry.ts';
import { scramStats } from '../src/gateway/engines/postgres/scram.ts';

let db: PgCluster;
before(async () => {
  db = await startPostgres({ auth: 'scram-sha-256', ssl: true });
  await db.psql(`create table t(id int primary key, name text); insert into t values (1, 'one'), (2, 'two');`, { db: 'app', user: 'app' });
});
after(async () => { await db?.stop(); });

async function withGateway(opts: Parameters<typeof startGateway>[1], fn: (gw: TestGateway) => Promise<void>, cluster = db): Promise<void> {
  const gw = await startGateway(cluster, opts);
  try { await fn(gw); } finally { await gw.close(); }
}

function client(gw: TestGateway, extra: pg.ClientConfig = {}): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: gw.port, user: 'anyone', password: 'ignored', database: 'ignored', ...extra });
}

test('psql runs queries through the engine, logged in with SCRAM as the configured user', async () => {
  await withGateway({ target: { sslmode: 'disable' } }, async (gw) => {
    const r = await psqlVia(gw.port, ['select current_user, current_database()', 'select name from t order by id']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'app|app\none\ntwo\n');
    // errors come back as the server sent them and the session goes on
    const e = await psqlVia(gw.port, ['select 1/0'], { args: ['-v', 'ON_ERROR_STOP=0'] });
    assert.match(e.stderr, /division by zero/);
    const auth = await db.psql(`select count(*) from pg_stat_activity where usename = 'app' and backend_type = 'client backend'`);
    assert.ok(Number(auth) >= 0);
    assert.equal(gw.stats().statements, 3);
    assert.ok(gw.stats().bytesIn > 0 && gw.stats().bytesOut > 0);
  });
});

/** node-postgres over a connection to the gateway opened `waitMs` before it logs in */
async function lateClient(gw: TestGateway, waitMs: number): Promise<pg.Client> {
  const sock = net.connect(gw.port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  await new Promise((r) => setTimeout(r, waitMs));
  // node-postgres connects the stream it is given: this one is connected already
  sock.connect = (() => { process.nextTick(() => sock.emit('connect')); return sock; }) as typeof sock.connect;
  const c = client(gw, { stream: () => sock });
  await c.connect();
  return c;
}

/** how long ago the target backend of a session opened `waitMs` before its login was started (s), and whether it uses TLS */
async function backendAfter(gw: TestGateway, waitMs: number): Promise<{ age: number; ssl: boolean }> {
  const c = await lateClient(gw, waitMs);
  try {
    const { rows } = await c.query('select ssl, extract(epoch from clock_timestamp() - backend_start)::float8 as age from pg_stat_ssl join pg_stat_activity using (pid) where pid = pg_backend_pid()');
    return rows[0];
  } finally {
    await c.end();
  }
}

test('the target is dialled (and TLS settled) when the session starts, before the startup message; an early connection that died meanwhile is replaced', async () => {
  await withGateway({ target: { sslmode: 'require' } }, async (gw) => {
    const b = await backendAfter(gw, 1000);
    assert.equal(b.ssl, true);
    assert.ok(b.age >= 0.9, `the TLS backend was started while the client waited (age ${b.age} s)`);
  });
  await withGateway({ target: { sslmode: 'disable' } }, async (gw) => {
    const early = await backendAfter(gw, 1000);
    assert.ok(early.age >= 0.9, `the backend was started while the client waited (age ${early.age} s)`);
    // the target gives up on a connection without a startup message after authentication_timeout
    await db.psql(`alter system set authentication_timeout = '1s'`);
    await db.psql('select pg_reload_conf()');
    try {
      const fresh = await backendAfter(gw, 2500);
      assert.ok(fresh.age < 0.9, `login dialled again (age ${fresh.age} s)`);
    } finally {
      await db.psql('alter system reset authentication_timeout');
      await db.psql('select pg_reload_conf()');
    }
    assert.equal(gw.sessions.length, 2);
  });
});

test('the client gets the server ParameterStatus values and a BackendKeyData of the gateway, not the backend', async () => {
  await withGateway({}, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      const { rows } = await c.query('select pg_backend_pid() as pid, current_setting($1) as v', ['server_version']);
      const cc = c as unknown as { processID: number; secretKey: number };
      assert.notEqual(cc.processID, rows[0].pid, 'the real backend pid must not leak');
      assert.ok(registeredBackends() >= 1);
      // node-postgres exposes the ParameterStatus it received through its type parser state
      assert.match(String(rows[0].v), /^15\./);
    } finally {
      await c.end();
    }
  });
});

test('TLS to the target: require, and verify-full with the CA file', async () => {
  await withGateway({ target: { sslmode: 'require' } }, async (gw) => {
    const r = await psqlVia(gw.port, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()');
    assert.equal(r.stdout.trim(), 't', r.stderr);
  });
  await withGateway({ target: { sslmode: 'verify-full', ca_file: db.certFile } }, async (gw) => {
    const r = await psqlVia(gw.port, 'select ssl from pg_stat_ssl where pid = pg_backend_pid()');
    assert.equal(r.stdout.trim(), 't', r.stderr);
  });
  // verify-full without the CA: the self-signed certificate is refused
  await withGateway({ target: { sslmode: 'verify-full' } }, async (gw) => {
    const r = await psqlVia(gw.port, 'select 1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /gateway could not log in to the target: TLS to the target failed/);
  });
});

for (const auth of ['md5', 'password'] as const) {
  test(`target auth method ${auth}`, async () => {
    const cluster = await startPostgres({ auth });
    try {
      await withGateway({}, async (gw) => {
        const r = await psqlVia(gw.port, 'select current_user');
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, 'app\n');
      }, cluster);
      const method = await cluster.psql(`select rolpassword like 'md5%' from pg_authid where rolname = 'app'`);
      if (auth === 'md5') assert.equal(method.trim(), 't');
    } finally {
      await cluster.stop();
    }
  });
}

test('SCRAM: the password-derived keys are reused across logins; a wrong secret still fails', async () => {
  await withGateway({}, async (gw) => {
    const before = scramStats.derivations;
    for (let i = 0; i < 3; i++) {
      const r = await psqlVia(gw.port, 'select current_user');
      assert.equal(r.stdout, 'app\n', r.stderr);
    }
    // at most one PBKDF2 for three logins (none when an earlier test already derived them)
    assert.ok(scramStats.derivations - before <= 1, `${scramStats.derivations - before} derivations`);
  });
  await withGateway({ password: 'not-the-secret' }, async (gw) => {
    const r = await psqlVia(gw.port, 'select 1');
    assert.match(r.stderr, /password authentication failed for user "app"/);
  });
});

/**
 * A fake target that runs SCRAM up to the client's proof, then either skips SASLFinal or sends a
 * wrong server signature, and says AuthenticationOk: a server that does not know the verifier.
 */
async function fakeScramTarget(mode: 'skip-final' | 'bad-signature'): Promise<{ port: number; close(): void }> {
  const be = (code: string, body: Buffer) => { const h = Buffer.alloc(5); h.write(code, 0, 'latin1'); h.writeInt32BE(body.length + 4, 1); return Buffer.concat([h, body]); };
  const auth = (n: number, data = Buffer.alloc(0)) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return be('R', Buffer.concat([b, data])); };
  const server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    let stage = 0;
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (stage === 0) {
          if (buf.length < 4 || buf.length < buf.readInt32BE(0)) return;
          buf = buf.subarray(buf.readInt32BE(0));
          s.write(auth(10, Buffer.from('SCRAM-SHA-256\0\0')));
          stage = 1;
          continue;
        }
        if (buf.length < 5 || buf.length < 1 + buf.readInt32BE(1)) return;
        const msg = buf.subarray(5, 1 + buf.readInt32BE(1));
        buf = buf.subarray(1 + buf.readInt32BE(1));
        if (stage === 1) {
          const text = msg.toString('latin1');
          const nonce = /r=([^,]+)$/.exec(text)![1];
          s.write(auth(11, Buffer.from(`r=${nonce}server,s=${randomBytes(16).toString('base64')},i=4096`)));
          stage = 2;
        } else if (stage === 2) {
          if (mode === 'bad-signature') s.write(auth(12, Buffer.from(`v=${randomBytes(32).toString('base64')}`)));
          s.write(Buffer.concat([auth(0), be('Z', Buffer.from('I'))]));
          stage = 3;
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

for (const mode of ['skip-final', 'bad-signature'] as const) {
  test(`SCRAM: a target that cannot prove it knows the password is refused (${mode})`, async () => {
    const fake = await fakeScramTarget(mode);
    try {
      await withGateway({ target: { port: fake.port, sslmode: 'disable' } }, async (gw) => {
        const r = await psqlVia(gw.port, 'select 1');
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, mode === 'skip-final' ? /without proving its identity/ : /server signature does not match/);
      });
    } finally {
      fake.close();
    }
  });
}

test('regression: a client that stops reading for a while still gets every row (the target was not resumed after the client drained)', async () => {
  await withGateway({}, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      const stream = (c as unknown as { connection: { stream: net.Socket } }).connection.stream;
      const q = c.query(`select repeat('x', 1000) as v from generate_series(1, 30000)`);
      // stop reading until the gateway's writes back up (30 MB > socket buffers), then go on
      stream.pause();
      await new Promise((r) => setTimeout(r, 500));
      stream.resume();
      const r = await Promise.race([q, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('stalled')), 20_000))]);
      assert.equal(r.rowCount, 30000);
    } finally {
      await c.end();
    }
  });
});

test('a wrong target secret gives the client a clear error and ends the session cleanly', async () => {
  await withGateway({ password: 'wrong-secret' }, async (gw) => {
    const r = await psqlVia(gw.port, 'select 1');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /gateway could not log in to the target: password authentication failed for user "app"/);
    await Promise.all(gw.sessions.map((s) => s.done));
    assert.ok(gw.audits.some((a) => a.type === 'session.target_login_failed'));
  });
});

test('the database name is the configured one unless target.allow_client_database', async () => {
  await db.psql(`create database other owner app`).catch(() => undefined);
  await withGateway({}, async (gw) => {
    const r = await psqlVia(gw.port, 'select current_database()', { db: 'other' });
    assert.equal(r.stdout, 'app\n', r.stderr);
  });
  await withGateway({ target: { allow_client_database: true } }, async (gw) => {
    const r = await psqlVia(gw.port, 'select current_database()', { db: 'other' });
    assert.equal(r.stdout, 'other\n', r.stderr);
  });
});

test('a cancel request (new connection, gateway key) cancels a running pg_sleep', async () => {
  await withGateway({}, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      const started = Date.now();
      const q = c.query('select pg_sleep(30)');
      await new Promise((r) => setTimeout(r, 300));
      (client(gw) as unknown as { cancel(c: pg.Client, q: pg.Query): void }).cancel(c, (c as unknown as { activeQuery: unknown }).activeQuery as pg.Query);
      await assert.rejects(q, /canceling statement due to user request/);
      assert.ok(Date.now() - started < 10_000);
      // the connection is still usable
      assert.equal((await c.query('select 2 as x')).rows[0].x, 2);
    } finally {
      await c.end();
    }
  });
});

test('Ctrl-C in psql cancels pg_sleep through the gateway', async () => {
  await withGateway({}, async (gw) => {
    const child = spawn('psql', ['-XAtw', '-h', '127.0.0.1', '-p', String(gw.port), '-U', 'x', '-c', 'select pg_sleep(30)'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const started = Date.now();
    await new Promise((r) => setTimeout(r, 1000));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.on('close', r));
    assert.ok(Date.now() - started < 10_000);
    assert.notEqual(code, 0);
    assert.match(stderr, /canceling statement due to user request/);
  });
});

test('a cancel request with an unknown key cancels nothing', async () => {
  await withGateway({}, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      const q = c.query('select pg_sleep(1.5) as done');
      const s = net.connect(gw.port, '127.0.0.1');
      await new Promise((r) => s.once('connect', r));
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0); b.writeInt32BE(80877102, 4); b.writeInt32BE(12345, 8); b.writeInt32BE(678, 12);
      s.end(b);
      const { rows } = await q;
      assert.equal(rows.length, 1);
    } finally {
      await c.end();
    }
  });
});

test('terminate() on lease end sends FATAL 57P01 with the reason', async () => {
  await withGateway({}, async (gw) => {
    const c = client(gw);
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    gw.sessions[0].engine.terminate('lease expired');
    await gw.sessions[0].done;
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(errors.some((e) => /lease expired/.test(e.message) && (e as unknown as { code: string }).code === '57P01'), String(errors));
    await c.end().catch(() => undefined);
  });
});

test('the target going away mid-session gives the client an error and closes', async () => {
  await withGateway({}, async (gw) => {
    const c = client(gw);
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    await c.query(`set application_name = 'doomed'`);
    await db.psql(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'doomed'`);
    await gw.sessions[0].done;
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(errors.length > 0 || (await c.query('select 1').then(() => false, () => true)));
    await c.end().catch(() => undefined);
  });
});

test('malformed and random client input gets an error or a close, never a crash', async () => {
  await withGateway({}, async (gw) => {
    const send = async (bytes: Buffer[], afterStartup: boolean, waitMs = 1500): Promise<Buffer> => {
      const s = net.connect(gw.port, '127.0.0.1');
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.on('error', () => undefined);
      await new Promise((r) => s.once('connect', r));
      if (afterStartup) {
        const p = Buffer.from('user\0x\0database\0y\0\0');
        const st = Buffer.alloc(8); st.writeInt32BE(8 + p.length, 0); st.writeInt32BE(196608, 4);
        s.write(Buffer.concat([st, p]));
        await new Promise((r) => setTimeout(r, 150));
      }
      for (const b of bytes) s.write(b);
      await new Promise<void>((r) => { s.once('close', () => r()); setTimeout(() => { s.destroy(); r(); }, waitMs); });
      return Buffer.concat(got);
    };
    // oversized message: FATAL 08P01 and close
    const huge = Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff]);
    const out = await send([huge], true);
    assert.match(out.toString('latin1'), /08P01/);
    assert.match(out.toString('latin1'), /exceeds the limit/);
    // bad startup packet
    assert.match((await send([Buffer.from([0, 0, 0, 8, 0, 9, 0, 0])], false)).toString('latin1'), /unsupported frontend protocol/);
    // random garbage, before and after startup
    for (let i = 0; i < 20; i++) await send([randomBytes(1 + (i * 37) % 300)], i % 2 === 0, 200);
    // a malformed Bind the framer accepts but the reader rejects
    const bind = Buffer.from([0x42, 0, 0, 0, 7, 0x61, 0x62, 0x63]);
    assert.match((await send([bind], true)).toString('latin1'), /08P01/);
    // still serving
    const r = await psqlVia(gw.port, 'select 42');
    assert.equal(r.stdout, '42\n', r.stderr);
  });
});

test('GSSENCRequest and SSLRequest are answered N; a client demanding SSL is refused by itself', async () => {
  await withGateway({}, async (gw) => {
    const r1 = await psqlVia(gw.port, 'select 1', { env: { PGGSSENCMODE: 'prefer', PGSSLMODE: 'prefer' } });
    assert.equal(r1.stdout, '1\n', r1.stderr);
    const r2 = await psqlVia(gw.port, 'select 1', { env: { PGSSLMODE: 'require' } });
    assert.notEqual(r2.code, 0);
  });
});
