/**
 * Issue 12, the ssh engine in-process against a real sshd (review and host-key hooks stubbed,
 * as the lead's review service is wired in run-session.ts separately), and its pure parts:
 * the typed-line tracker, the SFTP tap (every buffer split at every boundary), command
 * patterns, host key specs, the terminal sanitizer and the config checks.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Client, ClientChannel } from 'ssh2';
import { startSshd, type Sshd } from './helpers/sshd.ts';
import { startSshGateway, userSsh, execVia } from './helpers/ssh-engine.ts';
import { LineTracker, altScreen } from '../src/gateway/engines/ssh/line-tracker.ts';
import { SftpTap } from '../src/gateway/engines/ssh/sftp-tap.ts';
import { CommandPolicy, isLegacyScp } from '../src/gateway/engines/ssh/command-policy.ts';
import { parseHostKeySpec, matches, fingerprint } from '../src/gateway/engines/ssh/host-key.ts';
import { sanitizeTerminal } from '../src/cli/views/terminal-replay.ts';
import { parseConfig } from '../src/gateway/config/load.ts';
import type { RecordEvent, ReviewRequest, ReviewOutcome } from '../src/gateway/engines/engine.ts';

let sshd: Sshd;
let work: string;
before(async () => {
  sshd = await startSshd();
  work = mkdtempSync(join(tmpdir(), 'hoop-ssh-engine-'));
  sshd.share(work);
});
after(async () => {
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const waitUntil = async (what: string, ok: () => boolean, ms = 8000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** a promise that fails after `ms` naming what it waited for, so a stuck step fails fast, not at the runner's timeout */
function within<T>(what: string, p: Promise<T>, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); })]).finally(() => clearTimeout(timer));
}

interface Shell { ch: ClientChannel; out(): string; wait(re: RegExp): Promise<void>; type(s: string): void }
function openShell(c: Client): Promise<Shell> {
  return new Promise((resolve, reject) => c.shell({ term: 'xterm', cols: 200, rows: 50 }, (err, ch) => {
    if (err) return reject(err);
    let out = '';
    ch.on('data', (d: Buffer) => { out += d; });
    ch.stderr.on('data', (d: Buffer) => { out += d; });
    resolve({
      ch, out: () => out, type: (s) => { ch.write(s); },
      wait: (re) => waitUntil(`${re} in the shell (got ${JSON.stringify(out.slice(-300))})`, () => re.test(out)),
    });
  }));
}

/** a review service stub: decides each request with `decide`, records what it was asked */
function reviews(decide: (r: ReviewRequest) => Promise<Omit<ReviewOutcome, 'id'>>) {
  const asked: ReviewRequest[] = [];
  const requestReview = async (r: ReviewRequest): Promise<ReviewOutcome> => {
    asked.push(r);
    const id = `rv_${asked.length}`;
    r.onPending?.({ id, approveCommand: `hoopctl approve ${id}`, expiresAt: Date.now() + 60_000 });
    return { id, ...(await decide(r)) };
  };
  return { asked, requestReview };
}

