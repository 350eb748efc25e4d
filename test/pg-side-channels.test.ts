/**
 * Issue 10 §1-2 regressions, real PostgreSQL through the engine with psql and node-postgres:
 * a value derived from a masked column never reaches the client (or the recording) through an
 * ErrorResponse, NoticeResponse, NotificationResponse or ParameterStatus, nor through the
 * catalog statistics; and the credential floor refuses every change of the gateway's own login,
 * on every connection, whatever its configuration.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type PgCluster } from './helpers/postgres.ts';
import { startGateway, psqlVia, type TestGateway } from './helpers/pg-engine.ts';

const EMAIL = 'alice.secret@example.com';
const SSN = '123-45-6789';
const LOCAL = 'alice.secret';
// no detector recognises it: only lineage protects it
const CODE = 'XK4471ZZQ';

let db: PgCluster;
before(async () => {
  db = await startPostgres();
  await db.psql(`
    create table customers(id int primary key, email text, ssn text, name text, code text);
    insert into customers values (1, '${EMAIL}', '${SSN}', 'Alice', '${CODE}'), (2, 'carol.private@example.net', '987-65-4321', 'Carol', 'QQ9182WW');
    create view contacts as select id, email as address from customers;
    create function leak_notify() returns void language plpgsql as $$ begin perform pg_notify('chan', (select email from customers where id = 1)); end $$;
    create function set_app() returns text language sql as $$ select set_config('application_name', (select email from customers where id = 1), false) $$;
    analyze customers;`, { db: 'app', user: 'app' });
  await db.psql(`create role bystander login password 'b'`);
});
after(async () => { await db?.stop(); });

const masking = { columns: ['email', '*ssn*', 'code'], detectors: ['email', 'ssn', 'credit_card'] };

async function withGateway(opts: Parameters<typeof startGateway>[1], fn: (gw: TestGateway) => Promise<void>): Promise<void> {
  const gw = await startGateway(db, opts);
  try { await fn(gw); } finally { await gw.close(); }
}

async function withClient<T>(gw: TestGateway, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ host: '127.0.0.1', port: gw.port, user: 'x', password: 'y', database: 'z' });
  await c.connect();
  try { return await fn(c); } finally { await c.end().catch(() => {}); }
}

/** nothing of the raw values: not the address, not its local part, not the SSN's digits */
function assertClean(text: string, where: string): void {
  for (const raw of [EMAIL, LOCAL, 'carol.private', SSN, '123456789', 'lice.secre', CODE, 'QQ9182WW', '4471']) assert.ok(!text.includes(raw), `${where} leaks ${raw}: ${text.slice(0, 400)}`);
}

async function errorOf(c: pg.Client, sql: string): Promise<pg.DatabaseError> {
  try { await c.query(sql); } catch (err) { return err as pg.DatabaseError; }
  assert.fail(`expected an error from ${sql}`);
}

test('errors of statements that touch a masked column are masked as strongly as a result, SQLSTATE kept', async () => {
  await withGateway({ masking }, async (gw) => {
    await withClient(gw, async (c) => {
      for (const sql of [
        `select cast(email || '1' as int) from customers`,
        `select (c.email || 'x')::int from customers c`,
        `select c::text::int from customers c`, // whole-row reference
        `select address::int from contacts`, // a view
        `with x as (select email as e from customers) select e::numeric from x`,
        `select (select ssn from customers where id = 1)::int`,
        `select replace(ssn, '-', '')::date from customers`,
        `select x::int from (select * from customers) s(a, x)`, // star behind a column alias list
        `select 1 / 0 from customers where email::int > 0`,
        `select (email || '<')::xml from customers`,
        `select code::int from customers`,
        `select to_date(code, 'YYYY') from customers`,
        `select email::json from customers`,
      ]) {
        const err = await errorOf(c, sql);
        assertClean(`${err.message} ${err.detail ?? ''} ${err.hint ?? ''} ${err.where ?? ''}`, sql);
        assert.ok(err.code && err.code !== '42501', `${sql}: the server's SQLSTATE is kept (${err.code})`);
        assert.ok(!/[a-z]\*+@/.test(err.message), `${sql}: no first character kept as detectors do: ${err.message}`);
      }
      const e = await errorOf(c, `select cast(email || '1' as int) from customers`);
      assert.equal(e.code, '22P02');
      assert.match(e.message, /^invalid input syntax for type integer: "\*+\.\*+@\*+\.\*+"$/);
      // the session goes on, and an untouched statement's error is not starred
      const plain = await errorOf(c, `select 'abc'::int`);
      assert.match(plain.message, /"abc"/);
    });
    const recorded = JSON.stringify(gw.events);
    assertClean(recorded, 'the recording');
  });
});

