/**
 * Issue 11, `hoopctl exec`: real CLI processes → gateway process → real PostgreSQL. Every exit code
 * provoked for real, the output formats (a schema check of json/ndjson), psql-like splitting with
 * dollar quotes, ON_ERROR_STOP, reviews (held statements, lease reviews, --wait, --review),
 * SIGTERM cancelling on the target, bounded memory on 1M rows, wrapped psql / pgbench /
 * node-postgres with env, exit codes and signals passed through, machine identity kept in memory,
 * the recording, and the README's CI steps run as written.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, existsSync, readFileSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, cliEnv, BIN, type GatewayProc, type RunResult } from './helpers/hoop.ts';

let db: PgCluster;
let gw: GatewayProc;

const CI = { HOOP_CLIENT_ID: 'ci-bot', HOOP_CLIENT_SECRET: 'ci-secret' };
const DBA = { HOOP_CLIENT_ID: 'dba-bot', HOOP_CLIENT_SECRET: 'dba-secret' };

before(async () => {
  db = await startPostgres();
  await db.psql(`
    CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text, note text);
    INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', '123-45-6789', 'a, "quoted"
note'), (2, 'Bob', 'bob@example.org', NULL, '');
    CREATE TYPE mood AS ENUM ('ok', 'sad');
    CREATE TABLE marks (n int);`, { db: 'app', user: 'app' });
  const target = { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' };
  gw = await startGatewayProc((c) => {
    c.connections = [
      {
        name: 'app', type: 'postgres', target, access: { groups: ['ci'] },
        guardrails: { deny: ['drop', 'truncate', 'delete_without_where'], review: ['delete'] },
        masking: { columns: ['email', '*ssn*'] }, review: { groups: ['dba'], lease: false, timeout: '2m' },
      },
      { name: 'plain', type: 'postgres', target, access: { groups: ['ci'] } },
      { name: 'gated', type: 'postgres', target, access: { groups: ['ci'] }, review: { groups: ['dba'], timeout: '2m' } },
      { name: 'dba-only', type: 'postgres', target, access: { groups: ['dba'] } },
      { name: 'short', type: 'postgres', target, access: { groups: ['ci'] }, lease: { default: '3s', max: '3s' } },
      { name: 'raw-tcp', type: 'tcp', target: { host: '127.0.0.1', port: db.port }, access: { groups: ['ci'] } },
    ];
  }, { env: { APP_PW: 'app-secret' } });
});
after(async () => {
  await gw?.stop();
  await db?.stop();
});

/** the CI identity from the environment, with a home of its own that must stay empty */
const ciHome = () => gw.home('ci-env');
const hoop = (args: string[], o: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}) =>
  gw.cli(args, { home: 'ci-env', env: { ...CI, ...o.env }, input: o.input, timeoutMs: o.timeoutMs });
const events = (r: RunResult) => r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>);
const approve = (id: string) => gw.cli(['approve', id, '--reason', 'looks fine'], { home: 'dba', env: DBA });