describe('in-process engine against a real sshd', () => {
  test('review_patterns on exec: approved runs, rejected does not (exit 5, reason shown), the hook sees the command', async () => {
    const rv = reviews(async (r) => (r.statement.includes('approve') ? { status: 'approved', by: 'bob', reason: null } : { status: 'rejected', by: 'bob', reason: 'too risky' }));
    const gw = await startSshGateway(sshd, { guardrails: { deny_patterns: [], review_patterns: ['review-me'] }, requestReview: rv.requestReview });
    const c = await userSsh(gw.port);
    try {
      const ok = await execVia(c, 'echo review-me-approve-$((1+1))');
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, 'review-me-approve-2\n');
      assert.match(ok.stderr, /held for review by guardrail review_patterns\[0\] \(\/review-me\/\)/);
      assert.match(ok.stderr, /review rv_1 is waiting; a reviewer approves it with: hoopctl approve rv_1/);
      assert.match(ok.stderr, /review rv_1 approved by bob/);
      const marker = join(work, 'review-me-rejected');
      const no = await execVia(c, `touch ${marker}`);
      assert.equal(no.code, 5);
      assert.match(no.stderr, /review rv_2 rejected by bob: too risky; not run/);
      assert.equal(existsSync(marker), false);
      assert.deepEqual(rv.asked.map((r) => [r.kind, r.rule, r.statement]), [['command', 'review_patterns[0]', 'echo review-me-approve-$((1+1))'], ['command', 'review_patterns[0]', `touch ${marker}`]]);
      await waitUntil('recorded reviews', () => gw.events.filter((e) => e.type === 'command.reviewed').length === 2);
      assert.deepEqual(gw.events.filter((e) => e.type === 'command.reviewed').map((e) => e.status), ['approved', 'rejected']);
    } finally {
      c.end();
      await gw.close();
    }
  });

  test('review_patterns on a typed line: the Enter waits for the outcome; Ctrl-C withdraws the review', async () => {
    let release: ((o: Omit<ReviewOutcome, 'id'>) => void) | undefined;
    const rv = reviews((r) => new Promise((resolve) => {
      release = resolve;
      r.signal?.addEventListener('abort', () => resolve({ status: 'cancelled', by: null, reason: null }));
    }));
    const gw = await startSshGateway(sshd, { guardrails: { deny_patterns: ['hoop-denied'], review_patterns: ['review-me'] }, requestReview: rv.requestReview });
    const c = await userSsh(gw.port);
    try {
      const sh = await openShell(c);
      sh.type("export PS1='P> '; echo ready-$((1+2))\r");
      await sh.wait(/ready-3/);
      sh.type('echo review-me-$((2+2))\r');
      await sh.wait(/review rv_1 is waiting/);
      await new Promise((r) => setTimeout(r, 200));
      assert.doesNotMatch(sh.out(), /review-me-4/, 'not run before the approval');
      // typed while waiting: held, then replayed after the approval
      sh.type('echo after-$((3+3))\r');
      release!({ status: 'approved', by: 'bob', reason: null });
      await sh.wait(/review-me-4[\s\S]*after-6/);
      const marker = join(work, 'review-me-withdrawn');
      sh.type(`touch ${marker}\r`);
      await sh.wait(/review rv_2 is waiting/);
      sh.type('\x03');
      await sh.wait(/review rv_2 cancelled; not run/);
      sh.type('echo alive-$((4+4))\r');
      await sh.wait(/alive-8/);
      assert.equal(existsSync(marker), false);
      assert.equal(rv.asked[1].signal?.aborted, true);
      // deny on a typed line, in a paste with a line after it: neither runs
      const m2 = join(work, 'paste-after');
      sh.type(`echo hoop-denied\rtouch ${m2}\r`);
      await sh.wait(/blocked by guardrail deny_patterns\[0\] \(\/hoop-denied\/\): the line was not run/);
      sh.type('echo alive-$((5+5))\r');
      await sh.wait(/alive-10/);
      assert.equal(existsSync(m2), false, 'the rest of a paste after a denied line is dropped');
      sh.ch.end();
      // a shell started as a command on a pty (ssh -t host bash) is checked the same way
      const ex = await within('a pty exec', new Promise<ClientChannel>((resolve, reject) => c.exec('bash --norc', { pty: { term: 'xterm', cols: 100, rows: 30 } }, (err, ch) => (err ? reject(err) : resolve(ch)))));
      let out = '';
      const exClosed = new Promise((r) => ex.once('close', r));
      ex.on('data', (d: Buffer) => { out += d; });
      ex.stderr.on('data', (d: Buffer) => { out += d; });
      ex.write("PS1='Q> '; echo pty-$((3*3))\r");
      // typed before bash reads its terminal, the gateway's Ctrl-C would hit bash's start-up
      await waitUntil('bash on the pty', () => /pty-9[\s\S]*Q> $/.test(out));
      const m3 = join(work, 'hoop-denied-pty-exec');
      ex.write(`touch ${m3}\r`);
      await waitUntil('the blocked line in a pty exec', () => /blocked by guardrail deny_patterns\[0\]/.test(out));
      ex.write('exit\r');
      await within(`bash exiting (it showed ${JSON.stringify(out.slice(-200))})`, exClosed);
      assert.equal(existsSync(m3), false);
    } finally {
      c.end();
      await gw.close();
    }
  });

  test('no review service: review_patterns deny, with a message', async () => {
    const gw = await startSshGateway(sshd, { guardrails: { review_patterns: ['^sudo\\b'] } });
    const c = await userSsh(gw.port);
    try {
      const r = await execVia(c, 'sudo true');
      assert.equal(r.code, 5);
      assert.match(r.stderr, /"sudo true" needs a review \(guardrail review_patterns\[0\] \/\^sudo\\b\/\), and reviews are not available on this gateway: not run/);
      assert.equal(gw.events.filter((e) => e.type === 'command.blocked').length, 1);
      assert.equal(gw.audits.filter((a) => a.type === 'command.blocked').length, 1);
    } finally {
      c.end();
      await gw.close();
    }
  });

  test('host key pinned on first use through the hook, audited; a different pinned key is refused', async () => {
    const pins = new Map<string, string>();
    const pinHostKey = async (key: string) => {
      const known = pins.get('box');
      if (known) return { key: known, first: false };
      pins.set('box', key);
      return { key, first: true };
    };
    const gw = await startSshGateway(sshd, { target: { host_key: undefined }, pinHostKey });
    try {
      const c = await userSsh(gw.port);
      const r = await execVia(c, 'echo pinned');
      c.end();
      assert.equal(r.stdout, 'pinned\n', r.stderr);
      assert.match(pins.get('box')!, /^ssh-ed25519 |^ecdsa-sha2-nistp256 /);
      assert.equal(gw.audits.filter((a) => a.type === 'host_key.pinned').length, 1);
      // the stored pin no longer matches what the target presents
      pins.set('box', sshd.otherHostKey);
      const c2 = await userSsh(gw.port);
      const r2 = await execVia(c2, 'echo should-not-run');
      c2.end();
      assert.equal(r2.code, 255);
      assert.equal(r2.stdout, '');
      assert.match(r2.stderr, /changed since it was pinned on first use/);
      assert.equal(gw.audits.filter((a) => a.type === 'host_key.rejected').length, 1);
    } finally {
      await gw.close();
    }
    // without the hook and without target.host_key: refused, never unverified
    const bare = await startSshGateway(sshd, { target: { host_key: undefined } });
    const c3 = await userSsh(bare.port);
    const r3 = await execVia(c3, 'echo x');
    c3.end();
    await bare.close();
    assert.equal(r3.code, 255);
    assert.match(r3.stderr, /sets no target\.host_key and this gateway has nowhere to pin one/);
  });

  test('recording.input records keystrokes; exec output and exit codes are recorded', async () => {
    const gw = await startSshGateway(sshd, { recording: { input: true } });
    const c = await userSsh(gw.port);
    try {
      const sh = await openShell(c);
      sh.type('echo typed-$((5*5))\r');
      await sh.wait(/typed-25/);
      sh.type('exit 4\r');
      await within('the shell closing', new Promise((r) => sh.ch.once('close', r)));
      const x = await execVia(c, 'echo out; exit 3');
      assert.equal(x.code, 3);
      await waitUntil('recorded events', () => gw.events.some((e) => e.type === 'command.completed'));
      await new Promise((r) => setTimeout(r, 100));
      const input = gw.events.filter((e) => e.type === 'term.input').map((e) => e.data).join('');
      assert.match(input, /echo typed-\$\(\(5\*5\)\)\r/);
      assert.deepEqual(gw.events.find((e) => e.type === 'term.ended'), { type: 'term.ended', ch: 0, code: 4, signal: null });
      const done = gw.events.find((e) => e.type === 'command.completed')!;
      assert.equal(done.command, 'echo out; exit 3');
      assert.equal(done.code, 3);
      assert.ok(gw.events.some((e) => e.type === 'term.output' && e.ch === done.ch && e.data === 'out\n'));
    } finally {
      c.end();
      await gw.close();
    }
  });

  test('terminate: each open channel hears why, then the connection closes', async () => {
    const gw = await startSshGateway(sshd);
    const c = await userSsh(gw.port);
    const sh = await openShell(c);
    sh.type('echo up-$((1+1))\r');
    await sh.wait(/up-2/);
    const closed = new Promise((r) => (c as unknown as NodeJS.EventEmitter).once('close', r));
    gw.sessions[0].engine.terminate('lease expired');
    await sh.wait(/hoopctl: lease expired: the gateway closed this connection/);
    await within('the connection closing', closed);
    await gw.close();
  });
});

