/**
 * Reviews through the whole product (issue 9): real PostgreSQL, the real CLI as separate
 * processes for requester and reviewers, psql and node-postgres through `hoopctl connect`.
 * Lease reviews (approve, reject, timeout, withdraw, self-review refused, two approvals) and
 * held statements (psql and the extended protocol, in a transaction, rejection keeps the session,
 * Ctrl-C and disconnect withdraw, masked in the review, once only), replay, audit, concurrent
 * decisions, and webhook notifications (signed, retried).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { startPostgres, freePort, type PgCluster } from './helpers/postgres.ts';
import { startGatewayProc, loginClient, type GatewayProc, type LiveCli } from './helpers/hoop.ts';

let db: PgCluster;
let gw: GatewayProc;
let hooks: { url: string; got: Array<{ path: string; headers: http.IncomingHttpHeaders; body: string }>; failFirst: number; close(): Promise<void> };
let firstReview = '';
const HOOK_SECRET = 'hook-secret-1';

const SEED = `
CREATE TABLE victims (id int, name text, ssn text, email text);
INSERT INTO victims VALUES (1, 'Ada', '123-45-6789', 'ada@example.com'), (2, 'Bob', '987-65-4321', 'bob@example.org'), (3, 'Cy', '111-22-3333', 'cy@example.net');
-- counts statements that really ran on the target
CREATE TABLE ran (op text, n int);
CREATE FUNCTION count_ran() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ran VALUES (TG_OP, 1); RETURN NULL; END $$;
CREATE TRIGGER victims_ran AFTER UPDATE OR DELETE ON victims FOR EACH STATEMENT EXECUTE FUNCTION count_ran();
`;

/** a receiver that answers 500 to its first `failFirst` requests, then 200 */
function hookReceiver(failFirst: number): Promise<typeof hooks> {
  const got: typeof hooks.got = [];
  let seen = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      seen++;
      if (seen <= r.failFirst) { res.writeHead(500).end('not yet'); return; }
      got.push({ path: req.url ?? '', headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  const r = { url: '', got, failFirst, close: () => new Promise<void>((res) => server.close(() => res())) };
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => { r.url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`; resolve(r); }));
}

before(async () => {
  [db, hooks] = await Promise.all([startPostgres(), hookReceiver(2)]);
  await db.psql(SEED, { db: 'app', user: 'app' });
  const target = { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' };
  const dead = await freePort(); // nothing listens there
  gw = await startGatewayProc((c) => {
    c.dev_idp.clients.push(
      { client_id: 'dba-2', client_secret: 'dba-2-secret', groups: ['dba'] },
      { client_id: 'boss', client_secret: 'boss-secret', groups: ['dba', 'sec-admins'] },
    );
    c.connections = [
      { name: 'jit', type: 'postgres', target, access: { groups: ['ci', 'dba'] }, review: { groups: ['dba'], min_approvals: 1, timeout: '2m' } },
      { name: 'jit-fast', type: 'postgres', target, access: { groups: ['ci'] }, review: { groups: ['dba'], min_approvals: 1, timeout: '3s' } },
      { name: 'jit2', type: 'postgres', target, access: { groups: ['ci'] }, lease: { default: '10m', max: '1h' }, review: { groups: ['dba'], min_approvals: 2, timeout: '1m', require_reason: true } },
      {
        name: 'held', type: 'postgres', target, access: { groups: ['ci', 'dba'] },
        review: { groups: ['dba'], lease: false, timeout: '1m' },
        guardrails: { deny: ['drop'], review: ['delete', 'update'] },
        masking: { columns: ['*ssn*'], detectors: ['email'] },
      },
    ];
    (c as Record<string, unknown>).notifications = [
      { url: hooks.url, events: ['review.created', 'review.decided'], format: 'json', secret_env: 'HOOK_SECRET' },
      { url: `${hooks.url}/slack`, events: ['review.created'], format: 'slack' },
      { url: `http://127.0.0.1:${dead}/gone`, events: ['review.decided'], attempts: 2, timeout: '1s' },
    ];
  }, { env: { APP_PW: 'app-secret', HOOK_SECRET } });
  await Promise.all([
    loginClient(gw, 'ci', 'ci-bot', 'ci-secret'),
    loginClient(gw, 'dba', 'dba-bot', 'dba-secret'),
    loginClient(gw, 'dba2', 'dba-2', 'dba-2-secret'),
    loginClient(gw, 'boss', 'boss', 'boss-secret'),
  ]);
});
after(async () => {
  if (process.env.DUMP_LOGS) (await import("node:fs")).writeFileSync(process.env.DUMP_LOGS, gw.logs());
  await gw?.stop();
  await db?.stop();
  await hooks?.close();
});