test('formats: csv by default without a terminal (psql quoting), table, json and ndjson with type names; masking applies', async () => {
  const csv = await hoop(['exec', 'app', '-c', 'select id, name, email, ssn, note from customers order by id']);
  assert.equal(csv.code, 0, csv.stderr);
  assert.equal(csv.stdout, 'id,name,email,ssn,note\n1,Ada,***@*******.***,***-**-****,"a, ""quoted""\nnote"\n2,Bob,***@*******.***,,\n');
  assert.doesNotMatch(csv.stdout, /ada@example\.com|123-45-6789/);

  const table = await hoop(['exec', 'app', '--format', 'table', '-c', 'select id, name from customers order by id', '-c', 'insert into marks values (0)']);
  assert.equal(table.code, 0, table.stderr);
  assert.equal(table.stdout, ' id | name\n----+------\n  1 | Ada\n  2 | Bob\n(2 rows)\n\nINSERT 0 1\n');

  const sql = "select id, email, true as ok, 1.5::float8 as f, 12345678901234567890::numeric as big, 'ok'::mood as m, '{\"a\":[1]}'::jsonb as j, null::text as n from customers where id = 1; select 1/0; select 3";
  const json = await hoop(['exec', 'app', '--format', 'json', '--continue-on-error', '-c', sql]);
  assert.equal(json.code, 1, 'a statement failed');
  const doc = JSON.parse(json.stdout);
  assert.equal(doc.length, 3);
  assert.deepEqual(doc[0].columns.map((c: any) => [c.name, c.type]), [['id', 'integer'], ['email', 'text'], ['ok', 'boolean'], ['f', 'double precision'], ['big', 'numeric'], ['m', 'mood'], ['j', 'jsonb'], ['n', 'text']]);
  assert.deepEqual(doc[0].rows, [[1, '***@*******.***', true, 1.5, '12345678901234567890', 'ok', { a: [1] }, null]]);
  assert.equal(doc[0].row_count, 1);
  assert.equal(doc[0].command, 'SELECT 1');
  assert.deepEqual(doc[1].error && { sqlstate: doc[1].error.sqlstate, exit: doc[1].exit_code }, { sqlstate: '22012', exit: 1 });
  assert.equal(doc[1].rows, undefined);
  assert.deepEqual(doc[2].rows, [[3]]);
  for (const s of doc) {
    assert.deepEqual(Object.keys(s).slice(0, 3), ['statement', 'line', 'text']);
    assert.ok(('rows' in s && 'columns' in s && 'row_count' in s && 'command' in s) || ('error' in s && 'exit_code' in s), JSON.stringify(s));
  }

  const copy = await hoop(['exec', 'plain', '-c', "copy (select 1, 'a,b') to stdout with (format csv)", '-c', 'copy marks from stdin']);
  assert.equal(copy.code, 1, 'COPY FROM STDIN is refused');
  assert.equal(copy.stdout, '1,"a,b"\n', 'COPY TO STDOUT data goes to stdout as sent');
  assert.match(copy.stderr, /COPY FROM STDIN is not supported by hoopctl exec/);

  const nd = await hoop(['exec', 'app', '--format', 'ndjson', '-c', 'select 1 as a; insert into marks values (1); drop table customers']);
  assert.equal(nd.code, 6);
  const lines = nd.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  assert.deepEqual(lines[0].rows, [[1]]);
  assert.deepEqual([lines[1].command, lines[1].rows], ['INSERT 0 1', undefined]);
  assert.deepEqual([lines[2].error.sqlstate, lines[2].error.routine, lines[2].exit_code], ['42501', 'hoop_guardrail', 6]);
});

test('stdin with several statements, dollar quotes, BEGIN ATOMIC and comments; ON_ERROR_STOP and --continue-on-error', async () => {
  const script = `
-- a comment; with a semicolon
create function add_one(i int) returns int language plpgsql as $body$
begin
  return i + 1; -- not the end
end $body$;
create function twice(i int) returns int language sql
begin atomic
  select i * 2;
end;
/* block; comment */ select add_one(1) as one, twice(2) as two, 'semi;colon' as s, $$dollar;$$ as d;
`;
  const r = await hoop(['exec', 'plain', '--format', 'ndjson'], { input: script });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.command), ['CREATE FUNCTION', 'CREATE FUNCTION', 'SELECT 1']);
  assert.deepEqual(lines[2].rows, [[2, 4, 'semi;colon', 'dollar;']]);
  assert.equal(lines[2].line, 11);

  const stop = await hoop(['exec', 'plain', '-c', 'insert into marks values (10); select 1/0; insert into marks values (11)']);
  assert.equal(stop.code, 1);
  assert.match(stop.stderr, /ERROR: {2}division by zero\nCONTEXT: {2}statement 2 \(line 1\): select 1\/0/);
  const go = await hoop(['exec', 'plain', '--continue-on-error', '-c', 'insert into marks values (20); select 1/0; insert into marks values (21)']);
  assert.equal(go.code, 1, 'the failure still shows in the exit code');
  assert.equal((await db.psql('select string_agg(n::text, \',\' order by n) from marks where n >= 10', { db: 'app', user: 'app' })).trim(), '10,20,21');
});