describe('typed-line tracker', () => {
  const lines = (...chunks: string[]) => {
    const t = new LineTracker();
    const got: Array<[string, boolean]> = [];
    for (const ch of chunks) {
      const s = Buffer.from(ch).toString('latin1');
      let pos = 0;
      for (;;) {
        const e = t.scan(s, pos);
        if (e === -1) break;
        const { line, uncertain } = t.take();
        got.push([line, uncertain]);
        pos = e + 1;
      }
    }
    return got;
  };
  test('text, Backspace, Ctrl-U, Ctrl-W, Ctrl-C, UTF-8', () => {
    assert.deepEqual(lines('ls -la\r'), [['ls -la', false]]);
    assert.deepEqual(lines('rm -rf /x', '\x7f\x7f', 'y\r'), [['rm -rf y', false]]);
    assert.deepEqual(lines('abc\x15def\r'), [['def', false]]);
    assert.deepEqual(lines('echo one two\x17three\r'), [['echo one three', false]]);
    assert.deepEqual(lines('rm -rf /\x03', 'ls\r'), [['ls', false]]);
    assert.deepEqual(lines('echo héé\x7f\r'), [['echo hé', false]]);
    assert.deepEqual(lines('a\rb\nc'), [['a', false], ['b', false]]);
  });
  test('what it cannot follow makes the line uncertain; bracketed paste keeps its newlines', () => {
    assert.deepEqual(lines('rm -rf /tm\t\r'), [['rm -rf /tm', true]]);
    assert.deepEqual(lines('\x1b[A\r'), [['', true]]);
    assert.deepEqual(lines('\x1bOA\r'), [['', true]]);
    assert.deepEqual(lines('ls\x01x\r'), [['lsx', true]]);
    assert.deepEqual(lines('\x1b[200~echo a\recho b\x1b[201~\r'), [['echo a\necho b', false]]);
    // an escape sequence split across chunks
    assert.deepEqual(lines('ls\x1b', '[', 'D\r'), [['ls', true]]);
  });
  test('alternate screen switches', () => {
    assert.equal(altScreen(Buffer.from('x\x1b[?1049hy')), true);
    assert.equal(altScreen(Buffer.from('\x1b[?1049h...\x1b[?1049l')), false);
    assert.equal(altScreen(Buffer.from('\x1b[?25h')), undefined);
  });
});