const reviewIdOf = async (cli: LiveCli) => (await cli.waitFor(/hoopctl approve (r_[a-z0-9]+)/))[1];
const json = <T = any>(s: string): T => JSON.parse(s) as T;
const ranCount = async (op: string) => Number((await db.psql(`select count(*) from ran where op = '${op}'`, { db: 'app', user: 'app' })).trim());

/** `connect` in the background; resolves when it prints the review id */
async function connectPending(home: string, conn: string, extra: string[] = []) {
  const port = await freePort();
  const cli = gw.spawnCli(['connect', conn, '--port', String(port), ...extra], { home });
  return { cli, port, id: await reviewIdOf(cli) };
}

test('lease review: connect waits, another process approves, psql works; the duration starts at approval', async () => {
  const { cli, port, id } = await connectPending('ci', 'jit', ['--reason', 'INC-42', '--duration', '10m']);
  firstReview = id;
  assert.match(cli.stderr(), /waiting for approval by dba/);
  const list = await gw.cli(['reviews', '--json'], { home: 'dba' });
  assert.equal(list.code, 0, list.stderr);
  const r = json(list.stdout).find((x: { id: string }) => x.id === id);
  assert.equal(r.kind, 'lease');
  assert.equal(r.requester, 'ci-bot');
  assert.equal(r.reason, 'INC-42');
  assert.equal(r.can_decide, true);
  await new Promise((res) => setTimeout(res, 1500)); // the duration must not run while it waits
  const approvedAt = Date.now();
  const ok = await gw.cli(['approve', id, '--reason', 'looks fine'], { home: 'dba' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /Approved r_\w+: access to jit/);
  await cli.waitFor(/Try: psql/, 5000);
  assert.match(cli.stderr(), /Approved by dba-bot: looks fine/);
  const q = await psqlRun(port, ['-At', '-c', 'select 40 + 2']);
  assert.equal(q.stdout.trim(), '42', q.stderr);
  const leases = json((await gw.cli(['leases', '--json'], { home: 'ci' })).stdout);
  const l = leases.find((x: { connection: string; status: string }) => x.connection === 'jit' && x.status === 'active');
  const ends = Date.parse(l.expires_at);
  assert.ok(ends >= approvedAt + 10 * 60_000 - 2000 && ends <= Date.now() + 10 * 60_000 + 1000, `lease ends 10m after approval (ends ${l.expires_at})`);
  cli.kill('SIGINT');
  await cli.exited;
  await gw.cli(['revoke', l.id], { home: 'ci' });
});

test('lease review: rejection and timeout exit 5 with the reason', async () => {
  const a = await connectPending('ci', 'jit', ['--new-lease']);
  const rej = await gw.cli(['reject', a.id, '--reason', 'not during the freeze'], { home: 'dba' });
  assert.equal(rej.code, 0, rej.stderr);
  const ra = await a.cli.exited;
  assert.equal(ra.code, 5);
  assert.match(ra.stderr, /rejected by dba-bot: not during the freeze/);
  const again = await gw.cli(['approve', a.id], { home: 'dba2' });
  assert.equal(again.code, 4);
  assert.match(again.stderr, /already rejected by dba-bot/);

  const b = await connectPending('ci', 'jit-fast', ['--new-lease']);
  const rb = await b.cli.exited; // review.timeout is 3s
  assert.equal(rb.code, 5);
  assert.match(rb.stderr, /timed out after 3s without a decision/);
  const late = await gw.cli(['approve', b.id], { home: 'dba' });
  assert.equal(late.code, 4);
  assert.match(late.stderr, /already expired/);
});

test('nobody decides their own request, admins included; outsiders cannot see it; Ctrl-C withdraws', async () => {
  const { cli, id } = await connectPending('boss', 'jit', ['--new-lease']);
  const own = await gw.cli(['approve', id], { home: 'boss' });
  assert.equal(own.code, 4);
  assert.match(own.stderr, /your own request: nobody decides their own request, admins included/);
  const ownJson = await gw.cli(['reject', id, '--json'], { home: 'boss' });
  assert.equal(json(ownJson.stdout).error, 'review_own_request');
  const outsider = await gw.cli(['approve', id], { home: 'ci' });
  assert.equal(outsider.code, 4);
  assert.match(outsider.stderr, /no review "r_/);
  assert.equal((await gw.cli(['approve', 'r_doesnotexist'], { home: 'dba' })).code, 4);
  assert.ok(!json((await gw.cli(['reviews', '--json'], { home: 'boss' })).stdout).some((r: { id: string }) => r.id === id), 'not offered to its own requester');
  const long = await gw.cli(['approve', id, '--reason', 'x'.repeat(5000)], { home: 'dba' });
  assert.equal(long.code, 2);
  cli.kill('SIGINT');
  const done = await cli.exited;
  assert.equal(done.code, 130);
  assert.match(done.stderr, /Request withdrawn/);
  const mine = json((await gw.cli(['reviews', '--mine', '--json'], { home: 'boss' })).stdout).find((r: { id: string }) => r.id === id);
  assert.equal(mine.status, 'cancelled');
  const after = await gw.cli(['approve', id], { home: 'dba' });
  assert.equal(after.code, 4);
});

test('min_approvals 2 needs two distinct reviewers; require_reason makes --reason mandatory', async () => {
  const noReason = await gw.cli(['connect', 'jit2'], { home: 'ci' });
  assert.equal(noReason.code, 2);
  assert.match(noReason.stderr, /requires a reason/);
  const { cli, id } = await connectPending('ci', 'jit2', ['--reason', 'CHG-7']);
  const first = await gw.cli(['approve', id], { home: 'dba' });
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /1 of 2/);
  const twice = await gw.cli(['approve', id], { home: 'dba' });
  assert.equal(twice.code, 4);
  assert.match(twice.stderr, /already approved review .*each reviewer decides once/);
  assert.doesNotMatch(cli.stdout(), /Try:/, 'one approval is not enough');
  const second = await gw.cli(['approve', id, '--reason', 'second pair of eyes'], { home: 'dba2' });
  assert.equal(second.code, 0, second.stderr);
  await cli.waitFor(/Try: psql/, 5000);
  cli.kill('SIGINT');
  await cli.exited;
});

test('concurrent decisions: two approvals, or approve against reject, give one outcome', async () => {
  for (const [x, y] of [['approve', 'approve'], ['approve', 'reject'], ['reject', 'approve']]) {
    const { cli, id } = await connectPending('ci', 'jit', ['--new-lease']);
    const [a, b] = await Promise.all([gw.cli([x, id, '--json'], { home: 'dba' }), gw.cli([y, id, '--json'], { home: 'boss' })]);
    const codes = [a.code, b.code].sort();
    assert.deepEqual(codes, [0, 4], `${x} vs ${y}: ${a.stdout}${a.stderr} / ${b.stdout}${b.stderr}`);
    const winner = json((a.code === 0 ? a : b).stdout).review.status;
    if (winner === 'approved') {
      await cli.waitFor(/Try: psql/, 5000);
      cli.kill('SIGINT');
      await cli.exited;
    } else {
      assert.equal((await cli.exited).code, 5);
    }
  }
});

// ---------------------------------------------------------------- held statements

let heldPort = 0;
let heldCli: LiveCli | undefined;
async function heldConnect(): Promise<number> {
  if (heldCli) return heldPort;
  heldPort = await freePort();
  heldCli = gw.spawnCli(['connect', 'held', '--port', String(heldPort), '--reason', 'cleanup'], { home: 'ci' });
  await heldCli.waitFor(/Try: psql/);
  return heldPort;
}
after(async () => { heldCli?.kill('SIGINT'); await heldCli?.exited; });

function psqlLive(port: number, args: string[]) {
  const p = spawn('psql', ['-X', `postgres://x:y@127.0.0.1:${port}/app`, ...args], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' } });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => { out += d; });
  p.stderr.on('data', (d) => { err += d; });
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => p.on('close', (code) => res({ code, stdout: out, stderr: err })));
  const waitFor = async (re: RegExp, ms = 15_000) => {
    const end = Date.now() + ms;
    for (;;) {
      const m = (out + err).match(re);
      if (m) return m;
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}: ${out}${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { p, exited, waitFor, out: () => out, err: () => err };
}
const psqlRun = (port: number, args: string[]) => psqlLive(port, args).exited;

test('held statement (psql): a notice names the review; approved, it runs once, exactly as reviewed; the review is masked', async () => {
  const port = await heldConnect();
  const before = await ranCount('DELETE');
  const run = psqlLive(port, ['-At', '-c', "delete from victims where ssn = '111-22-3333' and email = 'cy@example.net'", '-c', 'select count(*) from victims']);
  const [, id] = await run.waitFor(/held for review (r_[a-z0-9]+) \(guardrail "delete"\).*hoopctl approve r_/);
  assert.equal(await ranCount('DELETE'), before, 'nothing ran while held');
  const list = json((await gw.cli(['reviews', '--json'], { home: 'dba' })).stdout);
  const r = list.find((x: { id: string }) => x.id === id);
  assert.equal(r.kind, 'statement');
  assert.equal(r.rule, 'delete');
  assert.equal(r.reason, 'cleanup');
  // ssn: a column rule (the literal compared with it is starred); email: the detector's mask
  assert.match(r.statement, /^delete from victims where ssn = '\*\*\*-\*\*-\*\*\*\*' and email = '\*\*@[^']*'$/);
  assert.doesNotMatch(JSON.stringify(list), /111-22-3333|cy@example\.net/);
  const ok = await gw.cli(['approve', id, '--reason', 'ticket 9'], { home: 'dba' });
  assert.equal(ok.code, 0, ok.stderr);
  const done = await run.exited;
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stdout, /^2$/m);
  assert.equal(await ranCount('DELETE'), before + 1, 'ran exactly once');
  const again = await gw.cli(['approve', id], { home: 'dba2' });
  assert.equal(again.code, 4);
  // replay shows the hold and the decision, audit has who and why
  const sessions = json((await gw.cli(['sessions', '--json', '--conn', 'held'], { home: 'ci' })).stdout);
  let text = '';
  for (const s of sessions) {
    const rp = await gw.cli(['replay', s.id, '--no-timing'], { home: 'ci' });
    if (rp.stdout.includes(id)) text = rp.stdout;
  }
  assert.match(text, new RegExp(`held for review ${id} — approved by dba-bot: ticket 9`));
  assert.doesNotMatch(text, /111-22-3333/);
  const audit = json((await gw.cli(['audit', '--json'], { home: 'boss' })).stdout);
  const ev = audit.find((e: { type: string; data: { review?: string } }) => e.type === 'review.approved' && e.data.review === id);
  assert.equal(ev?.actor, 'dba-bot');
  assert.equal(ev?.data.reason, 'ticket 9');
  assert.ok(audit.some((e: { type: string; data: { review?: string } }) => e.type === 'review.created' && e.data.review === id));
});

test('held statement: rejection answers 42501 with the reason and the session goes on; Ctrl-C withdraws', async () => {
  const port = await heldConnect();
  const before = await ranCount('UPDATE');
  const run = psqlLive(port, ['-At', '-c', "update victims set name = 'X' where id = 1", '-c', 'select 41 + 1']);
  const [, id] = await run.waitFor(/held for review (r_[a-z0-9]+)/);
  await gw.cli(['reject', id, '--reason', 'use the migration'], { home: 'dba' });
  const done = await run.exited;
  assert.match(done.stderr, new RegExp(`ERROR:  hoopctl: statement rejected in review ${id} by dba-bot: use the migration`));
  assert.match(done.stdout, /^42$/m, 'the session stays usable');
  assert.equal(await ranCount('UPDATE'), before);

  const cancel = psqlLive(port, ['-At', '-c', "update victims set name = 'Y' where id = 2"]);
  const [, cid] = await cancel.waitFor(/held for review (r_[a-z0-9]+)/);
  cancel.p.kill('SIGINT'); // psql sends a CancelRequest
  const c = await cancel.exited;
  assert.match(c.stderr, /canceling statement due to user request/);
  const mine = json((await gw.cli(['reviews', '--mine', '--json'], { home: 'ci' })).stdout).find((x: { id: string }) => x.id === cid);
  assert.equal(mine.status, 'cancelled');
  assert.equal((await gw.cli(['approve', cid], { home: 'dba' })).code, 4);
  assert.equal(await ranCount('UPDATE'), before);
});

test('held statement in the extended protocol (node-postgres), inside a transaction; a disconnect cancels its review', async () => {
  const port = await heldConnect();
  const c = new pg.Client({ connectionString: `postgres://x:y@127.0.0.1:${port}/app` });
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  c.on('error', () => {}); // the disconnect below is on purpose
  await c.connect();
  try {
    await c.query('begin');
    const q = c.query('update victims set ssn = $1 where id = $2', ['000-00-0000', 2]);
    for (let i = 0; i < 300 && !notices.length; i++) await new Promise((r) => setTimeout(r, 20));
    const id = /held for review (r_[a-z0-9]+)/.exec(notices[0] ?? '')?.[1];
    assert.ok(id, `notice: ${notices}`);
    const shown = json((await gw.cli(['reviews', '--json'], { home: 'dba2' })).stdout).find((x: { id: string }) => x.id === id);
    assert.match(shown.statement, /update victims set ssn = \$1 where id = \$2\n-- parameters: \$1 = '\*\*\*-\*\*-\*\*\*\*', \$2 = '2'/);
    assert.equal((await gw.cli(['approve', id!], { home: 'dba2' })).code, 0);
    assert.equal((await q).rowCount, 1);
    await c.query('commit');
    assert.equal((await c.query('select 1 as one')).rows[0].one, 1);
    // the same statement again needs a new approval: one approval, one execution
    const again = c.query('update victims set ssn = $1 where id = $2', ['000-00-0000', 2]);
    for (let i = 0; i < 300 && notices.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    const id2 = /held for review (r_[a-z0-9]+)/.exec(notices[1] ?? '')?.[1];
    assert.ok(id2 && id2 !== id);
    again.catch(() => {});
    // the client goes away while held: its review is cancelled
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    let status = '';
    for (let i = 0; i < 100 && status !== 'cancelled'; i++) {
      status = json((await gw.cli(['reviews', '--mine', '--json'], { home: 'ci' })).stdout).find((x: { id: string }) => x.id === id2)?.status;
      if (status !== 'cancelled') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 'cancelled');
  } finally {
    await c.end().catch(() => {});
  }
  assert.equal((await db.psql('select ssn from victims where id = 2', { db: 'app', user: 'app' })).trim(), '000-00-0000');
});

test('notifications: signed JSON retried past two failures, Slack text with the command, a final failure audited', async () => {
  const signed = hooks.got.filter((g) => g.path === '/hook');
  const created = signed.filter((g) => g.headers['x-hoop-event'] === 'review.created');
  const decided = signed.filter((g) => g.headers['x-hoop-event'] === 'review.decided');
  assert.ok(created.length > 0 && decided.length > 0, `received ${hooks.got.length}`);
  for (const g of signed) {
    const sig = createHmac('sha256', HOOK_SECRET).update(g.body).digest('hex');
    assert.equal(g.headers['x-hoop-signature'], `sha256=${sig}`);
  }
  // the receiver refused the first two deliveries: the very first review's still arrived
  assert.ok(created.some((g) => JSON.parse(g.body).review.id === firstReview), 'delivered after retries');
  assert.match(JSON.parse(created[0].body).review.approve_command, /^hoopctl approve r_/);
  const slack = hooks.got.filter((g) => g.path === '/hook/slack').map((g) => JSON.parse(g.body).text as string);
  const heldText = slack.find((t) => t.includes('delete from victims'));
  assert.ok(heldText, slack.join('\n---\n'));
  assert.match(heldText, /hoopctl approve r_[a-z0-9]+/);
  assert.equal(hooks.got.some((g) => g.path === '/hook/slack' && 'x-hoop-signature' in g.headers), false, 'unsigned without secret_env');
  assert.doesNotMatch(hooks.got.map((g) => g.body).join(), /111-22-3333|cy@example\.net/, 'notifications carry the masked statement');
  const audit = json((await gw.cli(['audit', '--json'], { home: 'boss' })).stdout);
  assert.ok(audit.some((e: { type: string; data: { url?: string } }) => e.type === 'notification.failed' && e.data.url?.endsWith('/gone')));
});

test('reviews --watch without a terminal prints a line per change', async () => {
  const watch = gw.spawnCli(['reviews', '--watch'], { home: 'dba' });
  await watch.waitFor(/Watching review requests/);
  const { cli, id } = await connectPending('ci', 'jit', ['--new-lease']);
  await watch.waitFor(new RegExp(`${id} requested by ci-bot: access to jit`));
  await gw.cli(['reject', id, '--reason', 'nope'], { home: 'dba2' });
  await watch.waitFor(new RegExp(`${id} rejected by dba-2: nope`));
  watch.kill('SIGINT');
  assert.equal((await watch.exited).code, 0);
  await cli.exited;
});

test('audit and token file stay free of raw held values', async () => {
  const audit = readFileSync(join(gw.dir, 'data', 'hoop.db')).toString('latin1');
  assert.doesNotMatch(audit, /111-22-3333/);
});

test('on a terminal (tmux): connect shows a spinner with the approve command and goes on when approved; reviews --watch lists it live', async (t) => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const exec = promisify(execFile);
  try { await exec('tmux', ['-V']); } catch { t.skip('tmux is not installed'); return; }
  const bin = new URL('../bin/hoopctl', import.meta.url).pathname;
  const run = (home: string, args: string) => `env -u CI -u CONTINUOUS_INTEGRATION HOOP_CONFIG_DIR='${gw.home(home)}' HOOP_GATEWAY='${gw.url}' DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent '${process.execPath}' '${bin}' ${args}; sleep 30`;
  const sWatch = `hoopwatch${process.pid}`;
  const sConn = `hoopconn${process.pid}`;
  const screen = async (s: string) => (await exec('tmux', ['capture-pane', '-p', '-t', s])).stdout;
  const until = async (s: string, re: RegExp) => {
    let text = '';
    for (let i = 0; i < 200; i++) {
      text = await screen(s);
      const m = text.match(re);
      if (m) return m;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`screen of ${s} never matched ${re}:\n${text}`);
  };
  await exec('tmux', ['new-session', '-d', '-s', sWatch, '-x', '160', '-y', '30', run('dba', 'reviews --watch')]);
  try {
    await until(sWatch, /Review requests — 0 open/);
    const port = await freePort();
    await exec('tmux', ['new-session', '-d', '-s', sConn, '-x', '160', '-y', '20', run('ci', `connect jit --new-lease --port ${port} --reason tty-test`)]);
    const [, id] = await until(sConn, /waiting for approval by dba — hoopctl approve (r_[a-z0-9]+)/);
    await until(sWatch, new RegExp(`${id}\\s+lease on jit by ci-bot`));
    await until(sWatch, /reason: tty-test/);
    assert.equal((await gw.cli(['approve', id, '--reason', 'on call'], { home: 'dba2' })).code, 0);
    await until(sConn, /connect with: psql/);
    await until(sWatch, new RegExp(`${id} approved by dba-2: on call`));
    await until(sWatch, /Review requests — 0 open/);
  } finally {
    await exec('tmux', ['kill-session', '-t', sWatch]).catch(() => {});
    await exec('tmux', ['kill-session', '-t', sConn]).catch(() => {});
  }
});

/** a bare protocol client: startup with our own parameters, one simple query, every message back */
async function rawQuery(port: number, params: Record<string, string>, sql: string, opts: { leaveAfterNotice?: boolean } = {}) {
  const net = await import('node:net');
  const { serialize } = await import('pg-protocol');
  const { Parser } = await import('pg-protocol/dist/parser.js');
  const sock = net.connect(port, '127.0.0.1');
  const msgs: Array<{ name: string; [k: string]: any }> = [];
  const parser = new Parser();
  let ready = 0;
  let wake = () => {};
  sock.on('data', (d: Buffer) => parser.parse(d, (m) => { msgs.push(m as never); if (m.name === 'readyForQuery') ready++; wake(); }));
  const until = (f: () => boolean) => new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`raw client timed out: ${JSON.stringify(msgs.map((m) => m.name))}`)), 20_000);
    wake = () => { if (f()) { clearTimeout(t); res(); } };
    wake();
  });
  await new Promise((r) => sock.once('connect', r));
  sock.write(serialize.startup({ user: 'x', database: 'app', ...params }));
  await until(() => ready === 1);
  sock.write(serialize.query(sql));
  if (opts.leaveAfterNotice) {
    await until(() => msgs.some((m) => m.name === 'notice'));
    sock.destroy();
  } else {
    await until(() => ready === 2);
    sock.end(serialize.end());
  }
  return msgs;
}

