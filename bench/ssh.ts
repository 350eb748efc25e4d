/**
 * The ssh engine's benchmark (issue 12), every figure against the direct path in the same run:
 *
 *   1. scp of a 200 MB file (upload, to /dev/null on the target) through `hoopctl connect` and the
 *      gateway, against scp straight to the same sshd: MB/s and the ratio (goal ≥ 0.5×);
 *   2. keystroke echo latency: one byte typed into `cat` on a pty (raw mode: the target echoes
 *      each byte at once), 300 keystrokes one after the other, through the gateway and direct;
 *      the median added by the gateway (goal < 5 ms);
 *   3. gateway memory per idle SSH session: 100 concurrent ssh connections each with an idle
 *      `cat` channel, gateway VmRSS before and after (and after a GC, when exposed).
 *
 *   node bench/ssh.ts          (SSH_BENCH_MB=200 SSH_BENCH_RUNS=3 SSH_BENCH_KEYS=300 SSH_BENCH_IDLE=100)
 *
 * Needs /usr/sbin/sshd (openssh-server) and the OpenSSH clients; it starts its own sshd, gateway
 * and `hoopctl connect` on loopback ports and stops them at the end.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { startSshd, sshOpts } from '../test/helpers/sshd.ts';
import { startGatewayProc, loginClient } from '../test/helpers/hoop.ts';
import { freePort } from '../test/helpers/postgres.ts';

const exec = promisify(execFile);
const MB = Number(process.env.SSH_BENCH_MB ?? 200);
const RUNS = Number(process.env.SSH_BENCH_RUNS ?? 3);
const KEYS = Number(process.env.SSH_BENCH_KEYS ?? 300);
const IDLE = Number(process.env.SSH_BENCH_IDLE ?? 100);

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
/** user+system CPU seconds of a process so far */
const cpu = (pid: number) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);

