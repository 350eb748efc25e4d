/**
 * Turns bench/run.sh's raw.csv into markdown tables: median of the runs with min/max, the ratio
 * vs direct (or vs `node -e 0` for startup), proxy CPU split into client side (the `hoopctl connect`
 * process, or the anchor's client relay / the single proxy process) and server side (the gateway,
 * or the anchor's server relay), and the reference anchors of the 2026-11-22 run for context.
 * usage: node bench/summarize.ts raw.csv [env.txt]
 */
import { readFileSync, existsSync } from 'node:fs';

interface Row { bench: string; variant: string; path: string; rep: number; value: number; unit: string; work: number; cpuC: number; cpuS: number; extra: string }

const [csvFile, envFile] = process.argv.slice(2);
if (!csvFile) {
  process.stderr.write('usage: node bench/summarize.ts raw.csv [env.txt]\n');
  process.exit(2);
}
const rows: Row[] = readFileSync(csvFile, 'utf8').trim().split('\n').slice(1).map((l) => {
  const [bench, variant, path, rep, value, unit, work, cpuC, cpuS, ...extra] = l.split(',');
  return { bench, variant, path, rep: Number(rep), value: Number(value), unit, work: Number(work), cpuC: Number(cpuC), cpuS: Number(cpuS), extra: extra.join(',') };
});

/**
 * Medians of the reference run (shared/perf-baseline/summary-2026-11-22.md, same 2-core machine
 * kind), printed beside ours so a slower or faster machine day shows up as a shift of the anchors.
 */
