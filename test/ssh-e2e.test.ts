/**
 * Issue 12 through the whole product: the real OpenSSH clients (ssh, scp, sftp, under tmux for
 * interactive shells) → `hoopctl connect` → WebSocket → gateway → ssh engine → a real sshd.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { startGatewayProc, loginClient, type GatewayProc, type LiveCli } from './helpers/hoop.ts';
import { startSshd, sshOpts, type Sshd } from './helpers/sshd.ts';
import { freePort } from './helpers/postgres.ts';
import { echoServer } from './helpers/net.ts';
import { verifyChain } from '../src/gateway/recording/recorder.ts';

const exec = promisify(execFile);
type Run = { code: number; stdout: string; stderr: string };
const run = (cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}): Promise<Run> => new Promise((resolve) => {
  const p = execFile(cmd, args, { timeout: opts.timeout ?? 20_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
    resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0, stdout: String(stdout), stderr: String(stderr) });
  });
  if (opts.input !== undefined) p.stdin!.end(opts.input);
  else p.stdin!.end();
});

let sshd: Sshd;
let gw: GatewayProc;
let work: string;
const ports: Record<string, number> = {};
const connects: Record<string, LiveCli> = {};
const leases: Record<string, string> = {};
let knownHosts: string;
const tmuxSock = `hoop-ssh-test-${process.pid}`;

const DENY = ['rm\\s+-rf\\s+/', 'hoop-denied'];

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'hoop-ssh-e2e-'));
  sshd = await startSshd();
  const target = (extra: Record<string, unknown> = {}) => ({ host: '127.0.0.1', port: sshd.port, user: sshd.user, private_key_file: sshd.clientKeyFile, ...extra });
  gw = await startGatewayProc((c) => {
    c.connections = [
      { name: 'web', type: 'ssh', target: target({ host_key: sshd.hostKey }), access: { groups: ['ci'] }, ssh: { sftp: true, port_forwarding: true }, guardrails: { deny_patterns: DENY, review_patterns: ['^sudo\\b'] } },
      // no host_key: pinned on first use
      { name: 'web-locked', type: 'ssh', target: target(), access: { groups: ['ci'] }, ssh: { sftp: false, port_forwarding: false } },
      { name: 'web-wrongkey', type: 'ssh', target: target({ host_key: sshd.otherHostKey }), access: { groups: ['ci'] } },
      { name: 'web-rev', type: 'ssh', target: target({ host_key: sshd.hostKey }), access: { groups: ['ci'] } },
    ];
  });
  await loginClient(gw, 'ci', 'ci-bot', 'ci-secret');
  await Promise.all(['web', 'web-locked', 'web-wrongkey', 'web-rev'].map(async (name) => {
    ports[name] = await freePort();
    const c = connects[name] = gw.spawnCli(['connect', name, '--port', String(ports[name])], { home: 'ci' });
    const m = await c.waitFor(/lease (\S+) (granted|reused)[\s\S]*Try: (ssh .*)\n/);
    leases[name] = m[1];
    const kh = /UserKnownHostsFile=(\S+)/.exec(m[3]);
    assert.ok(kh, `the printed command names a known_hosts file: ${m[3]}`);
    assert.match(m[3], new RegExp(`-o HostKeyAlias=hoop-${name} ${sshd.user}@127\\.0\\.0\\.1$`));
    knownHosts = kh[1];
  }));
});

after(async () => {
  await run('tmux', ['-L', tmuxSock, 'kill-server']);
  await Promise.all(Object.values(connects).map((c) => { c.kill('SIGINT'); return c.exited; }));
  await gw?.stop();
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const ssh = (conn: string, args: string[], opts: { input?: string } = {}) =>
  run('ssh', [...sshOpts(ports[conn], knownHosts, `hoop-${conn}`), ...args, `${sshd.user}@127.0.0.1`].slice(0), opts);
/** ssh <opts> user@host <command...> */
const sshCmd = (conn: string, command: string, opts: { input?: string; args?: string[] } = {}) =>
  run('ssh', [...sshOpts(ports[conn], knownHosts, `hoop-${conn}`), ...(opts.args ?? []), `${sshd.user}@127.0.0.1`, command], opts);
const direct = (command: string) =>
  run('ssh', [...sshOpts(sshd.port, '/dev/null'), '-o', 'StrictHostKeyChecking=no', '-i', sshd.clientKeyFile, `${sshd.user}@127.0.0.1`, command]);

const token = () => JSON.parse(readFileSync(join(gw.home('ci'), 'tokens.json'), 'utf8'))[gw.url].access_token as string;
const api = async (path: string) => (await (await fetch(gw.url + path, { headers: { authorization: `Bearer ${token()}` } })).json()) as any;
async function recordingEvents(sessionId: string): Promise<any[]> {
  const rec = await api(`/api/sessions/${sessionId}/recording`);
  return rec.entries.map((e: { event: string }) => JSON.parse(e.event));
}
async function sessionsOf(conn: string): Promise<any[]> {
  return (await api(`/api/sessions?conn=${conn}`)).sessions;
}
async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('exec: output, stderr and exit codes pass through as with a direct ssh; the printed known_hosts is checked strictly', async () => {
  const r = await sshCmd('web', 'echo out-$((40+2)); echo err >&2; exit 3');
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stdout, 'out-42\n');
  assert.equal(r.stderr, 'err\n');
  // a command killed by a signal: the same exit as OpenSSH gives it directly
  const [via, straight] = await Promise.all([sshCmd('web', 'kill -TERM $$'), direct('kill -TERM $$')]);
  assert.equal(via.code, straight.code, `${via.stderr} / ${straight.stderr}`);
  // stdin reaches the command, and its EOF ends it
  const cat = await sshCmd('web', 'wc -c', { input: 'x'.repeat(100_000) });
  assert.equal(cat.stdout.trim(), '100000');
  // env passes through the allow-list only
  const env = await sshCmd('web', 'echo "[$LANG][$HOOP_TEST_X]"', { args: ['-o', 'SendEnv=LANG HOOP_TEST_X'] });
  assert.equal(env.code, 0, env.stderr);
});
