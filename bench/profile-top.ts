/**
 * Top functions by self time in the V8 CPU profiles of a BENCH_PROF=1 run (node --cpu-prof), one
 * table per process, named from run.sh's pids.txt ("name pid" lines).
 * usage: node bench/profile-top.ts PROF_DIR [PIDS_FILE] [TOP=20]
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
interface Profile { nodes: Node[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

const [dir, pidsFile, topArg] = process.argv.slice(2);
if (!dir) {
  process.stderr.write('usage: node bench/profile-top.ts PROF_DIR [PIDS_FILE] [TOP]\n');
  process.exit(2);
}
const top = Number(topArg ?? 20);
const names = new Map<string, string>();
if (pidsFile && existsSync(pidsFile)) {
  for (const line of readFileSync(pidsFile, 'utf8').split('\n')) {
    const [name, pid] = line.trim().split(/\s+/);
    if (pid) names.set(pid, name);
  }
}
const root = new URL('..', import.meta.url).pathname;
const where = (url: string, line: number) => {
  if (!url) return '';
  const path = url.startsWith('file://') ? relative(root, new URL(url).pathname) : url;
  return `${path}:${line + 1}`;
};

for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
  const pid = file.split('.')[3] ?? '?';
  const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // self time per node from the samples and their time deltas (µs)
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = [...self].filter(([id]) => ['(idle)', '(program)'].includes(byId.get(id)?.callFrame.functionName ?? '')).reduce((a, [, t]) => a + t, 0);
  const agg = new Map<string, number>();
  for (const [id, t] of self) {
    const cf = byId.get(id)!.callFrame;
    const key = `${cf.functionName || '(anonymous)'} ${where(cf.url, cf.lineNumber)}`.trim();
    agg.set(key, (agg.get(key) ?? 0) + t);
  }
  const busy = total - idle;
  console.log(`## ${names.get(pid) ?? 'pid'} (pid ${pid}): ${(busy / 1e6).toFixed(2)} s busy of ${(total / 1e6).toFixed(2)} s sampled`, '');
  console.log('| self ms | % of busy | function |\n|---|---|---|');
  for (const [k, t] of [...agg].filter(([k]) => !/^\((idle|program)\)/.test(k)).sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`| ${(t / 1000).toFixed(0)} | ${((100 * t) / busy).toFixed(1)} | \`${k}\` |`);
  console.log('');
}
