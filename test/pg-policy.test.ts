/**
 * Policy in the PostgreSQL data path, with real psql / node-postgres against a real server:
 * guardrails (simple, multi-statement, extended protocol, review), masking (column rules traced
 * through aliases and expressions, detectors, COPY, error details, NOTIFY, binary results) and
 * the recording (masked, capped).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type PgCluster } from './helpers/postgres.ts';
import { startGateway, psqlVia, type TestGateway } from './helpers/pg-engine.ts';

// raw sensitive values: none may reach a client or the recording through a masked connection
const EMAIL = 'alice.secret@example.com';
const CODE = 'XK4471ZZQ';
const SALARY = '918273';
const NOTE_EMAIL = 'bob.hidden@example.org';
const CARD = '4111111111111111';

let db: PgCluster;
before(async () => {
  db = await startPostgres();
  await db.psql(`
    create table customers(id int primary key, email text unique, secret_code text, salary int, note text, card text);
    insert into customers values (1, '${EMAIL}', '${CODE}', ${SALARY}, 'write to ${NOTE_EMAIL} please', '${CARD}'),
                                 (2, 'carol@example.net', 'AB12', 1000, 'nothing here', null);
    create table victims(id int);
    create table big as select g as id, 'row ' || g as label from generate_series(1, 500) g;`, { db: 'app', user: 'app' });
});
after(async () => { await db?.stop(); });

const guardrails = { deny: ['drop', 'delete_without_where', 'truncate'], review: ['update'], deny_patterns: ['pg_read_file'] };
const masking = { columns: ['email', 'secret_code', 'salary'], detectors: ['email', 'credit_card'] };

async function withGateway(opts: Parameters<typeof startGateway>[1], fn: (gw: TestGateway) => Promise<void>): Promise<void> {
  const gw = await startGateway(db, opts);
  try { await fn(gw); } finally { await gw.close(); }
}

function client(gw: TestGateway): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: gw.port, user: 'x', password: 'y', database: 'z' });
}

/** what a column rule leaves of a text value: layout kept, content gone */
const stars = (v: string) => v.replace(/[^\s@.-]/g, '*');

function assertNoRaw(text: string, where: string): void {
  for (const raw of [EMAIL, CODE, SALARY, NOTE_EMAIL, CARD]) assert.ok(!text.includes(raw), `${where} contains raw value ${raw}: ${text.slice(0, 500)}`);
}

// ---------------------------------------------------------------- guardrails

test('a blocked statement in a multi-statement query is not run; the session stays usable', async () => {
  await withGateway({ guardrails }, async (gw) => {
    const r = await psqlVia(gw.port, ['select 1; drop table victims', 'select 42'], { db: 'app' });
    assert.match(r.stderr, /ERROR: {2}hoopctl: blocked by guardrail rule "drop"/);
    assert.equal(r.stdout, '42\n');
    assert.equal((await db.psql(`select to_regclass('victims') is not null`, { db: 'app' })).trim(), 't');
    assert.equal(gw.stats().blocked, 1);
    assert.ok(gw.audits.some((a) => a.type === 'query.blocked' && a.data.rule === 'drop'));
    assert.ok(gw.events.some((e) => e.type === 'query.blocked' && e.rule === 'drop'));
    // the blocked text never went to the target: only the allowed statement was recorded as run
    assert.deepEqual(gw.events.filter((e) => e.type === 'query.completed').map((e) => e.text), ['select 42']);
  });
});

test('blocking keeps the transaction status the server reported', async () => {
  await withGateway({ guardrails }, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      await c.query('begin');
      await c.query('insert into victims values (7)');
      await assert.rejects(c.query('truncate victims'), (e: Error & { code?: string }) => e.code === '42501' && /truncate/.test(e.message));
      // still inside the same transaction: the insert is visible and can be rolled back
      assert.equal((await c.query('select count(*)::int as n from victims where id = 7')).rows[0].n, 1);
      await c.query('rollback');
      assert.equal((await c.query('select count(*)::int as n from victims where id = 7')).rows[0].n, 0);
    } finally {
      await c.end();
    }
  });
});