test('notices from DO blocks reading masked columns are masked; untouched notices pass', async () => {
  await withGateway({ masking }, async (gw) => {
    await withClient(gw, async (c) => {
      const notices: string[] = [];
      c.on('notice', (n) => notices.push(`${n.message} ${n.detail ?? ''} ${n.hint ?? ''} ${n.where ?? ''}`));
      await c.query(`do $$ declare r record; begin for r in select * from customers loop raise notice 'row %', r.email; end loop; end $$`);
      await c.query(`do $$ declare v text; begin select ssn into v from customers where id = 1; raise notice 'x' using detail = v, hint = v; end $$`);
      await c.query(`do $$ begin raise warning '%', (select c from customers c where id = 1); end $$`);
      const err = await errorOf(c, `do $$ begin raise exception 'gotcha %', (select email from customers limit 1) using errcode = '22000'; end $$`);
      assert.equal(err.code, '22000');
      assertClean(err.message, 'RAISE EXCEPTION');
      await c.query(`do $$ begin raise notice 'plain 12345 bob'; end $$`);
      assert.equal(notices.length, 5, notices.join('\n')); // two rows, one, one, plain
      for (const n of notices.slice(0, 4)) assertClean(n, 'notice');
      assert.match(notices[4], /plain 12345 bob/);
    });
  });
});

test('side-channel functions on masked values are refused; our own notifications and ParameterStatus are masked', async () => {
  await withGateway({ masking }, async (gw) => {
    await withClient(gw, async (c) => {
      for (const sql of [
        `select pg_notify('chan', email) from customers`,
        `select pg_notify('chan', x) from (select upper(email) x from customers) s`,
        `select set_config('application_name', email, false) from customers`,
        `select pg_catalog.set_config('my.v', (select ssn from customers limit 1), false)`,
        `select pg_notify('chan', c::text) from customers c`,
        `do $$ declare v text; begin select email into v from customers limit 1; perform pg_notify('chan', v); end $$`,
        `select setval('s', replace(ssn, '-', '')::bigint) from customers`,
      ]) {
        const err = await errorOf(c, sql);
        assert.equal(err.code, '42501', sql);
        assert.match(err.message, /masked column/, sql);
      }
      // a function the gateway cannot see into: the statement touches a masked column, so the
      // notification our own backend sends is masked entirely
      const got: string[] = [];
      c.on('notification', (n) => got.push(n.payload ?? ''));
      await c.query('listen chan');
      await c.query(`select leak_notify(), email from customers where id = 1`);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(got.length, 1);
      assertClean(got[0], 'notification');
      assert.match(got[0], /^\*+\.\*+@\*+\.\*+$/);
      // ParameterStatus: a value reported after set_config in a function goes through the detectors
      const params: string[] = [];
      (c as unknown as { connection: { on(e: string, f: (m: { parameterName: string; parameterValue: string }) => void): void } }).connection
        .on('parameterStatus', (m) => params.push(`${m.parameterName}=${m.parameterValue}`));
      await c.query('select set_app()');
      assert.ok(params.some((p) => p.startsWith('application_name=')), params.join(','));
      for (const p of params) assertClean(p, 'ParameterStatus');
      // protocol parameters pass untouched
      await c.query(`set datestyle = 'ISO, DMY'`);
      assert.ok(params.includes('DateStyle=ISO, DMY'), params.join(','));
    });
  });
});