describe('SFTP tap', () => {
  const str = (s: string | Buffer) => { const b = Buffer.from(s); const n = Buffer.alloc(4); n.writeUInt32BE(b.length); return Buffer.concat([n, b]); };
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
  const pkt = (type: number, ...parts: Buffer[]) => { const body = Buffer.concat([Buffer.from([type]), ...parts]); return Buffer.concat([u32(body.length), body]); };
  const data = Buffer.alloc(40_000, 7);
  const client = Buffer.concat([
    pkt(1, u32(3)), // INIT
    pkt(3, u32(1), str('/tmp/a.bin'), u32(0x1a), u32(0)), // OPEN write|create|truncate
    pkt(6, u32(2), str('h1'), Buffer.alloc(8), str(data)), // WRITE
    pkt(5, u32(3), str('h1'), Buffer.alloc(8), u32(32768)), // READ
    pkt(4, u32(4), str('h1')), // CLOSE
    pkt(18, u32(5), str('/tmp/a.bin'), str('/tmp/b.bin')), // RENAME
    pkt(13, u32(6), str('/tmp/b.bin')), // REMOVE
  ]);
  const server = Buffer.concat([
    pkt(2, u32(3)), // VERSION
    pkt(102, u32(1), str('h1')), // HANDLE
    pkt(101, u32(2), u32(0), str('ok'), str('')),
    pkt(103, u32(3), str(Buffer.alloc(1234))), // DATA
    pkt(101, u32(4), u32(0), str('ok'), str('')),
    pkt(101, u32(5), u32(0), str('ok'), str('')),
    pkt(101, u32(6), u32(2), str('No such file'), str('')),
  ]);
  const expected = [
    { type: 'sftp.open', path: '/tmp/a.bin', mode: 'write,create,truncate' },
    { type: 'sftp.close', path: '/tmp/a.bin', mode: 'write,create,truncate', read: 1234, written: 40_000 },
    { type: 'sftp.rename', path: '/tmp/a.bin', to: '/tmp/b.bin', ok: true },
    { type: 'sftp.remove', path: '/tmp/b.bin', ok: false, error: 'No such file' },
  ];
  // the order both directions interleave in on a real channel: each request before its reply
  const play = (cuts: (b: Buffer) => Buffer[]) => {
    const events: RecordEvent[] = [];
    const tap = new SftpTap((e) => events.push(e));
    // each request, then its reply, as on a real channel (a WRITE after its OPEN's HANDLE)
    const byPacket = (b: Buffer) => { const out: Buffer[] = []; for (let i = 0; i < b.length;) { const n = b.readUInt32BE(i) + 4; out.push(b.subarray(i, i + n)); i += n; } return out; };
    const cp = byPacket(client);
    const sp = byPacket(server);
    for (let i = 0; i < cp.length; i++) {
      for (const piece of cuts(cp[i])) tap.fromClient.push(piece);
      for (const piece of cuts(sp[i] ?? Buffer.alloc(0))) tap.fromServer.push(piece);
    }
    return { events, tap };
  };
  test('records operations with paths and byte counts, whole', () => {
    const { events, tap } = play((b) => [b]);
    assert.deepEqual(events, expected);
    assert.equal(tap.read, 1234);
    assert.equal(tap.written, 40_000);
  });
  test('every packet split at every boundary, and byte by byte', () => {
    for (let at = 1; at < 120; at++) {
      const { events } = play((b) => (at < b.length ? [b.subarray(0, at), b.subarray(at)] : [b]));
      assert.deepEqual(events, expected, `split at ${at}`);
    }
    const { events } = play((b) => Array.from({ length: b.length }, (_, i) => b.subarray(i, i + 1)));
    assert.deepEqual(events, expected, 'byte by byte');
  });
});

