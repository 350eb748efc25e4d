/**
 * `hoopctl exec` end to end against psql straight at the database (issue 11), ratios in one run:
 *
 * 1. `hoopctl exec app -c 'select 1'` (token in HOOP_TOKEN: lease lookup, tunnel token, WebSocket,
 *    login through the gateway, query, teardown) vs `psql -X -c 'select 1'` direct: median wall time.
 *    Goal: < 300 ms and ≤ 4× psql.
 * 2. `hoopctl --version`: median wall time. Goal: < 150 ms.
 * 3. A 1M-row select: `hoopctl exec --format csv` vs `psql --csv -c` direct, both > /dev/null:
 *    rows/s (goal ≥ 0.7× psql) and peak RSS (GNU time's %M).
 *
 * Runs alternate between the two sides so that a change in the machine's load hits both. Rows 1 and
 * 2 are also measured on a build (tsc into a temp dir next to a copy of bin/hoopctl, which prefers
 * dist/): that is what `npm install -g hoopctl` runs, without type stripping at start.
 * usage: node bench/exec.ts [runs=15] [bulk-runs=5]
 */
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, copyFileSync, symlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres } from '../test/helpers/postgres.ts';
import { startGatewayProc, BIN } from '../test/helpers/hoop.ts';

const RUNS = Number(process.argv[2] ?? 15);
const BULK_RUNS = Number(process.argv[3] ?? 5);
const ROWS = 1_000_000;
const BULK_SQL = `select g, 'row ' || g as label, g * 1.5 as x from generate_series(1, ${ROWS}) g`;
const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

// the installed shape: dist/ beside bin/, node_modules shared with this checkout
const root = new URL('..', import.meta.url).pathname;
const built = mkdtempSync(join(tmpdir(), 'hoop-bench-dist-'));
mkdirSync(join(built, 'bin'));
copyFileSync(join(root, 'bin/hoopctl'), join(built, 'bin/hoopctl'));
copyFileSync(join(root, 'package.json'), join(built, 'package.json'));
symlinkSync(join(root, 'node_modules'), join(built, 'node_modules'));
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json'), '--outDir', join(built, 'dist')], { stdio: 'inherit' });
const BUILT_BIN = join(built, 'bin/hoopctl');