test('catalog statistics do not expose masked columns', async () => {
  await withGateway({ masking }, async (gw) => {
    await withClient(gw, async (c) => {
      for (const sql of [
        `select most_common_vals::text, histogram_bounds::text from pg_stats where tablename = 'customers'`,
        `select * from pg_catalog."pg_stats" where attname = 'email'`,
        `select s.histogram_bounds::text as h from pg_stats s`,
        `select row_to_json(s)::text from pg_stats s where tablename = 'customers'`,
        `select array_to_string(histogram_bounds, ',') from pg_stats`,
        `select x from (select histogram_bounds::text x from pg_stats) q`,
        `select attname, most_common_vals, histogram_bounds from pg_stats where attname = 'code'`,
      ]) {
        const r = await c.query(sql);
        assertClean(JSON.stringify(r.rows), sql);
      }
      const n = await c.query(`select attname, n_distinct from pg_stats where tablename = 'customers' and attname = 'email'`);
      assert.deepEqual(n.rows.map((r) => r.attname), ['email'], 'the other statistics stay readable');
    });
  });
});

test('credential floor: no statement changes the gateway login, on any connection', async () => {
  // a connection with no guardrails and no masking: the floor is built in
  for (const opts of [{}, { masking }, { guardrails: { deny: ['drop'] } }]) {
    await withGateway(opts, async (gw) => {
      const refused = [
        `ALTER ROLE CURRENT_USER PASSWORD 'x'`,
        `alter user app password 'SCRAM-SHA-256$4096:abc'`,
        `ALTER USER "app" VALID UNTIL 'infinity'`,
        `alter role session_user with nologin`,
        `alter role current_role rename to other`,
        `alter role app set search_path = public`,
        `alter role all set work_mem = '8MB'`,
        `alter role app in database app reset all`,
        `grant bystander to current_user`,
        `revoke bystander from app`,
        `alter group bystander add user app`,
        `create role sidekick role app`,
        `select 1; alter role current_user password 'x'`,
        `do $$ begin alter role current_user password 'x'; end $$`,
        `do $$ begin execute 'alter role app password ''x'''; end $$`,
        `do $$ begin execute format('alter role %I password %L', current_user, 'x'); end $$`,
        `create function f() returns void language plpgsql as $$ begin alter user app password 'x'; end $$`,
        `create function g() returns void language sql as 'alter role app valid until ''2000-01-01'''`,
        `update pg_authid set rolpassword = null where rolname = 'app'`,
      ];
      for (const sql of refused) {
        const r = await psqlVia(gw.port, sql, { db: 'app' });
        assert.match(r.stderr, /ERROR: {2}hoopctl: blocked: .*(gateway's own database login|cannot be shown|may change the gateway's own login)/, `${JSON.stringify(opts)} ${sql}: ${r.stderr}`);
      }
      // extended protocol (a named statement is always Parse/Bind/Execute)
      await withClient(gw, async (c) => {
        const err = await errorOf(c, { name: 'pw', text: `alter user app password 'x'` } as unknown as string);
        assert.equal(err.code, '42501');
        assert.equal((await c.query('select 1 as one')).rows[0].one, 1, 'the session goes on');
      });
      // another role's password, and statements merely mentioning the words, are not the floor's business
      const ok = await psqlVia(gw.port, [`alter role bystander password 'b2'`, `select 'alter role current_user password' as t`, `alter role bystander password 'b'`], { db: 'app' });
      assert.doesNotMatch(ok.stderr, /hoopctl/, ok.stderr);
    });
  }
  // the gateway's password still opens the database, and nothing else was granted
  assert.equal((await db.psql('select 1', { db: 'app', user: 'app', password: 'app-secret' })).trim(), '1');
  assert.equal((await db.psql(`select count(*) from pg_auth_members m join pg_roles r on r.oid = m.member where r.rolname = 'app'`)).trim(), '0');
});