const REF: Record<string, Record<string, number>> = {
  'iperf/up': { direct: 17.588, socat: 4.052, haproxy: 7.931, 'node+node': 1.867, 'node+node+bu': 4.931 },
  'iperf/down': { direct: 17.997, socat: 3.942, haproxy: 7.59, 'node+node': 5.806, 'node+node+bu': 5.629 },
  'connsetup/c1': { direct: 250.59, socat: 221.155, pgbouncer: 1946.88, haproxy: 209.083, 'node+node': 152.088, 'node+node+bu': 154.478 },
  'pgbench/c1': { direct: 6985.87, socat: 4952.42, pgbouncer: 5373.57, haproxy: 5160.5, 'node+node': 3091.61, 'node+node+bu': 3055.21 },
  'pgbench/c16': { direct: 27749.2, socat: 13061.8, pgbouncer: 18224.4, haproxy: 18198.9, 'node+node': 9230.24, 'node+node+bu': 8768.46 },
  'bulk/select': { direct: 4.55, socat: 4.51, 'node+node': 4.51, 'node+node+bu': 4.72 },
  'bulk/copy': { direct: 0.47, socat: 0.55, 'node+node': 0.59, 'node+node+bu': 0.5 },
};
/** proxy CPU of the reference run: µs/tx for pgbench, % of one core for iperf */
const REF_CPU: Record<string, Record<string, number>> = {
  'iperf/up': { socat: 98, haproxy: 91, 'node+node': 171, 'node+node+bu': 147 },
  'iperf/down': { socat: 97, haproxy: 90, 'node+node': 140, 'node+node+bu': 144 },
  'pgbench/c1': { socat: 60.59, pgbouncer: 50.99, haproxy: 56.89, 'node+node': 201.09, 'node+node+bu': 203.15 },
  'pgbench/c16': { socat: 50.54, pgbouncer: 20.3, haproxy: 27.33, 'node+node': 76.88, 'node+node+bu': 83.71 },
};
/** goals from the performance issue: hoop-tcp throughput as a fraction of direct */
const GOALS: Record<string, { path: string; min: number }> = {
  'iperf/up': { path: 'hoop-tcp', min: 0.28 },
  'iperf/down': { path: 'hoop-tcp', min: 0.31 },
  'connsetup/c1': { path: 'hoop-tcp', min: 0.6 },
};

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x: number, d = 2) => (Number.isFinite(x) ? (Math.abs(x) >= 1000 ? x.toFixed(0) : x.toFixed(d)) : '-');
const table = (head: string[], body: string[][]) =>
  [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');

function groups(bench: string): Map<string, Map<string, Row[]>> {
  const g = new Map<string, Map<string, Row[]>>();
  for (const r of rows.filter((x) => x.bench === bench && x.variant !== 'skipped')) {
    const byPath = g.get(r.variant) ?? new Map<string, Row[]>();
    g.set(r.variant, byPath);
    byPath.set(r.path, [...(byPath.get(r.path) ?? []), r]);
  }
  return g;
}
const vals = (rs: Row[]) => rs.map((r) => r.value);
const stats = (rs: Row[]) => { const v = vals(rs).filter(Number.isFinite); return { n: v.length, med: median(v), min: Math.min(...v), max: Math.max(...v) }; };
/** the reference figure and its ratio vs the reference direct (bulk: seconds, so direct / path) */
const ref = (key: string, path: string, unitFmt = (x: number) => fmt(x)) => {
  const r = REF[key]?.[path];
  const d = REF[key]?.direct;
  if (r === undefined || d === undefined) return '';
  return `${unitFmt(r)} (${fmt(key.startsWith('bulk') ? d / r : r / d)}×)`;
};
const cpuSplit = (rs: Row[], per: (r: Row) => number, d = 0) => {
  if (rs.every((r) => r.cpuC === 0 && r.cpuS === 0)) return '-';
  const t = median(rs.map((r) => (r.cpuC + r.cpuS) * per(r)));
  const c = median(rs.map((r) => r.cpuC * per(r)));
  const s = median(rs.map((r) => r.cpuS * per(r)));
  return s > 0 ? `${fmt(t, d)} (${fmt(c, d)} + ${fmt(s, d)})` : fmt(t, d);
};
const goalLine = (key: string, byPath: Map<string, Row[]>, d: number) => {
  const goal = GOALS[key];
  const rs = goal && byPath.get(goal.path);
  if (!goal || !rs) return '';
  const r = stats(rs).med / d;
  return `\nGoal: ${goal.path} ≥ ${goal.min}× direct → ${fmt(r)}× **${r >= goal.min ? 'met' : 'missed'}**\n`;
};

const out: string[] = [];
if (envFile && existsSync(envFile)) out.push('```', readFileSync(envFile, 'utf8').trim(), '```', '');

// startup
{
  const g = groups('startup').get('wall');
  if (g) {
    const floor = stats(g.get('node -e 0') ?? []).med;
    out.push('## startup: wall time (ms), hyperfine -N --warmup 3', '');
    out.push(table(['command', 'n', 'median ms', 'min', 'max', '× node -e 0', '+ms over node -e 0'],
      [...g].map(([p, rs]) => { const s = stats(rs); return [p, String(s.n), fmt(s.med, 1), fmt(s.min, 1), fmt(s.max, 1), fmt(s.med / floor), fmt(s.med - floor, 1)]; })), '');
  }
}

// iperf
for (const [variant, byPath] of groups('iperf')) {
  const key = `iperf/${variant}`;
  const d = stats(byPath.get('direct') ?? []).med;
  out.push(`## iperf ${variant === 'up' ? 'up (client → server)' : 'down (-R, server → client)'}: Gbit/s`, '');
  out.push(table(['path', 'n', 'median Gbit/s', 'min', 'max', '× direct', 'proxy CPU % of 1 core (client + server side)', 'ref 2026-11-22 Gbit/s (× direct)', 'ref CPU %'],
    [...byPath].map(([p, rs]) => { const s = stats(rs); return [p, String(s.n), fmt(s.med, 3), fmt(s.min, 3), fmt(s.max, 3), fmt(s.med / d), cpuSplit(rs, (r) => 100 / r.work, 0), ref(key, p, (x) => fmt(x, 3)), fmt(REF_CPU[key]?.[p] ?? NaN, 0)]; })));
  out.push(goalLine(key, byPath, d));
}

// connsetup and pgbench
for (const bench of ['connsetup', 'pgbench']) {
  for (const [variant, byPath] of groups(bench)) {
    const key = `${bench}/${variant}`;
    const d = stats(byPath.get('direct') ?? []).med;
    const title = bench === 'connsetup' ? 'connsetup: pgbench -S -C -c 1 (new connection per transaction), connections/s'
      : `pgbench -S -${variant.replace('c', 'c ')}: transactions/s`;
    out.push(`## ${title}`, '');
    out.push(table(['path', 'n', 'median tps', 'min', 'max', '× direct', 'latency ms', `proxy CPU µs/${bench === 'connsetup' ? 'conn' : 'tx'} (client + server side)`, 'ref 2026-11-22 tps (× direct)', 'ref CPU µs/tx'],
      [...byPath].map(([p, rs]) => { const s = stats(rs); return [p, String(s.n), fmt(s.med, 0), fmt(s.min, 0), fmt(s.max, 0), fmt(s.med / d), fmt(median(rs.map((r) => Number(r.extra))), 3), cpuSplit(rs, (r) => (r.work > 0 ? 1e6 / r.work : NaN), 0), ref(key, p, (x) => fmt(x, 0)), fmt(REF_CPU[key]?.[p] ?? NaN, 0)]; })));
    out.push(goalLine(key, byPath, d));
  }
}

// idle
{
  const g = groups('idle');
  if (g.size) {
    const m = (variant: string, p: string) => median(vals(g.get(variant)?.get(p) ?? []));
    const n = median((g.get('kb_per_conn')?.get('gateway') ?? []).map((r) => r.work));
    out.push(`## idle: ${fmt(n, 0)} concurrent idle tunnelled connections (tcp connection, echo target), VmRSS`, '');
    // the first run meets processes whose heap has not grown yet: the clean per-connection figure;
    // later runs partly reuse heap the earlier ones grew, so their deltas read low
    out.push(table(['process', 'RSS before (MB)', `RSS with ${fmt(n, 0)} open (MB)`, 'RSS after close (MB)', 'KB per connection, first run (fresh process)', 'KB per connection, all runs: median (min–max)'],
      [['gateway', 'gateway'], ['hoopctl connect', 'cli']].map(([label, p]) => {
        const perRows = g.get('kb_per_conn')?.get(p) ?? [];
        const per = vals(perRows);
        const first = perRows.find((r) => r.rep === 1)?.value ?? NaN;
        return [label, fmt(m('rss_before', p) / 1024, 1), fmt(m('rss_open', p) / 1024, 1), fmt(m('rss_after_close', p) / 1024, 1), fmt(first, 1), `${fmt(median(per), 1)} (${fmt(Math.min(...per), 1)}–${fmt(Math.max(...per), 1)})`];
      })));
    const rate = g.get('open_rate')?.get('hoop-tcp') ?? [];
    out.push('', `Opening (50 in flight, each proven by an echoed byte): median ${fmt(median(vals(rate)), 0)} conn/s; CLI + gateway CPU ${fmt(median(rate.map((r) => (r.cpuS * 1e6) / r.work)), 0)} µs per connection opened. RSS columns are medians over the runs; RSS is not given back after close, so "before" grows from run to run.`, '');
  }
}

// bulk
for (const [variant, byPath] of groups('bulk')) {
  const key = `bulk/${variant}`;
  const d = stats(byPath.get('direct') ?? []).med;
  out.push(`## bulk: psql -c "${variant === 'copy' ? 'copy pgbench_accounts to stdout' : 'select * from pgbench_accounts'}" > /dev/null`, '');
  out.push(table(['path', 'n', 'median s', 'min', 'max', 'rows/s', variant === 'copy' ? 'MB/s (COPY text)' : 'MB/s (COPY-text equivalent)', 'throughput × direct', 'proxy CPU s (client + server side)', 'ref 2026-11-22 s (× direct)'],
    [...byPath].map(([p, rs]) => {
      const s = stats(rs);
      const rowsN = rs[0].work;
      const bytes = Number(rs[0].extra);
      return [p, String(s.n), fmt(s.med, 2), fmt(s.min, 2), fmt(s.max, 2), fmt(rowsN / s.med, 0), fmt(bytes / 1e6 / s.med, 1), fmt(d / s.med), cpuSplit(rs, () => 1, 2), ref(key, p, (x) => fmt(x, 2))];
    })), '');
}

for (const r of rows.filter((x) => x.variant === 'skipped')) out.push(`${r.bench}: skipped: postgres engine not available (${r.extra})`, '');
console.log(out.join('\n'));