test('extended protocol: a blocked Parse is answered in order, the pipeline and connection go on', async () => {
  await withGateway({ guardrails }, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      // node-postgres pipelines these: Parse/Bind/Execute/Sync each
      const results = await Promise.allSettled([
        c.query('select $1::int + 1 as x', [1]),
        c.query('select pg_read_file($1)', ['/etc/passwd']),
        c.query({ name: 'dropper', text: 'drop table victims' }),
        c.query('delete from victims where id = $1', [3]),
        c.query('select $1::text as y', ['after']),
      ]);
      assert.equal(results[0].status === 'fulfilled' && results[0].value.rows[0].x, 2);
      assert.ok(results[1].status === 'rejected' && /deny_patterns/.test(String(results[1].reason)), String((results[1] as PromiseRejectedResult).reason));
      assert.ok(results[2].status === 'rejected' && /"drop"/.test(String(results[2].reason)));
      assert.equal(results[3].status, 'fulfilled');
      assert.equal(results[4].status === 'fulfilled' && results[4].value.rows[0].y, 'after');
      assert.equal((await c.query('select 5 as z')).rows[0].z, 5);
      assert.equal(gw.stats().blocked, 2);
    } finally {
      await c.end();
    }
    assert.equal((await db.psql(`select to_regclass('victims') is not null`, { db: 'app' })).trim(), 't');
  });
});

test('review: without a review service the statement is denied, naming the rule', async () => {
  await withGateway({ guardrails }, async (gw) => {
    const r = await psqlVia(gw.port, 'update victims set id = 1');
    assert.match(r.stderr, /guardrail rule "update".*cannot ask for a review/);
  });
});

test('review: the statement is held until approved, and refused when rejected', async () => {
  const asked: string[] = [];
  await withGateway({
    guardrails,
    requestReview: async ({ rule, statement }) => {
      asked.push(`${rule}:${statement}`);
      await new Promise((r) => setTimeout(r, 200));
      const approved = statement.includes('set id = 99');
      return { id: 'r_test', status: approved ? 'approved' : 'rejected', by: 'bob', reason: null };
    },
  }, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      await c.query('insert into victims values (5)');
      const ok = await c.query('update victims set id = 99 where id = 5');
      assert.equal(ok.rowCount, 1);
      await assert.rejects(c.query('update victims set id = 98 where id = 99', []), /rejected in review/);
      await assert.rejects(c.query('update victims set id = 97 where id = $1', [99]), /rejected in review/);
      assert.equal((await c.query('select id from victims where id >= 97')).rows[0].id, 99);
    } finally {
      await c.end();
    }
    assert.equal(asked.length, 3);
  });
});

// ---------------------------------------------------------------- masking

test('masking: by column name, by alias through the table OID, by expression, int column to NULL', async () => {
  await withGateway({ masking }, async (gw) => {
    const r = await psqlVia(gw.port, [
      'select email, secret_code, salary from customers where id = 1',
      'select secret_code as x, salary as pay from customers where id = 1',
      'select reverse(secret_code), lower(email) from customers where id = 1',
      'select c.id, c.secret_code from customers c where id = 1',
      'select id from customers order by id',
      'with c as (select secret_code as x from customers where id = 1) select x, upper(x) from c',
      'select y from (select secret_code as y from customers where id = 1) s',
    ], { db: 'app' });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines[0], `${stars(EMAIL)}|*********|`);
    assert.equal(lines[1], '*********|');
    assert.equal(lines[2], `*********|${stars(EMAIL)}`);
    assert.equal(lines[3], '1|*********');
    assert.deepEqual(lines.slice(4, 6), ['1', '2'], 'plain columns pass unchanged');
    assert.equal(lines[6], '*********|*********');
    assert.equal(lines[7], '*********');
    assertNoRaw(r.stdout + r.stderr, 'psql output');
    assert.equal(gw.stats().masked, 11);
  });
});

test('masking: content detectors on every text value', async () => {
  await withGateway({ masking }, async (gw) => {
    const r = await psqlVia(gw.port, [`select 'x ' || email, note, card from customers where id = 1`, `select 'mail ${NOTE_EMAIL}' as lit`], { db: 'app' });
    assert.equal(r.code, 0, r.stderr);
    assertNoRaw(r.stdout, 'psql output');
    assert.match(r.stdout, /write to \S+ please/);
  });
});

