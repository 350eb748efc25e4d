/**
 * `hoopctl exec <conn>` (issue 11): one non-interactive command for CI jobs, scripts and agents.
 *
 * 1. Input on the target: `-c SQL`, `-f FILE` or SQL on stdin, split like psql (sql-split.ts), run
 *    statement by statement through the gateway in-process (sql-exec.ts), results streamed to stdout
 *    as table / csv / json / ndjson (exec-output.ts). Stops at the first failing statement
 *    (psql's ON_ERROR_STOP) unless --continue-on-error.
 * 2. A wrapped command: `exec <conn> [--port N] -- <command> [args]` opens the lease's tunnel on a
 *    local port, runs the command with the connection in its environment, forwards SIGINT,
 *    SIGTERM and SIGHUP, passes its exit code through (128+signal when a signal killed it) and
 *    closes the tunnel when it exits.
 *
 * Never prompts, never draws ink. stdout carries only results (or the wrapped command's output);
 * with --json, progress events go to stderr as JSON lines.
 */
import { readFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { authedClient } from '../../client/auth.ts';
import { LocalTunnel } from '../../client/tunnel.ts';
import { openLease, runStatements, SqlTarget, type Emit, type ExecEvent } from '../../client/sql-exec.ts';
import { splitSql, SplitError, type SplitStatement } from '../../client/sql-split.ts';
import { parseDuration } from '../../gateway/config/duration.ts';
import { ExitCode, HoopError, UsageError, toHoopError } from '../../errors.ts';
import { createWriter, type Format } from '../exec-output.ts';

export interface ExecOpts {
  command?: string[]; file?: string; format?: Format; reason?: string; duration?: string; timeout?: string; wait?: string;
  review?: string; continueOnError?: boolean; port?: string; gateway?: string; json?: boolean;
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const signalExit = (sig: NodeJS.Signals) => 128 + (osConstants.signals[sig] ?? 0);

function durationOpt(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (ms === undefined || ms <= 0) throw new UsageError(`${flag} must be a duration such as 30s, 5m or 1h (got ${JSON.stringify(v)})`);
  return ms;
}

/** the `--` separator is how a wrapped command is told apart from operands (commander drops it) */
export function hasSeparator(argv: string[] = process.argv): boolean {
  return argv.includes('--');
}

export default async function exec(name: string, wrapped: string[], opts: ExecOpts): Promise<number> {
  const started = Date.now();
  const emit: Emit = opts.json ? (e) => process.stderr.write(`${JSON.stringify({ ...e, at: new Date().toISOString() })}\n`) : () => {};
  const report = (err: unknown): number => {
    const e = toHoopError(err);
    if (opts.json) emit({ event: 'error', error: e.code, exit_code: e.exit, message: e.message, ...(e.hint ? { hint: e.hint } : {}), ...(e.details ?? {}) });
    else {
      process.stderr.write(`hoopctl: ${e.message}\n`);
      if (e.hint) process.stderr.write(`  ${e.hint}\n`);
      if (process.env.HOOP_DEBUG && e.cause) process.stderr.write(`${String((e.cause as Error).stack ?? e.cause)}\n`);
    }
    return e.exit;
  };
  const completed = (code: number, extra: Record<string, unknown> = {}) => {
    // peak memory, so a pipeline (and the test suite) can see that results streamed
    emit({ event: 'completed', exit_code: code, duration_ms: Date.now() - started, max_rss_kb: process.resourceUsage().maxRSS, ...extra });
    return code;
  };

  // --timeout and signals end the run through one abort signal; its reason says which
  const stop = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    signalled ??= sig;
    stop.abort(sig);
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    if (wrapped.length && !hasSeparator()) throw new UsageError(`unexpected argument ${JSON.stringify(wrapped[0])}: put -- before a command to wrap (hoopctl exec ${name} -- ${wrapped.join(' ')}), or give SQL with -c`);
    const timeoutMs = durationOpt('--timeout', opts.timeout);
    const waitMs = durationOpt('--wait', opts.wait);
    if (opts.review !== undefined && !/^r_[A-Za-z0-9]+$/.test(opts.review)) throw new UsageError(`--review takes a review id such as r_abc123 (got ${JSON.stringify(opts.review)})`);
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => stop.abort('timeout'), timeoutMs);
      timer.unref();
    }
    for (const s of SIGNALS) process.on(s, onSignal);
    if (wrapped.length) return await wrap(name, wrapped, opts, stop.signal, emit, completed);

    if (opts.port !== undefined) throw new UsageError('--port applies to a wrapped command only (hoopctl exec <conn> --port N -- <command>)');
    const statements = await readInput(opts);
    const format: Format = opts.format ?? (process.stdout.isTTY ? 'table' : 'csv');
    const gw = await authedClient(opts.gateway);
    const { conn, lease } = await openLease(gw, name, { duration: opts.duration, reason: opts.reason, waitMs, signal: stop.signal }, emit);
    const target = new SqlTarget(gw, conn, lease);
    const writer = createWriter(format, { stdout: process.stdout, stderr: process.stderr });
    let outcome;
    try {
      outcome = await runStatements(target, {
        statements, writer, continueOnError: opts.continueOnError, waitMs, review: opts.review, signal: stop.signal, typeLookup: format === 'json' || format === 'ndjson',
      }, emit);
    } finally {
      await target.close();
    }
    await writer.finish(outcome.error?.message);
    if (outcome.cancelled) {
      const why = stop.signal.reason === 'timeout' ? `--timeout ${opts.timeout} reached: the running statement was cancelled on the target` : `${signalled}: the running statement was cancelled on the target`;
      if (opts.json) emit({ event: 'error', error: 'cancelled', exit_code: signalled ? signalExit(signalled) : ExitCode.target, message: why });
      else process.stderr.write(`hoopctl: ${why}\n`);
      return completed(signalled ? signalExit(signalled) : ExitCode.target, { statements: statements.length, ran: outcome.ran, failed: outcome.failed, cancelled: true });
    }
    // statement errors were printed with their statement; the rest (review held, session lost) here
    const e = outcome.error;
    if (e && (e.code === 'review_pending' || !e.details?.sqlstate)) report(e);
    else if (e && opts.json) emit({ event: 'error', error: e.code, exit_code: e.exit, message: e.message, ...(e.details ?? {}) });
    return completed(outcome.exit, { statements: statements.length, ran: outcome.ran, failed: outcome.failed, ...(outcome.reviewId ? { review_id: outcome.reviewId } : {}) });
  } catch (err) {
    if (stop.signal.aborted && !(err instanceof HoopError && err.exit === ExitCode.rejected)) {
      const code = signalled ? signalExit(signalled) : report(err);
      return completed(code);
    }
    return completed(report(err));
  } finally {
    clearTimeout(timer);
    for (const s of SIGNALS) process.off(s, onSignal);
  }
}