test('exit codes: 2 bad usage, 3 bad token, 4 unknown or forbidden connection, 6 guardrail, 7 unreachable', async () => {
  const usage = [
    ['exec', 'app', '--format', 'xml', '-c', 'select 1'],
    ['exec', 'app', '-c', 'select 1', '-f', 'x.sql'],
    ['exec', 'app', '-f', '/nonexistent.sql'],
    ['exec', 'app', '--timeout', 'soon', '-c', 'select 1'],
    ['exec', 'app', 'psql'],
    ['exec', 'app', '--review', 'nope', '-c', 'select 1'],
    ['exec', 'app', '-c', "select 'unterminated"],
    ['exec', 'app', '-c', '\\dt'],
    ['exec', 'raw-tcp', '-c', 'select 1'],
  ];
  for (const args of usage) {
    const r = await hoop(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /\S/, 'says why');
  }
  const badToken = await gw.cli(['exec', 'app', '-c', 'select 1'], { home: 'nobody', env: { HOOP_TOKEN: 'not-a-jwt' } });
  assert.equal(badToken.code, 3, badToken.stderr);
  const notLoggedIn = await gw.cli(['exec', 'app', '-c', 'select 1'], { home: 'nobody' });
  assert.equal(notLoggedIn.code, 3, notLoggedIn.stderr);
  const unknown = await hoop(['exec', 'nope', '-c', 'select 1']);
  assert.equal(unknown.code, 4);
  assert.match(unknown.stderr, /unknown connection "nope"\n\s+you may use: app, plain, gated, short, raw-tcp/);
  const forbidden = await hoop(['exec', 'dba-only', '-c', 'select 1']);
  assert.equal(forbidden.code, 4, 'a connection outside the groups looks unknown');
  const blocked = await hoop(['exec', 'app', '-c', 'truncate customers']);
  assert.equal(blocked.code, 6);
  assert.match(blocked.stderr, /blocked by guardrail rule "truncate"/);
  const down = await hoop(['exec', 'app', '-c', 'select 1'], { env: { HOOP_GATEWAY: 'http://127.0.0.1:1' } });
  assert.equal(down.code, 7, down.stderr);
  const jsonErr = await hoop(['exec', 'nope', '--json', '-c', 'select 1']);
  assert.equal(jsonErr.stdout, '', 'stdout carries only results');
  assert.deepEqual(events(jsonErr).map((e) => [e.event, e.exit_code]), [['error', 4], ['completed', 4]]);
});

test('machine identity: client credentials exchanged in memory, never written; a client whose groups lack access gets 4', async () => {
  const r = await hoop(['exec', 'plain', '-c', 'select current_user']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'current_user\napp\n');
  const home = ciHome();
  const files = existsSync(home) ? readdirSync(home, { recursive: true }) : [];
  assert.deepEqual(files, [], 'nothing stored in HOOP_CONFIG_DIR');
  const other = await gw.cli(['exec', 'plain', '-c', 'select 1'], { home: 'admin-bot', env: { HOOP_CLIENT_ID: 'admin-bot', HOOP_CLIENT_SECRET: 'admin-secret' } });
  assert.equal(other.code, 4, other.stderr);
  const wrong = await gw.cli(['exec', 'plain', '-c', 'select 1'], { home: 'wrong', env: { HOOP_CLIENT_ID: 'ci-bot', HOOP_CLIENT_SECRET: 'wrong' } });
  assert.equal(wrong.code, 3, wrong.stderr);
});