test('masking: COPY TO STDOUT, text and csv', async () => {
  await withGateway({ masking }, async (gw) => {
    const r = await psqlVia(gw.port, ['copy customers to stdout', 'copy (select note, secret_code from customers) to stdout with (format csv)', 'copy customers (id, secret_code) to stdout'], { db: 'app' });
    assert.equal(r.code, 0, r.stderr);
    assertNoRaw(r.stdout, 'COPY output');
    assert.match(r.stdout, /^1\t/m);
    assert.match(r.stdout, /^2\t\*+/m);
  });
});

test('masking: a unique violation does not echo the key value; NOTIFY payloads are masked', async () => {
  await withGateway({ masking }, async (gw) => {
    const r = await psqlVia(gw.port, [`insert into customers(id, email) values (3, '${EMAIL}')`], { db: 'app' });
    assert.match(r.stderr, /duplicate key value violates unique constraint/);
    assert.match(r.stderr, /Key \(email\)=/);
    assertNoRaw(r.stderr, 'error detail');
    const n = await psqlVia(gw.port, ['listen ch', `notify ch, 'payload ${NOTE_EMAIL}'`], { db: 'app' });
    assert.match(n.stdout, /Asynchronous notification "ch" with payload "payload .*" received/);
    assertNoRaw(n.stdout, 'notification');
  });
});

test('masking over the extended protocol, text and binary results, prepared statements', async () => {
  await withGateway({ masking }, async (gw) => {
    const c = client(gw);
    await c.connect();
    try {
      const a = await c.query('select email as e, secret_code, salary, note from customers where id = $1', [1]);
      assert.equal(a.rows[0].e, stars(EMAIL));
      assert.equal(a.rows[0].secret_code, '*********');
      assert.equal(a.rows[0].salary, null);
      const b = await c.query({ name: 'p1', text: 'select secret_code, salary, id from customers where id = $1', values: [1], binary: true } as pg.QueryConfig);
      // binary-format values of a masked column become NULL, never raw bytes
      assert.equal(b.rows[0].salary, null);
      assert.equal(b.rows[0].secret_code, null);
      const again = await c.query({ name: 'p1', text: 'select secret_code, salary, id from customers where id = $1', values: [1] });
      assert.equal(again.rows[0].secret_code, '*********');
      assert.equal(again.rows[0].id, 1);
      assertNoRaw(JSON.stringify([a.rows, b.rows, again.rows]), 'node-postgres rows');
    } finally {
      await c.end();
    }
  });
});