describe('command patterns, host keys, terminal sanitizer', () => {
  test('patterns match the line and each simple command in it; deny wins over review', () => {
    const p = new CommandPolicy({ deny: [], review: [], deny_functions: [], deny_patterns: ['rm\\s+-rf\\s+/'], review_patterns: ['^sudo\\b'] });
    assert.deepEqual(p.judge('ls'), { action: 'allow' });
    assert.equal(p.judge('RM  -RF /var').action, 'deny');
    assert.equal(p.judge('cd /tmp && sudo ls').action, 'review');
    assert.equal(p.judge('echo $(sudo id)').action, 'review');
    assert.equal(p.judge('sudo rm -rf /').action, 'deny');
    assert.equal(p.judge('echo pseudo').action, 'allow');
    assert.equal(isLegacyScp('scp -t /tmp'), true);
    assert.equal(isLegacyScp('scp -r -f /etc/x'), true);
    assert.equal(isLegacyScp('/usr/bin/scp -pt .'), true);
    assert.equal(isLegacyScp('echo scp -t'), false);
  });
  test('host key specs: key lines, known_hosts lines, fingerprints; bad ones say why', () => {
    const blob = Buffer.from(sshd.hostKey.split(' ')[1], 'base64');
    assert.equal(matches(parseHostKeySpec(sshd.hostKey), blob), true);
    assert.equal(matches(parseHostKeySpec(`[127.0.0.1]:22 ${sshd.hostKey}`), blob), true);
    assert.equal(matches(parseHostKeySpec(fingerprint(blob)), blob), true);
    assert.equal(matches(parseHostKeySpec(sshd.otherHostKey), blob), false);
    assert.match(parseHostKeySpec('ssh-ed25519').problem!, /must be a public key/);
    assert.match(parseHostKeySpec(`ssh-rsa ${sshd.hostKey.split(' ')[1]}`).problem!, /does not hold a ssh-rsa key/);
  });
  test('replay keeps colours and cursor movement, drops OSC/DCS/C1', () => {
    assert.equal(sanitizeTerminal('\x1b[31mred\x1b[0m\r\n'), '\x1b[31mred\x1b[0m\r\n');
    assert.equal(sanitizeTerminal('a\x1b]0;title\x07b\x1b]52;c;ZXZpbA==\x1b\\c\x1bPq#0\x1b\\d\u009be'), 'abcde');
  });
});