test('a held statement: without --wait exit 5 with the review id; after approval --review runs it once', async () => {
  await db.psql("insert into customers values (7, 'Gus', null, null, null), (8, 'Hal', null, null, null)", { db: 'app', user: 'app' });
  const held = await hoop(['exec', 'app', '--json', '-c', 'delete from customers where id = 7']);
  assert.equal(held.code, 5, held.stderr);
  const ev = events(held);
  const waiting = ev.find((e) => e.event === 'waiting_approval');
  assert.match(waiting?.review_id, /^r_[a-z0-9]+$/i);
  assert.equal(waiting?.approve_command, `hoopctl approve ${waiting?.review_id}`);
  assert.deepEqual(ev.at(-1), { ...ev.at(-1), event: 'completed', exit_code: 5, review_id: waiting?.review_id });
  const id = waiting!.review_id as string;
  const ok = await approve(id);
  assert.equal(ok.code, 0, ok.stderr);
  const resumed = await hoop(['exec', 'app', '--review', id, '-c', 'delete from customers where id = 7']);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, /DELETE 1/);
  assert.equal((await db.psql('select count(*) from customers where id = 7', { db: 'app', user: 'app' })).trim(), '0');
  const again = await hoop(['exec', 'app', '--review', id, '-c', 'delete from customers where id = 8']);
  assert.equal(again.code, 5, 'another statement is not covered by that review');

  // --wait: the approval arrives while exec waits on its connection
  const live = gw.spawnCli(['exec', 'app', '--json', '--wait', '60s', '-c', 'delete from customers where id = 8'], { home: 'ci-env', env: CI });
  const m = await live.waitFor(/"event":"waiting_approval".*?"review_id":"(r_[a-z0-9]+)"/i);
  assert.equal((await approve(m[1])).code, 0);
  const done = await live.exited;
  assert.equal(done.code, 0, done.stderr);
  assert.deepEqual(events(done).map((e) => e.event), ['lease', 'running', 'waiting_approval', 'approved', 'completed']);

  // rejected → 5
  const rej = gw.spawnCli(['exec', 'app', '--wait', '60s', '-c', 'delete from customers where id = 2'], { home: 'ci-env', env: CI });
  const r2 = await rej.waitFor(/review (r_[a-z0-9]+)/i);
  assert.equal((await gw.cli(['reject', r2[1], '--reason', 'not today'], { home: 'dba', env: DBA })).code, 0);
  const rejected = await rej.exited;
  assert.equal(rejected.code, 5);
  assert.match(rejected.stderr, /rejected in review r_\w+ by .*not today/);
});

test('a lease that needs review: exit 5 with its id, then --wait proceeds the moment it is approved', async () => {
  const first = await hoop(['exec', 'gated', '--json', '-c', 'select 1']);
  assert.equal(first.code, 5, first.stderr);
  const w = events(first).find((e) => e.event === 'waiting_approval');
  assert.equal(w?.kind, 'lease');
  assert.match(first.stderr, new RegExp(`hoopctl approve ${w?.review_id}`));
  const live = gw.spawnCli(['exec', 'gated', '--json', '--wait', '60s', '-c', 'select 42 as x'], { home: 'ci-env', env: CI });
  const m = await live.waitFor(/"event":"waiting_approval".*?"review_id":"(r_[a-z0-9]+)"/i);
  assert.equal(m[1], w?.review_id, 'the pending lease is reused, not requested twice');
  assert.equal((await approve(m[1])).code, 0);
  const done = await live.exited;
  assert.equal(done.code, 0, done.stderr);
  assert.equal(done.stdout, 'x\n42\n');
  assert.deepEqual(events(done).map((e) => e.event), ['waiting_approval', 'approved', 'lease', 'running', 'completed']);
});

const sleeping = () => db.psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'").then((s) => Number(s.trim()));

test('SIGTERM cancels the running statement on the target (pg_stat_activity) and exits 143; --timeout cancels too', async () => {
  const live = gw.spawnCli(['exec', 'plain', '--json', '-c', 'select pg_sleep(60)'], { home: 'ci-env', env: CI });
  await live.waitFor(/"event":"running"/);
  for (let i = 0; i < 50 && (await sleeping()) === 0; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await sleeping(), 1, 'the statement runs on the target');
  const t0 = Date.now();
  live.kill('SIGTERM');
  const r = await live.exited;
  assert.equal(r.code, 143, r.stderr);
  assert.ok(Date.now() - t0 < 4000, 'cancelled, not waited out');
  assert.match(r.stderr, /canceling statement due to user request/);
  assert.equal(await sleeping(), 0, 'the target no longer runs it');

  const t1 = Date.now();
  const timed = await hoop(['exec', 'plain', '--timeout', '1s', '-c', 'select pg_sleep(60)']);
  assert.equal(timed.code, 1);
  assert.match(timed.stderr, /--timeout 1s reached/);
  assert.ok(Date.now() - t1 < 6000);
  assert.equal(await sleeping(), 0);
});

