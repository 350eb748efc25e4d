/**
 * `hoopctl replay` and `hoopctl sessions verify` on real recordings: psql → `hoopctl connect` →
 * gateway (postgres engine, masking, guardrails, recording) → PostgreSQL, then the CLI reads the
 * recording back. Ends by tampering with the gateway's SQLite file as an attacker with file access
 * would (dropping the append-only triggers first).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { startPostgres, freePort, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc } from './helpers/hoop.ts';

const exec = promisify(execFile);
let db: PgCluster;
let gw: GatewayProc;
const tunnels: Array<ReturnType<GatewayProc['spawnCli']>> = [];
let pgPort: number;
let rawPort: number;

const RAW = ['ada@example.com', '123-45-6789', 'bob@example.org', '987-65-4321'];
const SEED = `
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text);
INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', '123-45-6789'), (2, 'Bob', 'bob@example.org', '987-65-4321');
`;

interface SessionView { id: string; user: string; connection: string; type: string; startedAt: number; endedAt: number | null; bytesIn: number; bytesOut: number }

/** the main session: statements ~1.2 s apart, a masked result, a blocked statement, a capped result, an error */
let main: SessionView;
let mainEntries = 0;

async function openTunnel(conn: string): Promise<number> {
  const port = await freePort();
  const live = gw.spawnCli(['connect', conn, '--port', String(port)], { home: 'ci' });
  tunnels.push(live);
  await live.waitFor(/Try: /);
  return port;
}

