/**
 * Review latency (issue 9): from the reviewer's `hoopctl approve` returning to
 *   (a) the held statement's result reaching psql, and
 *   (b) a waiting `hoopctl connect` listening,
 * median and p95 over REVIEW_N reviews (default 50). Goal < 100 ms: the gateway pushes (the
 * engine's waiter, the connect's long poll), nothing polls on a timer. Also the same from the
 * approve API call answering (no CLI start-up in the way), and, as this run's anchor, a direct
 * `psql -c 'select 1'` against the same PostgreSQL.
 *
 *   node bench/reviews.ts            (needs PostgreSQL binaries and psql on PATH)
 *
 * A negative figure means the result arrived before the approving CLI process had exited: the
 * decision reaches the waiting session before the HTTP answer reaches the reviewer.
 */
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startPostgres, freePort } from '../test/helpers/postgres.ts';
import { startGatewayProc, loginClient, BIN, cliEnv } from '../test/helpers/hoop.ts';

const exec = promisify(execFile);
const N = Number(process.env.REVIEW_N ?? 50);
if (!Number.isInteger(N) || N < 1 || N > 1000) throw new Error('REVIEW_N must be 1..1000');

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
const fmt = (xs: number[]) => `median ${pct(xs, 50).toFixed(1)} ms, p95 ${pct(xs, 95).toFixed(1)} ms (n=${xs.length})`;

function live(cmd: string, args: string[], env: NodeJS.ProcessEnv) {
  const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const waiters: Array<() => void> = [];
  const on = (d: Buffer) => { text += d; waiters.splice(0).forEach((w) => w()); };
  p.stdout.on('data', on);
  p.stderr.on('data', on);
  const exited = new Promise<void>((r) => p.on('close', () => { waiters.splice(0).forEach((w) => w()); r(); }));
  return {
    p, exited,
    /** resolves (with the time it matched) when `re` matches the output */
    when(re: RegExp, ms = 30_000): Promise<{ m: RegExpMatchArray; at: number }> {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timeout waiting for ${re}: ${text}`)), ms);
        const check = () => {
          const m = text.match(re);
          if (m) { clearTimeout(t); resolve({ m, at: performance.now() }); } else if (p.exitCode !== null) { clearTimeout(t); reject(new Error(`exited: ${text}`)); } else waiters.push(check);
        };
        check();
      });
    },
  };
}

const db = await startPostgres();
await db.psql('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100000);', { db: 'app', user: 'app' });
const target = { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' };
const gw = await startGatewayProc((c) => {
  c.connections = [
    { name: 'held', type: 'postgres', target, access: { groups: ['ci'] }, review: { groups: ['dba'], lease: false }, guardrails: { review: ['delete'] } },
    { name: 'jit', type: 'postgres', target, access: { groups: ['ci'] }, review: { groups: ['dba'] } },
  ];
}, { env: { APP_PW: 'app-secret', HOOP_LOG_LEVEL: 'warn' } });
try {
  await Promise.all([loginClient(gw, 'ci', 'ci-bot', 'ci-secret'), loginClient(gw, 'dba', 'dba-bot', 'dba-secret')]);
  const dbaEnv = cliEnv(gw.home('dba'), gw.url);
  const ciEnv = cliEnv(gw.home('ci'), gw.url);
  const dbaToken = () => JSON.parse(readFileSync(join(gw.home('dba'), 'tokens.json'), 'utf8'))[gw.url].access_token as string;
  const approve = async (id: string, how: 'cli' | 'api'): Promise<number> => {
    if (how === 'cli') {
      const a = live(process.execPath, [BIN, 'approve', id], dbaEnv);
      await a.exited;
      if (a.p.exitCode !== 0) throw new Error(`approve ${id} failed`);
      return performance.now();
    }
    const res = await fetch(`${gw.url}/api/reviews/${id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${dbaToken()}`, 'content-type': 'application/json' }, body: '{}' });
    if (!res.ok) throw new Error(`approve ${id}: HTTP ${res.status}`);
    await res.arrayBuffer();
    return performance.now();
  };

  // the anchor: a direct psql round trip on this machine, now
  const direct: number[] = [];
  for (let i = 0; i < Math.min(N, 20); i++) {
    const t0 = performance.now();
    await exec('psql', ['-XAtq', '-h', '127.0.0.1', '-p', String(db.port), '-U', 'app', '-d', 'app', '-c', 'select 1'], { env: { ...process.env, PGPASSWORD: 'app-secret' } });
    direct.push(performance.now() - t0);
  }

  // (a) held statements
  const port = await freePort();
  const conn = live(process.execPath, [BIN, 'connect', 'held', '--port', String(port)], ciEnv);
  await conn.when(/Try: psql/);
  const held: Record<'cli' | 'api', number[]> = { cli: [], api: [] };
  for (let i = 0; i < N; i++) {
    for (const how of ['cli', 'api'] as const) {
      const q = live('psql', ['-X', '-At', `postgres://x:y@127.0.0.1:${port}/app`, '-c', `delete from t where id = ${i * 2 + (how === 'api' ? 1 : 0) + 1}`], process.env);
      const { m } = await q.when(/hoopctl approve (r_[a-z0-9]+)/);
      const done = q.when(/DELETE \d+/);
      const t0 = await approve(m[1], how);
      held[how].push((await done).at - t0);
      await q.exited;
    }
    process.stderr.write(`\rheld statements: ${i + 1}/${N}${i + 1 === N ? "\n" : ""}`);
  }
  conn.p.kill('SIGINT');
  await conn.exited;
  process.stderr.write('\n');

  // (b) a waiting connect
  const leases: Record<'cli' | 'api', number[]> = { cli: [], api: [] };
  for (let i = 0; i < N; i++) {
    for (const how of ['cli', 'api'] as const) {
      const c = live(process.execPath, [BIN, 'connect', 'jit', '--new-lease', '--port', String(await freePort())], ciEnv);
      const { m } = await c.when(/hoopctl approve (r_[a-z0-9]+)/);
      const listening = c.when(/Try: psql/);
      const t0 = await approve(m[1], how);
      leases[how].push((await listening).at - t0);
      c.p.kill('SIGINT');
      await c.exited;
    }
    process.stderr.write(`\rwaiting connects: ${i + 1}/${N}`);
  }
  process.stderr.write('\n');

  const lines = [
    `anchor: direct psql -c 'select 1' (process start to exit): ${fmt(direct)}`,
    `held statement, approve CLI exit -> result at psql:       ${fmt(held.cli)}`,
    `held statement, approve API answer -> result at psql:     ${fmt(held.api)}`,
    `waiting connect, approve CLI exit -> connect listening:   ${fmt(leases.cli)}`,
    `waiting connect, approve API answer -> connect listening: ${fmt(leases.api)}`,
    `goal: < 100 ms (median and p95) -> ${[held.cli, held.api, leases.cli, leases.api].every((x) => pct(x, 95) < 100) ? 'met' : 'NOT met'}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await gw.stop();
  await db.stop();
}