describe('config: type ssh', () => {
  const load = (conn: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) => parseConfig(stringify({
    auth: { issuer: 'dev' }, dev_idp: { users: [] },
    connections: [{ name: 'web-1', type: 'ssh', access: { groups: ['eng'] }, ...conn }],
  }), 'gateway.yaml', env, work);
  const err = (conn: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) => {
    try { load(conn, env); } catch (e) { return (e as Error).message; }
    return 'no error';
  };
  test('valid: key file read at load, defaults for ssh:', () => {
    const cfg = load({ target: { host: '10.0.0.5', port: 22, user: 'deploy', private_key_file: sshd.clientKeyFile, host_key: sshd.hostKey } });
    assert.match(cfg.secrets.get('web-1')!.privateKey!, /BEGIN OPENSSH PRIVATE KEY/);
    assert.equal(cfg.connections[0].recording.input, false);
    const pw = load({ target: { port: 22, user: 'deploy', password_env: 'PW' }, ssh: { sftp: false }, guardrails: { deny_patterns: ['x'], review_patterns: ['^sudo\\b'] } }, { PW: 'secret' });
    assert.equal(pw.secrets.get('web-1')!.password, 'secret');
    assert.deepEqual(pw.connections[0].ssh, { sftp: false, port_forwarding: false, env: ['LANG', 'LC_*', 'TZ', 'COLORTERM'] });
  });
  test('errors name the key path', () => {
    assert.match(err({ target: { port: 22, private_key_file: sshd.clientKeyFile } }), /connections\[0\]\.target\.user.*is required for type ssh/);
    assert.match(err({ target: { port: 22, user: 'd' } }), /connections\[0\]\.target\.private_key_file.*is required for type ssh \(or target\.password_env\)/);
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: sshd.clientKeyFile, password_env: 'PW' } }, { PW: 'x' }), /target\.password_env.*cannot be combined/);
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: join(work, 'nope') } }), /connections\[0\]\.target\.private_key_file.*cannot read .*nope: ENOENT/);
    const junk = join(work, 'junk.key');
    writeFileSync(junk, 'not a key');
    chmodSync(junk, 0o600);
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: junk } }), /target\.private_key_file.*is not a usable private key/);
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: sshd.clientKeyFile, host_key: 'garbage' } }), /target\.host_key.*must be a public key/);
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: sshd.clientKeyFile }, guardrails: { deny: ['drop'] } }), /guardrails\.deny.*names SQL rules/);
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: sshd.clientKeyFile }, ssh: { sftp: 'yes' } }), /ssh\.sftp/);
    assert.match(err({ target: { port: 22, user: 'd', passphrase_env: 'P', password_env: 'PW' } }, { PW: 'x', P: 'y' }), /passphrase_env.*needs target\.private_key_file/);
  });
  test('ssh-only keys on other types are refused', () => {
    const other = (conn: Record<string, unknown>) => {
      try {
        parseConfig(stringify({ auth: { issuer: 'dev' }, dev_idp: { users: [] }, connections: [{ name: 'x', type: 'tcp', access: { groups: ['eng'] }, target: { port: 1 }, ...conn }] }), 'gateway.yaml', {}, work);
      } catch (e) { return (e as Error).message; }
      return 'no error';
    };
    assert.match(other({ ssh: { sftp: true } }), /connections\[0\]\.ssh.*only supported for type ssh/);
    assert.match(other({ recording: { input: true } }), /recording\.input.*only supported for type ssh/);
    assert.match(other({ target: { port: 1, host_key: sshd.hostKey } }), /target\.host_key.*only supported for type ssh/);
  });
  test('an encrypted key needs its passphrase', () => {
    const enc = join(work, 'enc_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'pass phrase', '-f', enc], { stdio: 'ignore' });
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: enc } }), /target\.private_key_file.*not a usable private key.*passphrase/i);
    assert.match(err({ target: { port: 22, user: 'd', private_key_file: enc, passphrase_env: 'KP' } }, { KP: 'wrong' }), /not a usable private key/);
    const ok = load({ target: { port: 22, user: 'd', private_key_file: enc, passphrase_env: 'KP' } }, { KP: 'pass phrase' });
    assert.equal(ok.secrets.get('web-1')!.passphrase, 'pass phrase');
  });
});