const work = mkdtempSync(join(tmpdir(), 'hoop-ssh-bench-'));
const sshd = await startSshd();
const gw = await startGatewayProc((c) => {
  c.connections = [{ name: 'bench', type: 'ssh', target: { host: '127.0.0.1', port: sshd.port, user: sshd.user, private_key_file: sshd.clientKeyFile, host_key: sshd.hostKey }, access: { groups: ['ci'] }, guardrails: { deny_patterns: ['rm\\s+-rf\\s+/'] } }];
}, { env: { HOOP_LOG_LEVEL: 'warn', ...(process.env.SSH_BENCH_PROF ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.SSH_BENCH_PROF}` } : {}) } });
let connect: ReturnType<typeof gw.spawnCli> | undefined;
const results: string[] = [];
try {
  await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
  const port = await freePort();
  connect = gw.spawnCli(['connect', 'bench', '--port', String(port)], { home: 'ci' });
  const m = await connect.waitFor(/UserKnownHostsFile=(\S+)/);
  const knownHosts = m[1];
  const via = [...sshOpts(port, knownHosts, 'hoop-bench')];
  const khDirect = join(work, 'known_hosts');
  writeFileSync(khDirect, `direct-sshd ${sshd.hostKey}\n`);
  const direct = [...sshOpts(sshd.port, khDirect, 'direct-sshd'), '-i', sshd.clientKeyFile];
  const scpArgs = (o: string[]) => o.map((a) => (a === '-p' ? '-P' : a));
  results.push(`machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, node ${process.version}, ${(await exec('ssh', ['-V'])).stderr.trim()}`);

  // 1. scp throughput
  const file = join(work, 'payload.bin');
  await new Promise<void>((resolve, reject) => {
    const w = createWriteStream(file);
    const chunk = randomBytes(1 << 20);
    let i = 0;
    const more = () => { while (i < MB) { i++; if (!w.write(chunk)) return void w.once('drain', more); } w.end(resolve); };
    w.on('error', reject);
    more();
  });
  const cipher = (await exec('ssh', [...direct, '-v', `${sshd.user}@127.0.0.1`, 'true']).catch((e) => e)).stderr.match(/kex: client->server cipher: (\S+)/)?.[1] ?? '?';
  const cipherVia = (await exec('ssh', [...via, '-v', `${sshd.user}@127.0.0.1`, 'true']).catch((e) => e)).stderr.match(/kex: client->server cipher: (\S+)/)?.[1] ?? '?';
  const scpOnce = async (o: string[]) => {
    const t = process.hrtime.bigint();
    await exec('scp', ['-q', ...scpArgs(o), ...(process.env.SSH_BENCH_SCP_CIPHER ? ['-c', process.env.SSH_BENCH_SCP_CIPHER] : []), file, `${sshd.user}@127.0.0.1:/dev/null`], { maxBuffer: 1 << 20 });
    return MB / (Number(process.hrtime.bigint() - t) / 1e9);
  };
  const d: number[] = [];
  const g: number[] = [];
  const cpuGw: number[] = [];
  const cpuCli: number[] = [];
  if (process.env.SSH_BENCH_CIPHERS) {
    for (const c of process.env.SSH_BENCH_CIPHERS.split(',')) log(`cipher ${c}: direct ${(await scpOnce([...direct, '-c', c])).toFixed(1)} MB/s, gateway ${(await scpOnce([...via, '-c', c])).toFixed(1)} MB/s`);
  }
  for (let r = 0; r < RUNS; r++) {
    d.push(await scpOnce(direct));
    const [g0, c0] = [cpu(gw.proc.pid!), cpu(connect.proc.pid!)];
    g.push(await scpOnce(via));
    cpuGw.push(cpu(gw.proc.pid!) - g0);
    cpuCli.push(cpu(connect.proc.pid!) - c0);
    log(`scp run ${r + 1}: direct ${d.at(-1)!.toFixed(1)} MB/s, gateway ${g.at(-1)!.toFixed(1)} MB/s`);
  }
  results.push(`scp ${MB} MB upload (ciphers: user→gateway ${cipherVia}, direct ${cipher}), median of ${RUNS}: direct ${median(d).toFixed(1)} MB/s, through the gateway ${median(g).toFixed(1)} MB/s, ratio ${(median(g) / median(d)).toFixed(2)}× (runs: direct ${d.map((x) => x.toFixed(0)).join('/')}, gateway ${g.map((x) => x.toFixed(0)).join('/')})`);
  results.push(`  CPU per gateway scp (median): gateway ${median(cpuGw).toFixed(2)} s (${((median(cpuGw) * median(g)) / MB).toFixed(2)} of one core while it ran), hoopctl connect ${median(cpuCli).toFixed(2)} s; ${(MB / median(cpuGw)).toFixed(0)} MB per gateway CPU second`);

  // 2. keystroke echo latency (Node ssh2 client on both paths, so the client's own cost cancels out)
  const login = (p: number, direct: boolean) => new Promise<ssh2.Client>((resolve, reject) => {
    const c = new ssh2.Client();
    // interactive: no Nagle on the client's socket (OpenSSH's client sets TCP_NODELAY for a pty too)
    c.once('ready', () => { c.setNoDelay(true); resolve(c); });
    c.once('error', reject);
    c.connect({ host: '127.0.0.1', port: p, username: sshd.user, ...(direct ? { privateKey: readFileSync(sshd.clientKeyFile) } : { authHandler: ['none'] }), readyTimeout: 20_000 });
  });
  const echoLatency = async (c: ssh2.Client): Promise<number[]> => {
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) => c.exec('stty raw -echo; echo ready; exec cat', { pty: { term: 'xterm', cols: 80, rows: 24 } }, (err, s) => (err ? reject(err) : resolve(s))));
    let buf = '';
    let waiter: (() => void) | undefined;
    ch.on('data', (b: Buffer) => { buf += b.toString('latin1'); waiter?.(); });
    await new Promise<void>((resolve) => { const chk = () => { if (buf.includes('ready')) { buf = ''; resolve(); } else waiter = chk; }; chk(); });
    const out: number[] = [];
    for (let i = 0; i < KEYS; i++) {
      const ch1 = String.fromCharCode(97 + (i % 26));
      const t = process.hrtime.bigint();
      await new Promise<void>((resolve) => { waiter = () => { if (buf.includes(ch1)) { buf = ''; waiter = undefined; resolve(); } }; ch.write(ch1); });
      out.push(Number(process.hrtime.bigint() - t) / 1e6);
      await new Promise((r) => setTimeout(r, 2)); // typing, not a flood
    }
    ch.close();
    return out;
  };
  const cd = await login(sshd.port, true);
  const cg = await login(port, false);
  const ld = await echoLatency(cd);
  const lg = await echoLatency(cg);
  cd.end();
  cg.end();
  results.push(`keystroke echo (${KEYS} keys, cat on a raw pty): direct median ${median(ld).toFixed(2)} ms (p90 ${pct(ld, 0.9).toFixed(2)}), through the gateway median ${median(lg).toFixed(2)} ms (p90 ${pct(lg, 0.9).toFixed(2)}); added by the gateway: ${(median(lg) - median(ld)).toFixed(2)} ms median`);

  // 3. memory per idle session
  await new Promise((r) => setTimeout(r, 1000));
  const before = rss(gw.proc.pid!);
  const clients: ssh2.Client[] = [];
  for (let i = 0; i < IDLE; i++) {
    const c = await login(port, false);
    await new Promise<void>((resolve, reject) => c.exec('cat', (err) => (err ? reject(err) : resolve())));
    clients.push(c);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const after = rss(gw.proc.pid!);
  const connectRss = rss(connect.proc.pid!);
  results.push(`idle: ${IDLE} concurrent ssh sessions (a cat channel each): gateway VmRSS ${before.toFixed(0)} → ${after.toFixed(0)} MB, ${(((after - before) * 1024) / IDLE).toFixed(0)} KB per session; hoopctl connect VmRSS ${connectRss.toFixed(0)} MB`);
  for (const c of clients) c.end();
} finally {
  connect?.kill('SIGINT');
  await connect?.exited;
  await gw.stop();
  await sshd.stop();
  rmSync(work, { recursive: true, force: true });
}
console.log(results.join('\n'));