test('the lease ends under a running statement: exit 4 with the gateway\'s reason', async () => {
  const r = await hoop(['exec', 'short', '--json', '-c', 'select pg_sleep(20)']);
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /lease expired/);
  assert.deepEqual(events(r).at(-1)?.event, 'completed');
});

test('a 1M-row select streams: peak memory as for 10 rows, also with a reader that stalls', async () => {
  const run = (n: number, stall: boolean) => new Promise<{ bytes: number; rss: number; code: number | null }>((resolve) => {
    const p = spawn(process.execPath, [BIN, 'exec', 'plain', '--json', '--format', 'csv', '-c', `select g, repeat('x', 100) as pad from generate_series(1, ${n}) g`], { env: cliEnv(ciHome(), gw.url, CI) });
    let bytes = 0;
    let err = '';
    p.stdout.on('data', (d: Buffer) => { bytes += d.length; });
    if (stall) {
      p.stdout.pause();
      setTimeout(() => p.stdout.resume(), 1500);
    }
    p.stderr.on('data', (d) => { err += d; });
    p.on('close', (code) => {
      const done = err.split('\n').filter((l) => l.includes('"completed"')).map((l) => JSON.parse(l))[0];
      resolve({ bytes, rss: done?.max_rss_kb ?? Infinity, code });
    });
  });
  const small = await run(10, false);
  const big = await run(1_000_000, true);
  assert.equal(big.code, 0);
  assert.ok(big.bytes > 100_000_000, `${big.bytes} bytes out`);
  // holding the result would add well over 100 MB (the output is 110 MB)
  assert.ok(big.rss - small.rss < 60_000, `peak RSS ${big.rss} KB for 1M rows vs ${small.rss} KB for 10`);
});

