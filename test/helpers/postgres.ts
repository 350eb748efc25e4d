/**
 * Throwaway PostgreSQL 15 clusters for tests: initdb into a fresh temp dir, listen on 127.0.0.1 on a
 * free port (sockets inside the temp dir), role `app`/`app-secret` owning database `app`.
 *
 * What it needs from the machine: `initdb`, `pg_ctl`, `postgres` (15) and `psql` on PATH, `openssl`
 * for `ssl: true`. initdb refuses to run as root, so when the test runs as root every server-side
 * command runs as the `postgres` system user (`runuser -u postgres --`, util-linux); that user must
 * exist (the Debian postgresql package creates it; otherwise `useradd --system postgres`).
 * Run as a non-root user, everything runs as that user.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PgCluster {
  host: '127.0.0.1';
  port: number;
  dataDir: string;
  superuser: string;
  /** superuser password */
  superuserPassword: string;
  /** the server certificate (PEM, SAN IP:127.0.0.1), usable as CA file for verify-full; set when ssl */
  certFile?: string;
  url(db?: string, user?: string, password?: string): string;
  /** runs real `psql -XAtq`, resolves stdout, rejects with stderr */
  psql(sql: string, opts?: { db?: string; user?: string; password?: string }): Promise<string>;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

export type PgAuth = 'scram-sha-256' | 'md5' | 'password' | 'trust';

const SUPERUSER = 'postgres';
const SUPERUSER_PASSWORD = 'postgres-secret';
const APP_PASSWORDS: Record<string, string> = { app: 'app-secret', [SUPERUSER]: SUPERUSER_PASSWORD };

const asRoot = process.getuid?.() === 0;
let pgIds: { uid: number; gid: number } | undefined;
function postgresIds(): { uid: number; gid: number } {
  if (!pgIds) {
    try {
      pgIds = {
        uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
        gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
      };
    } catch (err) {
      throw new Error('running as root: initdb needs the non-root system user "postgres" (useradd --system postgres)', { cause: err });
    }
  }
  return pgIds;
}

/** Wraps a server-side command so it runs as `postgres` when we are root. */
function serverCmd(cmd: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { env: env ?? process.env, maxBuffer: 64 * 1024 * 1024, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`${cmd} ${args.join(' ')} failed: ${String(stderr).trim() || err.message}`), { stderr: String(stderr), stdout: String(stdout), cause: err }));
      else resolve(String(stdout));
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

function runServer(cmd: string, args: string[]): Promise<string> {
  const [c, a] = serverCmd(cmd, args);
  return run(c, a);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const live = new Set<{ dataDir: string; root: string }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test that fails before stop(), or a run killed by a timeout, must not leave a postmaster behind.
  const cleanup = () => {
    for (const c of live) {
      const [cmd, args] = serverCmd('pg_ctl', ['-D', c.dataDir, '-m', 'immediate', '-w', 'stop']);
      spawnSync(cmd, args, { stdio: 'ignore', timeout: 20_000 });
      rmSync(c.root, { recursive: true, force: true });
    }
    live.clear();
  };
  process.on('exit', cleanup);
  for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
    process.once(sig, () => { cleanup(); process.exit(128 + n); });
  }
}

export async function startPostgres(opts: { auth?: PgAuth; ssl?: boolean } = {}): Promise<PgCluster> {
  const auth = opts.auth ?? 'scram-sha-256';
  const root = mkdtempSync(join(tmpdir(), 'hoop-pg-'));
  const dataDir = join(root, 'data');
  const logFile = join(root, 'postgres.log');
  const own = (p: string) => { if (asRoot) { const { uid, gid } = postgresIds(); chownSync(p, uid, gid); } };
  own(root);
  const pwfile = join(root, 'pwfile');
  writeFileSync(pwfile, SUPERUSER_PASSWORD + '\n', { mode: 0o600 });
  own(pwfile);

  const entry = { dataDir, root };
  live.add(entry);
  installExitHook();
  try {
    await runServer('initdb', ['-D', dataDir, '-U', SUPERUSER, `--pwfile=${pwfile}`, `--auth-host=${auth}`, '--auth-local=trust',
      '--no-sync', '--encoding=UTF8', '--locale=C']);
    let certFile: string | undefined;
    const conf = [
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = '${root}'`,
      'fsync = off', 'synchronous_commit = off', 'full_page_writes = off',
      // md5 auth only happens when the stored verifier is md5 (a SCRAM verifier makes the server use SCRAM).
      `password_encryption = '${auth === 'md5' ? 'md5' : 'scram-sha-256'}'`,
      'max_connections = 100', 'shared_buffers = 32MB',
    ];
    if (opts.ssl) {
      certFile = join(root, 'server.crt');
      const keyFile = join(root, 'server.key');
      await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']);
      chmodSync(keyFile, 0o600);
      own(keyFile); own(certFile);
      conf.push('ssl = on', `ssl_cert_file = '${certFile}'`, `ssl_key_file = '${keyFile}'`);
    }

    let port = 0;
    for (let attempt = 0; ; attempt++) {
      port = await freePort();
      const lines = [...conf, `port = ${port}`];
      writeFileSync(join(dataDir, 'postgresql.auto.conf'), lines.join('\n') + '\n');
      own(join(dataDir, 'postgresql.auto.conf'));
      try {
        await runServer('pg_ctl', ['-D', dataDir, '-l', logFile, '-w', '-t', '60', 'start']);
        break;
      } catch (err) {
        // The free port may have been taken between probe and bind; try another a couple of times.
        if (attempt >= 2) throw new Error(`postgres did not start: ${tail(logFile)}`, { cause: err });
      }
    }

    const cluster: PgCluster = {
      host: '127.0.0.1',
      port,
      dataDir,
      superuser: SUPERUSER,
      superuserPassword: SUPERUSER_PASSWORD,
      certFile,
      url(db = 'postgres', user = SUPERUSER, password = APP_PASSWORDS[user] ?? '') {
        return `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(db)}`;
      },
      psql(sql, o = {}) {
        const user = o.user ?? SUPERUSER;
        const env = { ...process.env, PGPASSWORD: o.password ?? APP_PASSWORDS[user] ?? '', PGCONNECT_TIMEOUT: '10', PGSSLMODE: 'prefer' };
        return run('psql', ['-XAtq', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', user, '-d', o.db ?? 'postgres', '-f', '-'], env, sql);
      },
      async stop() {
        if (!live.has(entry)) return;
        live.delete(entry);
        await runServer('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', 'stop']).catch(() => undefined);
        rmSync(root, { recursive: true, force: true });
      },
      async restart() {
        await runServer('pg_ctl', ['-D', dataDir, '-l', logFile, '-m', 'fast', '-w', '-t', '60', 'restart']);
      },
    };
    await cluster.psql(`CREATE ROLE app LOGIN PASSWORD 'app-secret'; CREATE DATABASE app OWNER app;`);
    return cluster;
  } catch (err) {
    live.delete(entry);
    const [cmd, args] = serverCmd('pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
    spawnSync(cmd, args, { stdio: 'ignore', timeout: 20_000 });
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
}

function tail(file: string): string {
  try { return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n'); } catch { return '(no log)'; }
}