test('masking: one shared catalog connection for all sessions, reloaded after DDL through the gateway', async () => {
  await db.psql(`create table renames(id int, secret_code text); insert into renames values (1, 'RAWVALUE1');
                 create table renamed_outside(id int, contact text); insert into renamed_outside values (1, 'RAWVALUE2');`, { db: 'app', user: 'app' });
  await withGateway({ masking }, async (gw) => {
    for (let i = 0; i < 3; i++) {
      const r = await psqlVia(gw.port, 'select secret_code as x from renames', { db: 'app' });
      assert.equal(r.stdout, '*********\n', r.stderr);
    }
    const sides = await db.psql(`select count(*) from pg_stat_activity where application_name = 'hoopctl-catalog'`);
    assert.equal(sides.trim(), '1', 'one side connection for three sessions');

    // renamed through the gateway: the catalog is reloaded once the change is committed
    const alter = await psqlVia(gw.port, 'alter table renames rename column secret_code to plain_code', { db: 'app' });
    assert.equal(alter.code, 0, alter.stderr);
    let out = '';
    for (let i = 0; i < 40 && out !== 'RAWVALUE1\n'; i++) {
      out = (await psqlVia(gw.port, 'select plain_code as y from renames', { db: 'app' })).stdout;
      if (out !== 'RAWVALUE1\n') await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(out, 'RAWVALUE1\n', 'the renamed column is plain after the reload');

    // renamed behind the gateway's back (the catalog still has the old name): an alias of the
    // now-masked name is caught by the statement's own SQL
    assert.equal((await psqlVia(gw.port, 'select contact as c from renamed_outside', { db: 'app' })).stdout, 'RAWVALUE2\n');
    await db.psql('alter table renamed_outside rename column contact to secret_code', { db: 'app', user: 'app' });
    const r = await psqlVia(gw.port, 'select secret_code as c from renamed_outside', { db: 'app' });
    assert.equal(r.stdout, '*********\n', r.stderr);
  });
});

// ---------------------------------------------------------------- recording

test('a long statement is recorded once it runs long, and one cut off by the session end is still recorded', async () => {
  await withGateway({}, async (gw) => {
    const c = client(gw);
    await c.connect();
    const q = c.query('select pg_sleep(1.5)');
    q.catch(() => undefined); // awaited below; a failure must not surface as an unhandled rejection first
    // announced while still running (ANNOUNCE_MS = 500)
    const deadline = Date.now() + 5000;
    while (!gw.events.some((e) => e.type === 'query.started') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const started = gw.events.find((e) => e.type === 'query.started');
    assert.equal(started?.text, 'select pg_sleep(1.5)');
    assert.ok(!gw.events.some((e) => e.type === 'query.completed' && e.text === 'select pg_sleep(1.5)'), 'announced before it completed');
    await q;
    const done = gw.events.find((e) => e.type === 'query.completed' && e.text === 'select pg_sleep(1.5)');
    assert.ok(done && (done.durationMs as number) >= 1500 && done.startedAt === started.startedAt, JSON.stringify(done));

    // the client goes away in the middle of a statement: the statement is recorded as cut off
    c.on('error', () => undefined);
    const cut = c.query('select pg_sleep(30)').catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    await cut;
    await gw.sessions[0].done;
    const cutOff = gw.events.find((e) => e.type === 'query.completed' && e.text === 'select pg_sleep(30)');
    assert.match(String(cutOff?.error), /session ended before the statement completed/);
  });
});


test('the recording holds masked data only, with statement and session row caps', async () => {
  await withGateway({ masking, guardrails, recording: { results: true, max_rows_per_statement: 3, max_rows_per_session: 6 } }, async (gw) => {
    const r = await psqlVia(gw.port, [
      'select * from customers order by id',
      `select * from customers where email = '${EMAIL}'`,
      'select id, label from big order by id',
      'select id from big where id <= 2',
      `drop table customers`,
    ], { db: 'app' });
    assertNoRaw(r.stdout + r.stderr, 'client output');
    const c = client(gw);
    await c.connect();
    // parameters are recorded through the text masker (detectors)
    await c.query('select note from customers where email = $1', [EMAIL]);
    await c.end();
    const events = JSON.stringify(gw.events);
    assertNoRaw(events, 'recorded events');
    // one event per statement; its results (one per statement of a simple query) ride along
    const results = gw.events.filter((e) => e.type === 'query.completed').flatMap((e) => (e.results ?? []) as Array<Record<string, unknown>>);
    assert.deepEqual(results[0].columns, ['id', 'email', 'secret_code', 'salary', 'note', 'card']);
    assert.equal((results[0].rows as unknown[]).length, 2);
    const bigRows = results.find((e) => (e.columns as string[]).includes('label'))!;
    assert.equal(bigRows.count, 500);
    assert.equal((bigRows.rows as unknown[]).length, 3);
    assert.equal(bigRows.truncated, true);
    // the session cap (6 = 2 + 1 + 3) is reached: later rows are counted, not kept
    const capped = results[3];
    assert.equal(capped.count, 2);
    assert.deepEqual(capped.rows, []);
    assert.equal(capped.truncated, true);
    // another connection is another session with its own cap
    assert.equal((results[4].rows as unknown[]).length, 1);
    const completed = gw.events.filter((e) => e.type === 'query.completed');
    assert.ok(completed.every((e) => typeof e.durationMs === 'number' && typeof e.startedAt === 'number' && typeof e.text === 'string'));
    assert.ok(completed.some((e) => e.tag === 'SELECT 500' && e.rows === 500));
    const extended = completed.filter((e) => e.protocol === 'extended');
    assert.equal(extended.length, 1);
    assert.ok(Array.isArray(extended[0].params));
    // statements that finish fast are not announced separately
    assert.equal(gw.events.filter((e) => e.type === 'query.started').length, 0);
  });
});