test('wrapping commands: psql -f, pgbench and a node-postgres script run unchanged; exit codes, signals and env pass through', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-exec-'));
  writeFileSync(join(dir, 'migrate.sql'), 'create table wrapped (id int);\ninsert into wrapped values (1), (2);\n');
  const psql = await hoop(['exec', 'plain', '--', 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-q', '-f', join(dir, 'migrate.sql')]);
  assert.equal(psql.code, 0, psql.stderr);
  assert.equal((await db.psql('select count(*) from wrapped', { db: 'app', user: 'app' })).trim(), '2');

  const bench = await hoop(['exec', 'plain', '--', 'sh', '-c', 'pgbench -i -q -s 1 >/dev/null 2>&1 && pgbench -n -c 2 -t 20'], { timeoutMs: 60_000 });
  assert.equal(bench.code, 0, bench.stderr);
  assert.match(bench.stdout, /number of transactions actually processed: 40\/40/);

  const script = "const pg = require('pg'); const c = new pg.Client({ connectionString: process.env.DATABASE_URL }); c.connect().then(() => c.query('select count(*)::int as n from wrapped')).then((r) => { console.log('rows', r.rows[0].n); return c.end(); }).catch((e) => { console.error(e.message); process.exit(9); })";
  const nodePg = await hoop(['exec', 'plain', '--', process.execPath, '-e', script]);
  assert.equal(nodePg.code, 0, nodePg.stderr);
  assert.equal(nodePg.stdout, 'rows 2\n');

  const env = await hoop(['exec', 'app', '--', 'sh', '-c', 'echo "$PGHOST $PGUSER $PGDATABASE $PGPASSWORD"; echo "$DATABASE_URL"; exit 3']);
  assert.equal(env.code, 3, 'the exit code passes through');
  const [first, url] = env.stdout.trim().split('\n');
  assert.equal(first, '127.0.0.1 ci-bot app hoop-lease');
  assert.match(url, /^postgres:\/\/ci-bot:hoop-lease@127\.0\.0\.1:\d+\/app\?sslmode=disable$/);
  const tcp = await hoop(['exec', 'raw-tcp', '--', 'sh', '-c', 'echo "$HOOP_HOST $HOOP_URL"']);
  assert.match(tcp.stdout, /^127\.0\.0\.1 tcp:\/\/127\.0\.0\.1:\d+\n$/);

  assert.equal((await hoop(['exec', 'plain', '--', 'sh', '-c', 'kill -KILL $$'])).code, 137, '128 + signal');
  assert.equal((await hoop(['exec', 'plain', '--', 'no-such-command-hoop'])).code, 127);

  // SIGTERM to hoopctl reaches the command, whose own exit code comes back; the tunnel closes after it
  const live = gw.spawnCli(['exec', 'plain', '--', 'sh', '-c', 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.1; done'], { home: 'ci-env', env: CI });
  await live.waitFor(/ready/);
  live.kill('SIGTERM');
  const r = await live.exited;
  assert.equal(r.code, 42);
  assert.match(r.stdout, /got-term/);
});

test('the session is recorded like any other, and replay shows the statements', async () => {
  const r = await hoop(['exec', 'app', '-c', "select name, email from customers where id = 1 /* exec-recorded */"]);
  assert.equal(r.code, 0, r.stderr);
  await new Promise((res) => setTimeout(res, 300));
  const list = await hoop(['sessions', '--json', '--conn', 'app']);
  assert.equal(list.code, 0, list.stderr);
  const sessions = JSON.parse(list.stdout) as Array<{ id: string }>;
  let found = '';
  for (const s of sessions) {
    const rp = await hoop(['replay', s.id, '--no-timing']);
    if (rp.stdout.includes('exec-recorded')) {
      found = rp.stdout;
      break;
    }
  }
  assert.ok(found, 'a recorded session holds the statement');
  assert.match(found, /Ada/);
  assert.doesNotMatch(found, /ada@example\.com/, 'recorded masked');
});

test("the README's GitHub Actions and GitLab CI steps run as written", async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const gh = /```yaml\n# \.github\/workflows\/[\s\S]*?```/.exec(readme)?.[0];
  const gl = /```yaml\n# \.gitlab-ci\.yml[\s\S]*?```/.exec(readme)?.[0];
  assert.ok(gh && gl, 'both examples are in the README');
  const ghRun = /run: \|\n((?: {10}.*\n)+)/.exec(gh)![1].replace(/^ {10}/gm, '');
  // the job's `script:` (its `before_script:` installs hoopctl, which the shim below stands for)
  const glScript = [.../ {2}script:\n((?: {4}- .*\n)+)/.exec(gl)![1].matchAll(/^ {4}- (.*)$/gm)].map((m) => m[1]).join('\n');
  const dir = mkdtempSync(join(tmpdir(), 'hoop-ci-'));
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin', 'hoopctl'), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
  chmodSync(join(dir, 'bin', 'hoopctl'), 0o755);
  mkdirSync(join(dir, 'migrations'));
  writeFileSync(join(dir, 'migrations', 'up.sql'), 'create table if not exists ci_runs (at timestamptz default now());\ninsert into ci_runs default values;\n');
  for (const [name, script] of [['github', ghRun], ['gitlab', glScript]] as const) {
    const env = {
      ...cliEnv(join(dir, `home-${name}`), gw.url, CI), PATH: `${join(dir, 'bin')}:${process.env.PATH}`,
      GITHUB_SHA: 'abc123', CI_COMMIT_SHA: 'abc123', HOOP_CONNECTION: 'plain',
    };
    const r = await new Promise<RunResult>((resolve) => {
      const p = spawn('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, env });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { err += d; });
      p.on('close', (code) => resolve({ code, stdout: out, stderr: err }));
    });
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
  }
  assert.equal((await db.psql('select count(*) from ci_runs', { db: 'app', user: 'app' })).trim(), '2');
});