test('hoop.detach_reviews keeps a request after the client leaves; hoop.review runs it once, only for the same statement', async () => {
  const port = await heldConnect();
  const sql = "delete from victims where name = 'Nobody'";
  const before = await ranCount('DELETE');
  const first = await rawQuery(port, { 'hoop.detach_reviews': 'on' }, sql, { leaveAfterNotice: true });
  const notice = first.find((m) => m.name === 'notice')!;
  assert.equal(notice.routine, 'hoop_review_pending');
  const id = /(r_[a-z0-9]+)/.exec(notice.message)![1];
  await new Promise((r) => setTimeout(r, 300));
  const mine = () => gw.cli(['reviews', '--mine', '--json'], { home: 'ci' }).then((r) => json(r.stdout).find((x: { id: string }) => x.id === id));
  assert.equal((await mine()).status, 'pending', 'detached: still open after the client left');
  assert.equal((await gw.cli(['approve', id], { home: 'dba' })).code, 0);
  // another statement under that id: not this review's statement, so it is held anew
  const other = await rawQuery(port, { 'hoop.review': id, 'hoop.detach_reviews': 'on' }, `${sql} or id = 3`, { leaveAfterNotice: true });
  assert.ok(other.some((m) => m.name === 'notice'));
  const ran = await rawQuery(port, { 'hoop.review': id }, sql);
  assert.ok(ran.some((m) => m.name === 'commandComplete'), JSON.stringify(ran.map((m) => m.name)));
  assert.ok(!ran.some((m) => m.name === 'notice'), 'ran without a new review');
  assert.equal(await ranCount('DELETE'), before + 1);
  assert.equal((await mine()).used, true);
  // used once: the same again is held for a new review
  const twice = await rawQuery(port, { 'hoop.review': id }, sql, { leaveAfterNotice: true });
  assert.ok(twice.some((m) => m.name === 'notice'));
  assert.equal(await ranCount('DELETE'), before + 1);
  // and a rejection carries its routine marker
  const rej = rawQuery(port, {}, "update victims set name = 'Z' where id = 3");
  let rid = '';
  for (let i = 0; i < 100 && !rid; i++) {
    rid = json((await gw.cli(['reviews', '--json'], { home: 'dba' })).stdout).find((x: { statement: string }) => x.statement.includes("name = 'Z'"))?.id ?? '';
    if (!rid) await new Promise((r) => setTimeout(r, 100));
  }
  await gw.cli(['reject', rid, '--reason', 'no'], { home: 'dba' });
  const err = (await rej).find((m) => m.name === 'error')!;
  assert.equal(err.code, '42501');
  assert.equal(err.routine, 'hoop_review_rejected');
});
