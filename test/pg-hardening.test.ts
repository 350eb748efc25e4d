/**
 * Issue 10, §3/§4/§8: guardrails that do not depend on spelling (deny_functions, max_rows),
 * lease end cancelling what runs, and startup-packet transparency, with real psql /
 * node-postgres against a real server through the in-process engine.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import pg from 'pg';
import { startPostgres, type PgCluster } from './helpers/postgres.ts';
import { startGateway, psqlVia, type TestGateway } from './helpers/pg-engine.ts';
import { startupMessage } from '../src/gateway/engines/postgres/messages.ts';

let db: PgCluster;
before(async () => {
  db = await startPostgres();
  await db.psql(`create table items(id int primary key, v int);`, { db: 'app', user: 'app' });
});
after(async () => { await db?.stop(); });

async function withGateway(opts: Parameters<typeof startGateway>[1], fn: (gw: TestGateway) => Promise<void>): Promise<void> {
  const gw = await startGateway(db, opts);
  try { await fn(gw); } finally { await gw.close(); }
}

function client(gw: TestGateway, extra: Partial<pg.ClientConfig> = {}): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: gw.port, user: 'x', password: 'y', database: 'z', ...extra });
}

const direct = (sql: string) => db.psql(sql, { db: 'app' }).then((s) => s.trim());
const reset = () => direct('truncate items; insert into items select g, g from generate_series(1, 10) g');
const count = () => direct('select count(*) || \',\' || sum(v) from items');

// ---------------------------------------------------------------- deny_functions

test('deny_functions: any spelling, nesting, FROM, bodies and known wrappers are refused; other calls pass', async () => {
  await withGateway({ guardrails: { deny_functions: ['pg_sleep', 'pg_catalog.pg_terminate_backend'] } }, async (gw) => {
    const denied = [
      'select pg_sleep(0)', 'select pg_catalog.pg_sleep(0999)', 'SELECT PG_CATALOG."pg_sleep"(5e-2)', 'select "pg_sleep"(0)',
      'select * from pg_sleep(0)', 'select 1 from rows from (pg_sleep(0))', "select pg_sleep_for('10 minutes')",
      "select pg_catalog.pg_sleep_until(now() + interval '1 second')", 'select coalesce((select pg_sleep(0)::text), \'x\')',
      'with a as (select pg_sleep(0)) select * from a', 'select 1; select pg_sleep(0)',
      'do $$ begin perform pg_sleep(0); end $$', "create function f_sl() returns void language sql as 'select pg_sleep(0)'",
      'create function f_sl2() returns void language plpgsql as $$ begin perform pg_catalog.pg_sleep(0); end $$',
      "select query_to_xml('select pg_sleep(0)', true, true, '')", 'prepare p_sl as select pg_sleep(0)',
      'select pg_terminate_backend(0)', 'select public.pg_terminate_backend(0)',
      'create trigger t_sl before insert on items for each row execute function pg_sleep()',
    ];
    // one psql, one -c per statement: each is refused on its own and the session goes on
    const r = await psqlVia(gw.port, [...denied, 'select 42'], { db: 'app' });
    const refusals = r.stderr.match(/blocked by guardrail deny_functions: the statement calls (pg_sleep|pg_sleep_for|pg_sleep_until|pg_terminate_backend)\(\)/g) ?? [];
    assert.equal(refusals.length, denied.length, r.stderr);
    assert.equal(r.stdout, '42\n');
    // the extended protocol too, with the name as a parameter making no difference
    const c = client(gw);
    await c.connect();
    try {
      await assert.rejects(c.query('select pg_catalog.pg_sleep($1)', [0]), /deny_functions/);
      assert.equal((await c.query('select $1::int + 1 as n', [1])).rows[0].n, 2);
    } finally { await c.end(); }
    const ok = await psqlVia(gw.port, ["select 'pg_sleep(1)' as s", 'select 1 as pg_sleep', 'select now() is not null'], { db: 'app' });
    assert.equal(ok.stdout, 'pg_sleep(1)\n1\nt\n', ok.stderr);
  });
});

test('deny_functions: the verdict cache by shape does not let a second spelling or value through', async () => {
  await withGateway({ guardrails: { deny_functions: ['pg_sleep'], deny: ['drop'] } }, async (gw) => {
    const r = await psqlVia(gw.port, ['select abs(1)', 'select abs(2)', 'select pg_sleep(1)', 'select pg_sleep(2)', 'select abs(3)'], { db: 'app' });
    assert.equal(r.stdout, '1\n2\n3\n');
    assert.equal((r.stderr.match(/deny_functions/g) ?? []).length, 2, r.stderr);
  });
});

// ---------------------------------------------------------------- max_rows

const limits = { guardrails: { max_rows: { delete: 3, update: 3 } } };

test('max_rows: tautologies the analyzer cannot see are rolled back in autocommit (simple protocol)', async () => {
  await reset();
  await withGateway(limits, async (gw) => {
    for (const sql of ['delete from items where id is not null', 'delete from items where random() < 2', 'delete from items where id > -1',
      'with x as (select 1) delete from items where id > 0 returning id', 'update items set v = v + 1 where id > 0',
      'delete from items where id = 1; delete from items where id > 1']) {
      const r = await psqlVia(gw.port, sql, { db: 'app' });
      assert.match(r.stderr, /ERROR: {2}hoopctl: (DELETE|UPDATE) affected \d+ rows, more than guardrails\.max_rows\.(delete|update) = 3 on connection "db": rolled back/, `${sql}: ${r.stderr}`);
      assert.equal(await count(), '10,55', `${sql} left changes behind`);
    }
    // under the limit: the client sees exactly the server's answer
    const ok = await psqlVia(gw.port, ['delete from items where id <= 2 returning id', 'update items set v = 0 where id = 3'], { db: 'app', args: ['-e'] });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^1\n2\n/m);
    assert.equal(await count(), '8,49');
    assert.ok(gw.audits.some((a) => a.type === 'query.blocked' && a.data.rule === 'max_rows'));
  });
});

test('max_rows: the client keeps its transaction state; an error keeps the marker; extended protocol', async () => {
  await reset();
  await withGateway(limits, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      // autocommit, extended protocol
      await assert.rejects(c.query('delete from items where id > $1', [-1]), (e: Error & { code?: string; routine?: string }) => e.code === '42501' && e.routine === 'hoop_max_rows');
      assert.equal(await count(), '10,55');
      // after the gateway's own rollback the client is idle, outside any transaction
      await assert.rejects(c.query('savepoint s'), /can only be used in transaction blocks/);
      assert.equal((await c.query('update items set v = v where id = $1', [1])).rowCount, 1);
      // inside the client's transaction: a savepoint, undone alone; the transaction goes on
      await c.query('begin');
      assert.equal((await c.query('delete from items where id = 10')).rowCount, 1);
      await assert.rejects(c.query('update items set v = -1 where v > 0'), /max_rows\.update = 3/);
      await assert.rejects(c.query({ text: 'delete from items where id < $1', values: [100] }), /max_rows\.delete = 3/);
      assert.equal((await c.query('select count(*)::int as n from items')).rows[0].n, 9);
      await c.query('commit');
      assert.equal(await count(), '9,45');
      // a statement that fails on its own leaves the transaction failed, as without the gateway
      await c.query('begin');
      await assert.rejects(c.query('delete from items where id = 1/0'), /division by zero/);
      await assert.rejects(c.query('select 1'), /current transaction is aborted/);
      await c.query('rollback');
      assert.equal((await c.query('select 1 as one')).rows[0].one, 1);
    } finally { await c.end(); }
  });
});

test('max_rows: DELETEs whose count no tag reports are refused before they run', async () => {
  await reset();
  await withGateway(limits, async (gw) => {
    for (const sql of ['with d as (delete from items returning 1) select count(*) from d', 'explain analyze delete from items',
      'copy (delete from items returning id) to stdout', 'do $$ begin delete from items; end $$',
      'begin; delete from items where id > 0; commit']) {
      const r = await psqlVia(gw.port, sql, { db: 'app' });
      assert.match(r.stderr, /blocked by guardrail max_rows/, `${sql}: ${r.stderr}`);
    }
    assert.equal(await count(), '10,55');
  });
});

// ---------------------------------------------------------------- §8 startup

test('startup: a Terminate pipelined behind the startup message ends the session cleanly', async () => {
  await withGateway({}, async (gw) => {
    const s = net.connect(gw.port, '127.0.0.1');
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    await new Promise((r) => s.once('connect', r));
    s.write(Buffer.concat([startupMessage([['user', 'x'], ['database', 'app']]), Buffer.from([0x58, 0, 0, 0, 4])]));
    await new Promise((r) => s.once('close', r));
    const text = Buffer.concat(got).toString('latin1');
    assert.ok(!text.includes('invalid frontend message'), text);
    assert.ok(text.includes('Z'), 'the login completed before the Terminate');
  });
});

test('startup: GUCs reach the target (options -c, statement_timeout, search_path); policy-relevant ones do not', async () => {
  await direct('create schema if not exists other; create table if not exists other.marker(x int)');
  await withGateway({ guardrails: { deny: ['drop'] } }, async (gw) => {
    const r = await psqlVia(gw.port, ["select current_setting('statement_timeout'), current_setting('work_mem'), current_setting('search_path'), current_setting('idle_in_transaction_session_timeout'), current_setting('standard_conforming_strings'), current_user"], {
      db: 'app', env: { PGOPTIONS: '-c work_mem=7MB -c search_path=other -c standard_conforming_strings=off -c role=postgres -c session_authorization=postgres', PGAPPNAME: 'hard' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '0|7MB|other|0|on|app\n');
    const c = client(gw, { statement_timeout: 1500, idle_in_transaction_session_timeout: 60000, options: '-c lock_timeout=2s' } as Partial<pg.ClientConfig>);
    await c.connect();
    try {
      const row = (await c.query("select current_setting('statement_timeout') st, current_setting('idle_in_transaction_session_timeout') it, current_setting('lock_timeout') lt")).rows[0];
      assert.deepEqual(row, { st: '1500ms', it: '1min', lt: '2s' });
    } finally { await c.end(); }
  });
});