const db = await startPostgres();
const gw = await startGatewayProc((c) => {
  c.connections = [{ name: 'app', type: 'postgres', target: { host: '127.0.0.1', port: db.port, database: 'app', user: 'app', password_env: 'APP_PW', sslmode: 'disable' }, access: { groups: ['ci'] } }];
}, { env: { APP_PW: 'app-secret' }, });
try {
  const tok = await (await fetch(`${gw.url}/oidc/token`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'ci-bot', client_secret: 'ci-secret', resource: gw.url }),
  })).json() as { access_token: string };
  const hoopEnv = { ...process.env, HOOP_GATEWAY: gw.url, HOOP_TOKEN: tok.access_token, HOOP_CONFIG_DIR: gw.home('bench'), NO_COLOR: '1' };
  const psqlEnv = { ...process.env, PGPASSWORD: 'app-secret', PGHOST: '127.0.0.1', PGPORT: String(db.port), PGUSER: 'app', PGDATABASE: 'app', PGSSLMODE: 'disable' };
  const hoop = (args: string[]) => [process.execPath, BIN, ...args];
  const hoopBuilt = (args: string[]) => [process.execPath, BUILT_BIN, ...args];

  /** wall ms and peak RSS (KB, when GNU time is there) of one run, stdout discarded */
  type Sample = { ms: number; rssKb: number };
  function timed(cmd: string[], env: NodeJS.ProcessEnv): Sample {
    const argv = GNU_TIME ? [GNU_TIME, '-f', '__RSS__%M', ...cmd] : cmd;
    const t0 = performance.now();
    const r = spawnSync(argv[0], argv.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 24 });
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`${cmd.join(' ')} exited ${r.status}: ${r.stderr}`);
    return { ms, rssKb: Number(/__RSS__(\d+)/.exec(String(r.stderr))?.[1] ?? NaN) };
  }
  const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
  const alternate = (n: number, a: () => Sample, b: () => Sample) => {
    const ra: Sample[] = [];
    const rb: Sample[] = [];
    for (let i = 0; i < n; i++) { ra.push(a()); rb.push(b()); }
    return [ra, rb] as const;
  };

  // warm-up: compile cache, the lease (then reused), the gateway's SCRAM key cache
  for (let i = 0; i < 3; i++) { timed(hoop(['exec', 'app', '-c', 'select 1']), hoopEnv); timed(hoopBuilt(['exec', 'app', '-c', 'select 1']), hoopEnv); }
  timed(hoop(['--version']), hoopEnv);
  timed(hoopBuilt(['--version']), hoopEnv);

  const ex: Sample[] = [];
  const exb: Sample[] = [];
  const ps: Sample[] = [];
  for (let i = 0; i < RUNS; i++) {
    ex.push(timed(hoop(['exec', 'app', '-c', 'select 1']), hoopEnv));
    exb.push(timed(hoopBuilt(['exec', 'app', '-c', 'select 1']), hoopEnv));
    ps.push(timed(['psql', '-X', '-c', 'select 1'], psqlEnv));
  }
  const version = Array.from({ length: RUNS }, () => timed(hoop(['--version']), hoopEnv).ms);
  const versionBuilt = Array.from({ length: RUNS }, () => timed(hoopBuilt(['--version']), hoopEnv).ms);
  // the machine's own start-up cost, for context: a loaded machine slows every process alike
  const nodeMs = median(Array.from({ length: RUNS }, () => timed([process.execPath, '-e', '0'], hoopEnv).ms));
  const [bx, bp] = alternate(BULK_RUNS, () => timed(hoop(['exec', 'app', '--format', 'csv', '-c', BULK_SQL]), hoopEnv), () => timed(['psql', '-X', '--csv', '-c', BULK_SQL], psqlEnv));

  const exMs = median(ex.map((r) => r.ms));
  const psMs = median(ps.map((r) => r.ms));
  const verMs = median(version);
  const exbMs = median(exb.map((r) => r.ms));
  const verbMs = median(versionBuilt);
  const bxMs = median(bx.map((r) => r.ms));
  const bpMs = median(bp.map((r) => r.ms));
  const rate = (ms: number) => ROWS / (ms / 1000);
  const f = (n: number) => n.toFixed(1);
  const rows = [
    ['`hoopctl exec app -c "select 1"` (median of ' + RUNS + ')', `${f(exMs)} ms`, `psql -c direct ${f(psMs)} ms`, `${(exMs / psMs).toFixed(2)}×`, exMs < 300 && exMs / psMs <= 4 ? 'yes' : 'no'],
    ['same, built (dist/)', `${f(exbMs)} ms`, `psql -c direct ${f(psMs)} ms`, `${(exbMs / psMs).toFixed(2)}×`, exbMs < 300 && exbMs / psMs <= 4 ? 'yes' : 'no'],
    ['`hoopctl --version` (median of ' + RUNS + ')', `${f(verMs)} ms`, `node -e 0: ${f(nodeMs)} ms`, `${(verMs / nodeMs).toFixed(2)}× node -e 0`, verMs < 150 ? 'yes' : 'no'],
    ['same, built (dist/)', `${f(verbMs)} ms`, `node -e 0: ${f(nodeMs)} ms`, `${(verbMs / nodeMs).toFixed(2)}× node -e 0`, verbMs < 150 ? 'yes' : 'no'],
    [`1M rows, \`exec --format csv\` (median of ${BULK_RUNS})`, `${f(bxMs)} ms, ${Math.round(rate(bxMs)).toLocaleString('en')} rows/s, peak RSS ${Math.round(median(bx.map((r) => r.rssKb)) / 1024)} MB`,
      `psql --csv direct ${f(bpMs)} ms, ${Math.round(rate(bpMs)).toLocaleString('en')} rows/s, peak RSS ${Math.round(median(bp.map((r) => r.rssKb)) / 1024)} MB`, `${(rate(bxMs) / rate(bpMs)).toFixed(2)}× rows/s`, rate(bxMs) / rate(bpMs) >= 0.7 ? 'yes' : 'no'],
  ];
  const load = (await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' ');
  process.stdout.write(`\n${new Date().toISOString()} load average ${load}\n\n| measure | hoopctl | direct | ratio | goal met |\n|---|---|---|---|---|\n${rows.map((r) => `| ${r.join(' | ')} |`).join('\n')}\n`);
} finally {
  await gw.stop();
  await db.stop();
  rmSync(built, { recursive: true, force: true });
}