async function readInput(opts: ExecOpts): Promise<SplitStatement[]> {
  if (opts.command?.length && opts.file !== undefined) throw new UsageError('give SQL with -c or -f, not both');
  let text: string;
  if (opts.command?.length) text = opts.command.join(';\n');
  else if (opts.file !== undefined && opts.file !== '-') {
    try {
      text = await readFile(opts.file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read ${opts.file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    }
  } else {
    if (process.stdin.isTTY && opts.file !== '-') throw new UsageError('no SQL to run: give -c "SQL", -f FILE, or pipe SQL on stdin (or wrap a command: hoopctl exec <conn> -- psql)');
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  }
  let statements: SplitStatement[];
  try {
    statements = splitSql(text);
  } catch (err) {
    if (err instanceof SplitError) throw new UsageError(`${opts.file && opts.file !== '-' ? `${opts.file}: ` : ''}${err.message}`);
    throw err;
  }
  if (!statements.length) throw new UsageError('the input holds no SQL statement');
  return statements;
}

/** the connection in the wrapped command's environment; the password is a placeholder (the lease is the login) */
export function connectionEnv(type: string, port: number, conn: { name: string; database?: string }, user: string): Record<string, string> {
  const host = '127.0.0.1';
  if (type === 'postgres') {
    const db = conn.database ?? 'postgres';
    const pgUser = user.replace(/[^\w@.-]/g, '_') || 'hoop';
    return {
      PGHOST: host, PGPORT: String(port), PGUSER: pgUser, PGDATABASE: db, PGPASSWORD: 'hoop-lease',
      // the hop to the tunnel is loopback; the gateway answers SSLRequest with 'N' anyway
      PGSSLMODE: 'disable',
      DATABASE_URL: `postgres://${encodeURIComponent(pgUser)}:hoop-lease@${host}:${port}/${encodeURIComponent(db)}?sslmode=disable`,
      HOOP_HOST: host, HOOP_PORT: String(port), HOOP_CONNECTION: conn.name,
    };
  }
  const url = type === 'http' ? `http://${host}:${port}` : type === 'ssh' ? `ssh://${host}:${port}` : `tcp://${host}:${port}`;
  return { HOOP_HOST: host, HOOP_PORT: String(port), HOOP_URL: url, HOOP_CONNECTION: conn.name };
}

async function wrap(name: string, cmd: string[], opts: ExecOpts, signal: AbortSignal, emit: Emit, completed: (c: number, extra?: Record<string, unknown>) => number): Promise<number> {
  for (const [flag, v] of [['-c', opts.command?.length ? 'x' : undefined], ['-f', opts.file], ['--format', opts.format], ['--review', opts.review], ['--continue-on-error', opts.continueOnError ? 'x' : undefined]] as const)
    if (v !== undefined) throw new UsageError(`${flag} does not apply to a wrapped command`);
  let port = 0;
  if (opts.port !== undefined) {
    port = Number(opts.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be a port number (got ${opts.port})`);
  }
  const gw = await authedClient(opts.gateway);
  const { conn, lease } = await openLease(gw, name, { duration: opts.duration, reason: opts.reason, waitMs: durationOpt('--wait', opts.wait), signal }, emit);
  // a signal (or --timeout) while the lease was being taken: do not start the command
  if (signal.aborted) return completed(typeof signal.reason === 'string' && signal.reason.startsWith('SIG') ? signalExit(signal.reason as NodeJS.Signals) : ExitCode.target);
  const tunnel = new LocalTunnel(gw, lease);
  try {
    await tunnel.token(); // refused tunnels fail here, before the command starts
    const bound = await tunnel.listen(port, false).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'EADDRINUSE' ? new UsageError(`--port ${port}: the port is in use`) : err;
    });
    const env = connectionEnv(conn.type, bound, conn, lease.user);
    emit({ event: 'running', command: cmd, port: bound, env: Object.keys(env) });
    tunnel.on('lease-ended', (e: { reason: string }) => process.stderr.write(`hoopctl: ${e.reason}; the tunnel's connections were closed\n`));
    const child = spawn(cmd[0], cmd.slice(1), { stdio: 'inherit', env: { ...process.env, ...env } });
    // signals: ours are forwarded. A terminal's Ctrl-C already reaches the whole foreground
    // process group, the child included, so SIGINT is not sent a second time then.
    const forward = (sig: NodeJS.Signals) => {
      if (sig === 'SIGINT' && process.stdin.isTTY) return;
      child.kill(sig);
    };
    for (const s of SIGNALS) process.on(s, forward);
    const onTimeout = () => { if (signal.reason === 'timeout') { process.stderr.write(`hoopctl: --timeout ${opts.timeout} reached; stopping ${cmd[0]}\n`); child.kill('SIGTERM'); setTimeout(() => child.kill('SIGKILL'), 5000).unref(); } };
    signal.addEventListener('abort', onTimeout);
    const code = await new Promise<number>((resolve) => {
      child.once('error', (err: NodeJS.ErrnoException) => {
        process.stderr.write(`hoopctl: cannot run ${cmd[0]}: ${err.code === 'ENOENT' ? 'command not found' : err.message}\n`);
        resolve(err.code === 'ENOENT' ? 127 : 126);
      });
      child.once('exit', (c, sig) => resolve(c ?? signalExit(sig ?? 'SIGTERM')));
    });
    for (const s of SIGNALS) process.off(s, forward);
    signal.removeEventListener('abort', onTimeout);
    return completed(code, { command: cmd[0] });
  } finally {
    await tunnel.close();
  }
}