function psql(port: number, user: string, password: string, ...args: string[]) {
  return exec('psql', ['-X', `postgres://${user}:${password}@127.0.0.1:${port}/app`, ...args], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' } })
    .then((r) => ({ ...r, code: 0 }), (e: { stdout: string; stderr: string; code: number }) => ({ stdout: e.stdout, stderr: e.stderr, code: e.code }));
}

async function listSessions(home = 'ci'): Promise<SessionView[]> {
  const r = await gw.cli(['sessions', '--json'], { home });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** Runs `fn` and returns the one session it opened, once the gateway has closed (and flushed) it. */
async function sessionOf(fn: () => Promise<unknown>): Promise<SessionView> {
  const seen = new Set((await listSessions()).map((s) => s.id));
  await fn();
  for (let i = 0; i < 100; i++) {
    const fresh = (await listSessions()).filter((s) => !seen.has(s.id));
    if (fresh.length === 1 && fresh[0].endedAt) return fresh[0];
    assert.ok(fresh.length <= 1, `one session expected, got ${fresh.length}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the session never ended');
}

before(async () => {
  db = await startPostgres();
  await db.psql(SEED, { db: 'app', user: 'app' });
  gw = await startGatewayProc((c) => {
    c.connections = [
      {
        name: 'app', type: 'postgres', access: { groups: ['ci'] },
        target: { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' },
        guardrails: { deny: ['drop', 'truncate'] },
        masking: { columns: ['email', '*ssn*'], detectors: ['email', 'ssn'] },
        recording: { results: true, max_rows_per_statement: 3 },
      },
      { name: 'raw', type: 'tcp', access: { groups: ['ci'] }, target: { host: '127.0.0.1', port: db.port } },
      {
        name: 'short', type: 'postgres', access: { groups: ['ci'] },
        target: { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' },
        recording: { retention: '2s' },
      },
    ];
  }, { env: { APP_PW: 'app-secret', HOOP_RETENTION_SWEEP_MS: '300' } });
  await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
  await loginClient(gw, 'other', 'dba-bot', 'dba-secret');
  pgPort = await openTunnel('app');
  rawPort = await openTunnel('raw');
  main = await sessionOf(() => psql(pgPort, 'x', 'y',
    '-c', 'select id, name, email, ssn from customers order by id',
    '-c', 'select pg_sleep(1.2)',
    '-c', 'drop table customers',
    '-c', 'select g from generate_series(1, 10) g',
    '-c', 'select 1/0',
    '-c', "select E'\\033[2Jboom' as x"));
});

after(async () => {
  for (const t of tunnels) t.kill('SIGINT');
  await Promise.all(tunnels.map((t) => t.exited));
  await gw?.stop();
  await db?.stop();
});

test('replay --no-timing: a psql-like transcript with masked values, the blocked rule, capped results, errors', async () => {
  const r = await gw.cli(['replay', main.id, '--no-timing'], { home: 'ci' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '', 'an intact recording replays without warnings');
  const o = r.stdout;
  assert.match(o, new RegExp(`^Session ${main.id} · connection app \\(postgres\\) · user ${main.user}\\n`));
  assert.match(o, /^Started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · duration [\d.]+s · closed: [^·]+ · \d+ recorded events$/m);
  const order = [
    /\[\+\d+\.\d{3}s\] app=> select id, name, email, ssn from customers order by id\n id \| name \| +email +\| +ssn\n----\+------\+-+\+-+\n  1 \| Ada  \| \*+@\*+\.\*+ \| \*+-\*+-\*+\n  2 \| Bob .*\n\(2 rows\)\nSELECT 2 /,
    /app=> select pg_sleep\(1\.2\)\n/,
    /app=> drop table customers\nBLOCKED by guardrail rule "drop"\nERROR: +hoopctl: blocked by guardrail rule "drop"/,
    /app=> select g from generate_series\(1, 10\) g\n g\n---\n 1\n 2\n 3\n\.\.\. truncated: the recording kept 3 of 10 rows\n\(10 rows\)\nSELECT 10 /,
    /app=> select 1\/0\nERROR: +division by zero/,
    // a terminal escape sequence in recorded data is shown, not sent to the terminal
    /app=> select E'\\033\[2Jboom' as x\n +x\n-+\n \\x1b\[2Jboom\n\(1 row\)/,
  ];
  let at = 0;
  for (const re of order) {
    const m = re.exec(o.slice(at));
    assert.ok(m, `expected ${re} after offset ${at} in:\n${o}`);
    at += m.index + m[0].length;
  }
  for (const raw of RAW) assert.ok(!o.includes(raw), `raw value ${raw} in the replay`);
  assert.ok(!o.includes('\x1b'), 'no raw ESC reaches the terminal');
});

test('replay --format json: one parseable event a line, in seq order, same as --json', async () => {
  const r = await gw.cli(['replay', main.id, '--format', 'json'], { home: 'ci' });
  assert.equal(r.code, 0, r.stderr);
  const events = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
  mainEntries = events.length;
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
  for (const e of events) assert.ok(e.at >= main.startedAt && e.at <= main.endedAt!, JSON.stringify(e));
  const blocked = events.find((e) => e.type === 'query.blocked');
  assert.equal(blocked?.rule, 'drop');
  assert.equal(blocked?.text, 'drop table customers');
  const first = events.find((e) => e.type === 'query.completed' && /from customers/.test(e.text));
  assert.deepEqual(first.results[0].columns, ['id', 'name', 'email', 'ssn']);
  assert.equal(first.results[0].rows.length, 2);
  assert.match(first.results[0].rows[0][2], /^\*+@\*+\.\*+$/);
  assert.equal(events.find((e) => e.text === 'select g from generate_series(1, 10) g').results[0].truncated, true);
  for (const raw of RAW) assert.ok(!r.stdout.includes(raw));
  const same = await gw.cli(['replay', main.id, '--json'], { home: 'ci' });
  assert.equal(same.stdout, r.stdout);
  assert.equal((await gw.cli(['replay', main.id, '--json', '--format', 'asciicast'], { home: 'ci' })).code, 2);
});

test('replay --format asciicast: a v2 header, then timed output events with CRLF line endings', async () => {
  const r = await gw.cli(['replay', main.id, '--format', 'asciicast'], { home: 'ci' });
  assert.equal(r.code, 0, r.stderr);
  const [head, ...lines] = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.equal(head.version, 2);
  assert.ok(Number.isInteger(head.width) && head.width >= 80 && Number.isInteger(head.height));
  assert.equal(head.timestamp, Math.floor(main.startedAt / 1000));
  assert.equal(lines.length, 1 + mainEntries, 'the session header, then one output event per recorded event');
  let prev = 0;
  for (const [t, kind, text] of lines) {
    assert.equal(kind, 'o');
    assert.ok(t >= prev, 'time never goes back');
    prev = t;
    assert.match(text, /\r\n$/);
    assert.doesNotMatch(text, /[^\r]\n/, 'every newline is CRLF');
  }
  assert.ok(prev >= 1.0 && prev < 5, `the pg_sleep(1.2) gap is in the timestamps (last at ${prev}s)`);
  for (const raw of RAW) assert.ok(!r.stdout.includes(raw));
  const fast = await gw.cli(['replay', main.id, '--format', 'asciicast', '--speed', '4'], { home: 'ci' });
  const last = JSON.parse(fast.stdout.trimEnd().split('\n').at(-1)!)[0];
  assert.ok(Math.abs(last - prev / 4) < 0.01, `--speed 4 divides the timestamps (${last} vs ${prev})`);
});

test('replay timing: original timing with --speed 1, much faster with --speed 10, none when piped by default', async () => {
  const timed = async (...args: string[]) => {
    const live = gw.spawnCli(['replay', main.id, ...args], { home: 'ci' });
    await live.waitFor(/^Session /m);
    const t0 = performance.now();
    const r = await live.exited;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ERROR: +division by zero/);
    return (performance.now() - t0) / 1000;
  };
  const original = await timed('--speed', '1');
  const fast = await timed('--speed', '10');
  const piped = await timed();
  assert.ok(original >= 1.0 && original < 8, `--speed 1 took ${original}s; the statements were ~1.2 s apart`);
  assert.ok(fast < original - 0.6, `--speed 10 took ${fast}s vs ${original}s`);
  assert.ok(piped < 0.8, `a piped replay without --speed/--timing does not pause (${piped}s)`);
});

test('sessions verify: intact chain, and `hoopctl sessions` itself still lists', async () => {
  const r = await gw.cli(['sessions', 'verify', main.id], { home: 'ci' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `recording of ${main.id}: ${mainEntries} entries, hash chain intact\n`);
  const j = await gw.cli(['sessions', 'verify', main.id, '--json'], { home: 'ci' });
  assert.deepEqual(JSON.parse(j.stdout), { session: main.id, ok: true, entries: mainEntries });
  const list = await gw.cli(['sessions', '--conn', 'app'], { home: 'ci' });
  assert.equal(list.code, 0);
  assert.match(list.stdout, new RegExp(`^${main.id} +app `, 'm'));
});

test('a tcp session: replay says there are no events and shows the byte counts; verify passes with 0 entries', async () => {
  const s = await sessionOf(async () => {
    const r = await psql(rawPort, 'app', 'app-secret', '-At', '-c', 'select 42');
    assert.equal(r.stdout.trim(), '42', r.stderr);
  });
  assert.equal(s.type, 'tcp');
  const r = await gw.cli(['replay', s.id, '--no-timing'], { home: 'ci' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /connection raw \(tcp\)/);
  assert.match(r.stdout, new RegExp(`A tcp session records no events[^\\n]*${s.bytesIn} bytes in, ${s.bytesOut} bytes out`));
  const v = await gw.cli(['sessions', 'verify', s.id], { home: 'ci' });
  assert.equal(v.code, 0);
  assert.match(v.stdout, /0 entries \(a tcp session records no events\), hash chain intact/);
});

test('unknown session and another user\'s session: exit 4, not found', async () => {
  for (const args of [['replay', 'ss_nope'], ['sessions', 'verify', 'ss_nope']]) {
    const r = await gw.cli(args, { home: 'ci' });
    assert.equal(r.code, 4, args.join(' '));
    assert.match(r.stderr, /no session "ss_nope"\n\s+see `hoopctl sessions`/);
  }
  for (const args of [['replay', main.id, '--no-timing'], ['sessions', 'verify', main.id]]) {
    const r = await gw.cli(args, { home: 'other' });
    assert.equal(r.code, 4, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /no session/);
    assert.equal(r.stdout, '');
  }
  assert.equal((await gw.cli(['replay', main.id, '--speed', '0'], { home: 'ci' })).code, 2);
});

test('recording.retention: a recording older than its connection\'s retention is deleted; replay and verify say so, exit 4', async () => {
  const port = await openTunnel('short');
  const s = await sessionOf(() => psql(port, 'x', 'y', '-c', 'select 42 as answer'));
  // inside the retention the recording is there
  const fresh = await gw.cli(['replay', s.id, '--no-timing'], { home: 'ci' });
  assert.equal(fresh.code, 0, fresh.stderr);
  assert.match(fresh.stdout, /select 42 as answer/);
  let gone: Awaited<ReturnType<GatewayProc['cli']>> | undefined;
  for (let i = 0; i < 50 && !gone; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const r = await gw.cli(['replay', s.id, '--no-timing'], { home: 'ci' });
    if (r.code !== 0) gone = r;
  }
  assert.ok(gone, 'the sweep deleted the recording within 10 s');
  assert.equal(gone.code, 4, gone.stderr);
  assert.match(gone.stderr, new RegExp(`the recording of session ${s.id} was deleted on \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z by recording\\.retention 2s of connection "short"`));
  assert.match(gone.stderr, /recording\.retention \(gateway\.yaml\)/, 'says what to do next');
  const v = await gw.cli(['sessions', 'verify', s.id, '--json'], { home: 'ci' });
  assert.equal(v.code, 4, v.stdout + v.stderr);
  // with --json the error is a JSON object on stdout, its code stable for scripts
  const err = JSON.parse(v.stdout) as { error: string; message: string };
  assert.equal(err.error, 'recording_purged');
  assert.match(err.message, /deleted on .* by recording\.retention 2s/);
  // the session row stays; a connection with the default retention keeps its recordings
  assert.ok((await listSessions()).some((x) => x.id === s.id));
  const main2 = await gw.cli(['sessions', 'verify', main.id], { home: 'ci' });
  assert.equal(main2.code, 0, main2.stderr);
  // and the sweep was audited
  await loginClient(gw, 'admin', 'admin-bot', 'admin-secret');
  const a = await gw.cli(['audit', '--json'], { home: 'admin' });
  assert.equal(a.code, 0, a.stderr);
  const purged = (JSON.parse(a.stdout) as Array<{ type: string; connection: string | null; data: { sessions: number; retention: string } }>).filter((e) => e.type === 'recording.purged');
  assert.ok(purged.some((e) => e.connection === 'short' && e.data.sessions >= 1 && e.data.retention === '2s'), JSON.stringify(purged));
});

test('tampering with the store file is detected: an edited entry, a removed batch', async () => {
  const other = await sessionOf(() => psql(pgPort, 'x', 'y', '-c', 'select 1', '-c', 'select pg_sleep(0.5)', '-c', 'select 2'));
  assert.equal((await gw.cli(['sessions', 'verify', other.id], { home: 'ci' })).code, 0);
  const third = await sessionOf(() => psql(pgPort, 'x', 'y', '-c', 'select 1', '-c', 'select pg_sleep(0.5)', '-c', 'select 2'));
  assert.equal((await gw.cli(['sessions', 'verify', third.id], { home: 'ci' })).code, 0);

  const file = join(gw.dir, 'data', 'hoop.db');
  const sql = new DatabaseSync(file);
  let edited: number;
  try {
    sql.exec('DROP TRIGGER recording_batches_no_update; DROP TRIGGER recording_batches_no_delete;');
    const batches = sql.prepare('SELECT first_seq, entries FROM recording_batches WHERE session_id = ? ORDER BY first_seq').all(main.id) as Array<{ first_seq: number; entries: string }>;
    const victim = batches.find((b) => b.entries.includes('drop table customers'));
    assert.ok(victim, 'the batch with the blocked statement');
    edited = Number(victim.first_seq);
    // hide the attempt: the blocked drop becomes a harmless select
    sql.prepare('UPDATE recording_batches SET entries = replace(entries, \'drop table customers\', \'select now()\') WHERE session_id = ? AND first_seq = ?').run(main.id, edited);
    const otherBatches = sql.prepare('SELECT first_seq FROM recording_batches WHERE session_id = ? ORDER BY first_seq').all(other.id);
    assert.ok(otherBatches.length >= 2, 'the second session was sealed in two batches or more');
    sql.prepare('DELETE FROM recording_batches WHERE session_id = ? AND first_seq = 1').run(other.id);
    // a third session loses the end of its recording: what is left still chains
    const last = sql.prepare('SELECT max(first_seq) AS s FROM recording_batches WHERE session_id = ?').get(third.id) as { s: number };
    sql.prepare('DELETE FROM recording_batches WHERE session_id = ? AND first_seq = ?').run(third.id, last.s);
  } finally {
    sql.close();
  }

  const v = await gw.cli(['sessions', 'verify', main.id], { home: 'ci' });
  assert.equal(v.code, 1, v.stdout + v.stderr);
  assert.equal(v.stdout, '');
  assert.match(v.stderr, new RegExp(`the recording of ${main.id} was altered: an entry in ${edited}\\.\\.\\d+ was altered \\(first entry that does not verify: ${edited};`));
  const j = await gw.cli(['sessions', 'verify', main.id, '--json'], { home: 'ci' });
  assert.equal(j.code, 1);
  const verdict = JSON.parse(j.stdout);
  assert.equal(verdict.ok, false);
  assert.equal(verdict.seq, edited);
  assert.equal(verdict.entries, mainEntries);
  assert.match(verdict.problem, /altered/);

  const rm = await gw.cli(['sessions', 'verify', other.id], { home: 'ci' });
  assert.equal(rm.code, 1);
  assert.match(rm.stderr, /was altered: entry 1 is missing/);
  const cut = await gw.cli(['sessions', 'verify', third.id], { home: 'ci' });
  assert.equal(cut.code, 1, cut.stdout + cut.stderr);
  assert.match(cut.stderr, /was altered: the recording ends early/);

  // replay still shows what is there, but warns
  const r = await gw.cli(['replay', main.id, '--no-timing'], { home: 'ci' });
  assert.equal(r.code, 0);
  assert.match(r.stderr, new RegExp(`warning: the recording of ${main.id} was altered`));
  assert.match(r.stdout, /app=> select now\(\)\nBLOCKED/);
});
