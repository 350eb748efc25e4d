/**
 * Test harness for the real product: a gateway started as its own process from a YAML config
 * (`hoopctl gateway --config`), and the CLI run as a child process with its own HOOP_CONFIG_DIR.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from './postgres.ts';

export const BIN = new URL('../../bin/hoopctl', import.meta.url).pathname;

export interface RunResult { code: number | null; stdout: string; stderr: string }

export interface GatewayProc {
  url: string;
  port: number;
  dir: string;
  configFile: string;
  proc: ChildProcess;
  logs(): string;
  stop(): Promise<void>;
  /** runs the CLI against this gateway with its own config dir (one per `home`) */
  cli(args: string[], opts?: CliOpts): Promise<RunResult>;
  /** starts the CLI and returns the live child (for connect / login) */
  spawnCli(args: string[], opts?: CliOpts): LiveCli;
  home(name: string): string;
}

export interface CliOpts { home?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number }

export interface LiveCli {
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** resolves when `re` matches stdout+stderr */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<RunResult>;
  kill(signal?: NodeJS.Signals): void;
}

export const baseConfig = (port: number) => ({
  listen: `127.0.0.1:${port}`,
  store: 'sqlite:./data/hoop.db',
  auth: { issuer: 'dev', client_id: 'hoopctl', groups_claim: 'groups', admins: ['sec-admins'] },
  dev_idp: {
    users: [
      { username: 'alice', password: 'alice', groups: ['eng'] },
      { username: 'bob', password: 'bob', groups: ['dba', 'sec-admins'] },
    ],
    clients: [
      { client_id: 'ci-bot', client_secret: 'ci-secret', groups: ['ci'] },
      { client_id: 'dba-bot', client_secret: 'dba-secret', groups: ['dba'] },
      { client_id: 'admin-bot', client_secret: 'admin-secret', groups: ['sec-admins'] },
    ],
  },
  connections: [] as unknown[],
});

export function cliEnv(home: string, gatewayUrl: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOOP_CONFIG_DIR: home, HOOP_GATEWAY: gatewayUrl, NO_COLOR: '1', HOOP_LOG_LEVEL: 'warn', ...extra };
  // no OS keychain in tests: the Secret Service is unreachable, so tokens go to the 0600 file
  env.DBUS_SESSION_BUS_ADDRESS = 'unix:path=/nonexistent/hoop-test-bus';
  delete env.HOOP_TOKEN;
  delete env.HOOP_CLIENT_ID;
  delete env.HOOP_CLIENT_SECRET;
  return { ...env, ...extra };
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const live = spawnLive(args, env);
  if (opts.input !== undefined) live.proc.stdin?.end(opts.input);
  else live.proc.stdin?.end();
  const timer = setTimeout(() => live.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  return live.exited.finally(() => clearTimeout(timer));
}

function spawnLive(args: string[], env: NodeJS.ProcessEnv): LiveCli {
  const proc = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  const poke = () => waiters.splice(0).forEach((w) => w());
  proc.stdout!.on('data', (d) => { out += d; poke(); });
  proc.stderr!.on('data', (d) => { err += d; poke(); });
  const exited = new Promise<RunResult>((resolve) => proc.on('close', (code) => { poke(); resolve({ code, stdout: out, stderr: err }); }));
  let done = false;
  void exited.then(() => { done = true; });
  return {
    proc, exited,
    stdout: () => out,
    stderr: () => err,
    kill: (sig = 'SIGTERM') => { if (!done) proc.kill(sig); },
    waitFor(re, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}\nstdout: ${out}\nstderr: ${err}`)), timeoutMs);
        const check = () => {
          const m = (out + err).match(re);
          if (m) { clearTimeout(timer); return resolve(m); }
          if (done) { clearTimeout(timer); return reject(new Error(`exited before ${re}\nstdout: ${out}\nstderr: ${err}`)); }
          waiters.push(check);
        };
        check();
      });
    },
  };
}

/** Starts a gateway process. `mutate` edits the config object (connections etc.) before it is written. */
export async function startGatewayProc(mutate: (cfg: ReturnType<typeof baseConfig>) => void = () => {}, opts: { env?: NodeJS.ProcessEnv; dir?: string; port?: number; healthUrl?: string } = {}): Promise<GatewayProc> {
  const port = opts.port ?? await freePort();
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'hoop-gw-'));
  const cfg = baseConfig(port);
  mutate(cfg);
  const configFile = join(dir, 'gateway.yaml');
  writeFileSync(configFile, stringify(cfg));
  const proc = spawn(process.execPath, [BIN, 'gateway', '--config', configFile], {
    env: { ...process.env, HOOP_LOG_LEVEL: process.env.HOOP_LOG_LEVEL ?? 'info', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], cwd: dir,
  });
  let logs = '';
  proc.stdout!.on('data', (d) => { logs += d; });
  proc.stderr!.on('data', (d) => { logs += d; });
  let stopping = false;
  let started = false;
  // a gateway that dies under a test is a bug: say so with its last log lines, not just ECONNREFUSED later
  proc.once('exit', (code, signal) => {
    if (started && !stopping && code !== 0) process.stderr.write(`\n[test harness] gateway on port ${port} exited unexpectedly (code ${code}, signal ${signal}); last log lines:\n${logs.split('\n').slice(-40).join('\n')}\n`);
  });
  const url = opts.healthUrl ?? `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`gateway exited with ${proc.exitCode}:\n${logs}`);
    try {
      if (await healthy(`${url}/healthz`)) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`gateway did not start:\n${logs}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  started = true;
  const homes = new Map<string, string>();
  const home = (name: string) => {
    let h = homes.get(name);
    if (!h) homes.set(name, (h = join(dir, `home-${name}`)));
    return h;
  };
  const envFor = (o: CliOpts = {}) => cliEnv(home(o.home ?? 'default'), url, o.env);
  return {
    url, port, dir, configFile, proc,
    logs: () => logs,
    home,
    cli: (args, o = {}) => runCli(args, envFor(o), o),
    spawnCli: (args, o = {}) => { const l = spawnLive(args, envFor(o)); l.proc.stdin?.end(); return l; },
    async stop() {
      stopping = true;
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('close', r));
      }
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** liveness only: a self-signed test certificate is fine here (the CLI under test checks it for real) */
async function healthy(url: string): Promise<boolean> {
  if (!url.startsWith('https:')) return (await fetch(url)).ok;
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    https.get(url, { rejectUnauthorized: false }, (res) => { res.resume(); resolve(res.statusCode === 200); }).on('error', reject);
  });
}

/** Logs a CLI home in as a dev_idp client (client credentials). */
export async function loginClient(gw: GatewayProc, home: string, id: string, secret: string): Promise<void> {
  const r = await gw.cli(['login', '--client-credentials'], { home, env: { HOOP_CLIENT_ID: id, HOOP_CLIENT_SECRET: secret } });
  if (r.code !== 0) throw new Error(`login as ${id} failed (${r.code}): ${r.stderr}`);
}
