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
const run = (cmd: string, args: string[], opts: { input?: string; timeout?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Run> => new Promise((resolve) => {
  const p = execFile(cmd, args, { timeout: opts.timeout ?? 20_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, TERM: 'xterm', ...opts.env } }, (err, stdout, stderr) => {
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
  sshd.share(work);
  const target = (extra: Record<string, unknown> = {}) => ({ host: '127.0.0.1', port: sshd.port, user: sshd.user, private_key_file: sshd.clientKeyFile, ...extra });
  gw = await startGatewayProc((c) => {
    c.connections = [
      { name: 'web', type: 'ssh', target: target({ host_key: sshd.hostKey }), access: { groups: ['ci'] }, ssh: { sftp: true, port_forwarding: true }, guardrails: { deny_patterns: DENY, review_patterns: ['^sudo\\b', '^echo reviewed'] }, review: { groups: ['dba'], lease: false, timeout: '1m' } },
      // no host_key: pinned on first use
      { name: 'web-locked', type: 'ssh', target: target(), access: { groups: ['ci'] }, ssh: { sftp: false, port_forwarding: false } },
      { name: 'web-wrongkey', type: 'ssh', target: target({ host_key: sshd.otherHostKey }), access: { groups: ['ci'] } },
      { name: 'web-rev', type: 'ssh', target: target({ host_key: sshd.hostKey }), access: { groups: ['ci'] } },
    ];
  });
  await Promise.all([loginClient(gw, 'ci', 'ci-bot', 'ci-secret'), loginClient(gw, 'dba', 'dba-bot', 'dba-secret')]);
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

/** ssh <opts> user@host <command> through `hoopctl connect` */
const sshCmd = (conn: string, command: string, opts: { input?: string; args?: string[]; env?: NodeJS.ProcessEnv } = {}) =>
  run('ssh', [...sshOpts(ports[conn], knownHosts, `hoop-${conn}`), ...(opts.args ?? []), `${sshd.user}@127.0.0.1`, command], opts);
/** straight to sshd with the gateway's own key: what the same command gives without the gateway */
const direct = (command: string) => {
  const kh = join(work, 'known_hosts.direct');
  writeFileSync(kh, `direct-sshd ${sshd.hostKey}\n`);
  return run('ssh', [...sshOpts(sshd.port, kh, 'direct-sshd'), '-i', sshd.clientKeyFile, `${sshd.user}@127.0.0.1`, command]);
};

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
  const [via, straight] = await Promise.all([sshCmd('web', 'echo before; kill -TERM $$'), direct('echo before; kill -TERM $$')]);
  assert.equal(straight.stdout, 'before\n', `the direct login works: ${straight.stderr}`);
  assert.equal(via.stdout, 'before\n', via.stderr);
  assert.equal(via.code, straight.code, `${via.stderr} / ${straight.stderr}`);
  // stdin reaches the command, and its EOF ends it
  const cat = await sshCmd('web', 'wc -c', { input: 'x'.repeat(100_000) });
  assert.equal(cat.stdout.trim(), '100000');
  // env passes through the allow-list only
  const env = await sshCmd('web', 'echo "[$LANG][$HOOP_TEST_X]"', { args: ['-o', 'SendEnv=LANG HOOP_TEST_X'], env: { LANG: 'C.UTF-8', HOOP_TEST_X: 'leak' } });
  assert.equal(env.stdout, '[C.UTF-8][]\n', 'LANG is on the allow-list, HOOP_TEST_X is not (sshd would accept it)');
});

/** the pending review whose statement contains `text`, as the reviewer lists it */
async function pendingReview(text: string): Promise<string> {
  for (let i = 0; i < 300; i++) {
    const list = JSON.parse((await gw.cli(['reviews', '--json'], { home: 'dba' })).stdout) as Array<{ id: string; kind: string; statement: string }>;
    const r = list.find((x) => x.kind === 'command' && x.statement.includes(text));
    if (r) return r.id;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no review for ${text}`);
}

test('exec: a denied command never runs (exit 6, the rule on stderr); a command for review waits: rejected exit 5, approved it runs', async () => {
  const marker = join(work, 'hoop-denied-exec');
  const r = await sshCmd('web', `touch ${marker}`);
  assert.equal(r.code, 6);
  assert.match(r.stderr, /hoopctl: blocked by guardrail deny_patterns\[1\] \(\/hoop-denied\/\): the command was not run/);
  assert.equal(existsSync(marker), false);
  // split into simple commands: the pattern anchored at ^ still sees `sudo` after &&
  const sudoRun = sshCmd('web', 'cd /tmp && sudo true');
  const id = await pendingReview('sudo true');
  assert.equal((await gw.cli(['reject', id, '--reason', 'not on prod'], { home: 'dba' })).code, 0);
  const sudo = await sudoRun;
  assert.equal(sudo.code, 5);
  assert.match(sudo.stderr, /held for review by guardrail review_patterns\[0\]/);
  assert.match(sudo.stderr, new RegExp(`review ${id} rejected by dba-bot: not on prod; not run`));
  const echoRun = sshCmd('web', 'echo reviewed');
  const id2 = await pendingReview('echo reviewed');
  assert.equal((await gw.cli(['approve', id2], { home: 'dba' })).code, 0);
  const echoed = await echoRun;
  assert.equal(echoed.code, 0, echoed.stderr);
  assert.equal(echoed.stdout, 'reviewed\n');
  const ok = await sshCmd('web', 'echo rm -rf-not-a-match');
  assert.equal(ok.code, 0, ok.stderr);
});

test('agent (-A) and X11 (-X) forwarding are refused with a message; the command still runs', async () => {
  const sock = join(work, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
  try {
    await waitFor('ssh-agent', async () => existsSync(sock));
    const r = await sshCmd('web', 'echo fine; echo "[$SSH_AUTH_SOCK][$DISPLAY]"', { args: ['-A', '-X'], env: { SSH_AUTH_SOCK: sock, DISPLAY: ':0' } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'fine\n[][]\n');
    assert.match(r.stderr, /hoopctl: agent forwarding \(ssh -A\) is refused/);
    assert.match(r.stderr, /hoopctl: X11 forwarding \(ssh -X\/-Y\) is refused by the gateway/);
  } finally {
    agent.kill();
  }
});

const tmux = (...args: string[]) => run('tmux', ['-L', tmuxSock, ...args]);
const pane = async (name: string) => (await tmux('capture-pane', '-p', '-J', '-t', name, '-S', '-200')).stdout;
async function waitPane(name: string, re: RegExp, ms = 10_000): Promise<string> {
  let last = '';
  try {
    return await waitFor(`${re} in tmux pane ${name}`, async () => { last = await pane(name); return re.test(last) && last; }, ms);
  } catch (err) {
    throw new Error(`${(err as Error).message}; the pane shows:\n${last}`);
  }
}
async function type(name: string, text: string): Promise<void> {
  await tmux('send-keys', '-t', name, '-l', text);
  await tmux('send-keys', '-t', name, 'Enter');
}
function shellIn(name: string, conn: string, cols = 100, rows = 30): Promise<Run> {
  const cmd = ['ssh', ...sshOpts(ports[conn], knownHosts, `hoop-${conn}`), '-tt', `${sshd.user}@127.0.0.1`].map((a) => `'${a}'`).join(' ');
  return tmux('new-session', '-d', '-s', name, '-x', String(cols), '-y', String(rows), `${cmd}; echo SSH-EXIT=$?; sleep 60`);
}

let shellSession: string | undefined;

test('interactive shell under tmux: typed commands run, resize reaches the target, a denied typed line is not run', async () => {
  const started = await shellIn('sh1', 'web');
  assert.equal(started.code, 0, started.stderr);
  await type('sh1', 'export PS1="hoop\\$ "; echo ready-$((1+2))');
  await waitPane('sh1', /^ready-3$/m);
  await type('sh1', 'echo hello-$((6*7))');
  await waitPane('sh1', /^hello-42$/m);
  await tmux('resize-window', '-t', 'sh1', '-x', '120', '-y', '40');
  await new Promise((r) => setTimeout(r, 300));
  await type('sh1', 'stty size');
  await waitPane('sh1', /^40 120$/m);
  const marker = join(work, 'hoop-denied-typed');
  await type('sh1', `touch ${marker}`);
  await waitPane('sh1', /hoopctl: blocked by guardrail deny_patterns\[1\] \(\/hoop-denied\/\): the line was not run/);
  // the shell dropped the line and is still usable; Backspace editing is followed
  await tmux('send-keys', '-t', 'sh1', '-l', 'echo alive-$((2+3))xx');
  await tmux('send-keys', '-t', 'sh1', 'BSpace', 'BSpace', 'Enter');
  await waitPane('sh1', /^alive-5$/m);
  assert.equal(existsSync(marker), false, 'the denied line never ran');
  await type('sh1', 'exit 7');
  await waitPane('sh1', /^SSH-EXIT=7$/m);
  const sessions = await sessionsOf('web');
  for (const s of sessions) {
    const ev = await recordingEvents(s.id);
    if (ev.some((e) => e.type === 'term.started' && e.kind === 'shell')) { shellSession = s.id; break; }
  }
  assert.ok(shellSession, 'the shell session is recorded');
});

test('replay of the recorded shell: output with the blocked line, an asciicast file asciinema reads, the chain verifies', async () => {
  assert.ok(shellSession);
  const ev = await waitFor('the closed recording', async () => { const e = await recordingEvents(shellSession!); return e.at(-1)?.type === 'recording.closed' && e; });
  assert.ok(ev.some((e: any) => e.type === 'term.resize' && e.cols === 120 && e.rows === 40));
  assert.ok(ev.some((e: any) => e.type === 'command.blocked' && e.source === 'typed' && e.rule === 'deny_patterns[1]'));
  assert.ok(!ev.some((e: any) => e.type === 'term.input'), 'input is not recorded by default');
  const text = await gw.cli(['replay', shellSession!, '--no-timing'], { home: 'ci' });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /hello-42/);
  assert.match(text.stdout, /40 120/);
  assert.match(text.stdout, /BLOCKED by guardrail deny_patterns\[1\] \(\/hoop-denied\/\), typed: touch /);
  assert.match(text.stdout, /-- shell exit 7/);
  const cast = await gw.cli(['replay', shellSession!, '--format', 'asciicast'], { home: 'ci' });
  assert.equal(cast.code, 0, cast.stderr);
  const [head, ...lines] = cast.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(head.version, 2);
  assert.equal(head.width, 100);
  assert.equal(head.height, 30);
  let t = 0;
  for (const [at, kind, data] of lines) {
    assert.ok(typeof at === 'number' && at >= t, 'timestamps never go back');
    assert.ok(['o', 'i', 'r'].includes(kind));
    assert.equal(typeof data, 'string');
    t = at;
  }
  assert.ok(lines.some(([, kind, data]: [number, string, string]) => kind === 'r' && data === '120x40'));
  const file = join(work, 'shell.cast');
  writeFileSync(file, cast.stdout);
  // asciinema reads /dev/tty even to cat: give it one
  const played = await run('script', ['-qec', `asciinema cat ${file}`, '/dev/null']);
  assert.equal(played.code, 0, played.stderr);
  assert.match(played.stdout, /hello-42/);
  const verify = await gw.cli(['sessions', 'verify', shellSession!], { home: 'ci' });
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

test('sftp and scp: upload and download byte-identical when allowed, operations recorded; refused when ssh.sftp is false', async () => {
  const src = join(work, 'up.bin');
  writeFileSync(src, randomBytes(3 * 1024 * 1024 + 17));
  const remote = join(work, 'remote.bin');
  const back = join(work, 'back.bin');
  const batch = join(work, 'batch');
  writeFileSync(batch, `put ${src} ${remote}\nget ${remote} ${back}\nrename ${remote} ${remote}.2\nrm ${remote}.2\n`);
  const opts = (conn: string) => ['-F', '/dev/null', '-P', String(ports[conn]), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', `HostKeyAlias=hoop-${conn}`, '-o', 'LogLevel=ERROR'];
  const r = await run('sftp', [...opts('web'), '-b', batch, `${sshd.user}@127.0.0.1`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(back), sha(src));
  const viaScp = join(work, 'scp.bin');
  const up = await run('scp', [...opts('web'), src, `${sshd.user}@127.0.0.1:${viaScp}`]);
  assert.equal(up.code, 0, up.stderr);
  assert.equal(sha(viaScp), sha(src));
  // recorded: the sftp session of the batch with its operations and byte counts
  const size = readFileSync(src).length;
  const ev = await waitFor('the sftp recording', async () => {
    for (const s of await sessionsOf('web')) {
      const e = await recordingEvents(s.id);
      if (e.some((x) => x.type === 'sftp.rename') && e.at(-1)?.type === 'recording.closed') return e;
    }
    return undefined;
  });
  assert.ok(ev.some((e: any) => e.type === 'sftp.close' && e.path === remote && e.written === size && e.read === 0), JSON.stringify(ev.filter((e: any) => e.type.startsWith('sftp'))));
  assert.ok(ev.some((e: any) => e.type === 'sftp.close' && e.path === remote && e.read === size));
  assert.ok(ev.some((e: any) => e.type === 'sftp.rename' && e.path === remote && e.to === `${remote}.2` && e.ok === true));
  assert.ok(ev.some((e: any) => e.type === 'sftp.remove' && e.path === `${remote}.2` && e.ok === true));

  const refused = await run('sftp', [...opts('web-locked'), '-b', batch, `${sshd.user}@127.0.0.1`]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /hoopctl: sftp and scp are disabled for connection "web-locked" \(ssh\.sftp: false\)/);
  const legacy = await run('scp', [...opts('web-locked'), '-O', src, `${sshd.user}@127.0.0.1:${join(work, 'legacy.bin')}`]);
  assert.notEqual(legacy.code, 0);
  assert.match(legacy.stderr, /file transfer \(scp, sftp\) is disabled/);
  assert.equal(existsSync(join(work, 'legacy.bin')), false);
});

/** starts `ssh -N -L local:127.0.0.1:port` and resolves once the local port listens */
async function forward(conn: string, toPort: number): Promise<{ port: number; stop(): Promise<string> }> {
  const port = await freePort();
  // LogLevel INFO: ssh reports a refused channel ("open failed") at that level
  const p = spawn('ssh', [...sshOpts(ports[conn], knownHosts, `hoop-${conn}`, 'INFO'), '-N', '-L', `${port}:127.0.0.1:${toPort}`, `${sshd.user}@127.0.0.1`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d) => { err += d; });
  await waitFor('ssh -L to listen', async () => new Promise<boolean>((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  }));
  return { port, stop: async () => { p.kill(); await new Promise((r) => p.once('close', r)); return err; } };
}

function roundTrip(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let got = '';
    s.on('data', (d) => { got += d; if (got.length >= text.length) s.end(); });
    s.on('close', () => resolve(got));
    s.on('error', () => resolve(got));
    s.write(text);
    setTimeout(() => s.destroy(), 5000).unref();
  });
}

test('ssh -L: forwarded when ssh.port_forwarding is true, refused with the reason when false', async () => {
  const echo = await echoServer();
  try {
    const ok = await forward('web', echo.port);
    assert.equal(await roundTrip(ok.port, 'ping through the gateway'), 'ping through the gateway');
    await ok.stop();
    const no = await forward('web-locked', echo.port);
    assert.equal(await roundTrip(no.port, 'ping'), '');
    await new Promise((r) => setTimeout(r, 200));
    const err = await no.stop();
    assert.match(err, /administratively prohibited: hoopctl: port forwarding is disabled for connection "web-locked"/);
  } finally {
    await echo.close();
  }
});

test('target host key: a wrong target.host_key is refused (fail closed); unset, it is pinned on first use and logged', async () => {
  const r = await sshCmd('web-wrongkey', 'echo should-not-run');
  assert.equal(r.code, 255);
  assert.doesNotMatch(r.stdout, /should-not-run/);
  assert.match(r.stderr, /does not match target\.host_key of connection "web-wrongkey"/);
  // web-locked has no host_key: the earlier sessions pinned it, with a warning
  const ok = await sshCmd('web-locked', 'echo pinned-ok');
  assert.equal(ok.stdout, 'pinned-ok\n', ok.stderr);
  assert.match(gw.logs(), /ssh target host key pinned on first use/);
  assert.equal(gw.logs().match(/pinned on first use/g)?.length, 1, 'pinned once, then checked');
});

test('revocation mid-shell: the user sees why in the terminal and ssh ends', async () => {
  await shellIn('rev', 'web-rev');
  await type('rev', 'echo ready-$((3+4))');
  await waitPane('rev', /^ready-7$/m);
  const r = await gw.cli(['revoke', leases['web-rev']], { home: 'ci' });
  assert.equal(r.code, 0, r.stderr);
  const shown = await waitPane('rev', /SSH-EXIT=\d+/);
  assert.match(shown, /hoopctl: lease revoked[^\n]*: the gateway closed this connection/);
  assert.match(shown, /SSH-EXIT=255/);
});

