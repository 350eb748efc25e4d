/**
 * A real OpenSSH server for tests (issue 12): an instance of Debian's /usr/sbin/sshd on a
 * loopback port, with host keys and an authorized client key generated per run. Run as root (CI),
 * it logs in as a dedicated account, TEST_USER, created once with useradd: root's own shell
 * start-up files are the machine's business (they may be slow, or print). Run as anyone else,
 * it logs in as that user.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, mkdirSync, existsSync, chmodSync, chownSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { freePort } from './postgres.ts';

export const SSHD = '/usr/sbin/sshd';
export const TEST_USER = 'hoop-sshtest';

/** the account sshd logs in as, created when running as root */
function loginUser(): { user: string; uid: number; gid: number } {
  const me = userInfo();
  if (me.uid !== 0) return { user: me.username, uid: me.uid, gid: me.gid };
  try {
    execFileSync('id', ['-u', TEST_USER], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--create-home', '--shell', '/bin/bash', TEST_USER], { stdio: 'ignore' });
  }
  // useradd leaves the account locked ("!"), which sshd refuses for every method without PAM;
  // "*" is no password, but not locked
  execFileSync('usermod', ['--password', '*', TEST_USER], { stdio: 'ignore' });
  const uid = Number(execFileSync('id', ['-u', TEST_USER]).toString());
  const gid = Number(execFileSync('id', ['-g', TEST_USER]).toString());
  return { user: TEST_USER, uid, gid };
}

export interface Sshd {
  port: number;
  dir: string;
  user: string;
  /** makes a local directory writable by the login user (files the tests create through ssh) */
  share(dir: string): void;
  /** the private key sshd accepts (OpenSSH format), its file, and the server's ed25519 host key line */
  clientKeyFile: string;
  hostKey: string;
  /** a wrong host key (another key pair's public line) */
  otherHostKey: string;
  logs(): string;
  stop(): Promise<void>;
}

function keygen(file: string, type = 'ed25519', passphrase = ''): void {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', passphrase, '-C', 'hoop-test', '-f', file], { stdio: 'ignore' });
}

export async function startSshd(): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-sshd-'));
  const port = await freePort();
  const { user, uid, gid } = loginUser();
  // sshd reads AuthorizedKeysFile as the login user
  chmodSync(dir, 0o755);
  keygen(join(dir, 'host_ed25519'));
  keygen(join(dir, 'host_ecdsa'), 'ecdsa');
  keygen(join(dir, 'client_ed25519'));
  keygen(join(dir, 'other_ed25519'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_ed25519.pub')), { mode: 0o644 });
  // sshd refuses to start without its privilege separation directory
  if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const cfg = [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${join(dir, 'host_ed25519')}`,
    `HostKey ${join(dir, 'host_ecdsa')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    'StrictModes no',
    'UsePAM no',
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PubkeyAuthentication yes',
    'AllowTcpForwarding yes',
    'AllowAgentForwarding yes',
    'X11Forwarding no',
    'PrintMotd no',
    'PrintLastLog no',
    'AcceptEnv LANG LC_* HOOP_TEST_*',
    'Subsystem sftp internal-sftp',
    'LogLevel ERROR',
    'MaxSessions 200',
    'MaxStartups 200',
  ].join('\n');
  writeFileSync(join(dir, 'sshd_config'), `${cfg}\n`);
  const proc: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stdout!.on('data', (d) => { logs += d; });
  proc.stderr!.on('data', (d) => { logs += d; });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`sshd exited with ${proc.exitCode}: ${logs}`);
    if (await listening(port)) break;
    if (Date.now() > deadline) throw new Error(`sshd did not start: ${logs}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const pub = (f: string) => readFileSync(join(dir, f), 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  return {
    port, dir, user,
    share: (d) => { if (userInfo().uid === 0) chownSync(d, uid, gid); },
    clientKeyFile: join(dir, 'client_ed25519'),
    hostKey: pub('host_ed25519.pub'),
    otherHostKey: pub('other_ed25519.pub'),
    logs: () => logs,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('close', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** ssh options for a non-interactive client: no prompts, no user config, the given known_hosts */
export function sshOpts(port: number, knownHosts: string, alias?: string, logLevel = 'ERROR'): string[] {
  return [
    '-F', '/dev/null', '-p', String(port),
    '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null', '-o', `LogLevel=${logLevel}`, '-o', 'ConnectTimeout=10',
    ...(alias ? ['-o', `HostKeyAlias=${alias}`] : []),
  ];
}
