/**
 * `hoopctl connect <conn>`: take (or reuse) a lease, wait for review if the connection needs one,
 * listen on 127.0.0.1 and tunnel each connection through the gateway until Ctrl-C or the lease
 * ends (exit 4 with the reason). The lease outlives this process: a later `connect` reuses it.
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { authedClient } from '../../client/auth.ts';
import { settingsDir } from '../../client/settings.ts';
import { LocalTunnel, type LeaseInfo, type LeaseEnded } from '../../client/tunnel.ts';
import { UsageError, ExitCode } from '../../errors.ts';
import { CloseCode } from '../../shared/ws-duplex.ts';
import { out, printJson, line, info } from '../output.ts';
import { waitForLease, type PendingLease } from '../../client/reviews.ts';
import type { GatewayClient } from '../../client/gateway-client.ts';

interface Opts { port?: string; duration?: string; reason?: string; newLease?: boolean; socketDir?: string; anyLocalUser?: boolean; gateway?: string; json?: boolean }

import { DEFAULT_PORTS } from '../ports.ts';
export { DEFAULT_PORTS };

interface ConnView { name: string; type: string; database?: string; user?: string; host_key?: string | null }

/** quotes a path for a POSIX shell when it needs it */
function shq(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** the alias ssh files the gateway's host key of a connection under (HostKeyAlias) */
export const hostAlias = (conn: string) => `hoop-${conn}`;

/**
 * Writes the gateway's host key for an ssh connection into the CLI's own known_hosts (one line
 * per connection alias, replaced on each connect), so ssh checks it instead of asking the user
 * to accept an unknown key. Returns the file.
 */
export function writeKnownHost(conn: string, hostKey: string): string {
  const dir = settingsDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'known_hosts');
  let lines: string[] = [];
  try { lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() && !l.startsWith(`${hostAlias(conn)} `)); } catch { /* first one */ }
  lines.push(`${hostAlias(conn)} ${hostKey}`);
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return file;
}

/** the ssh options that make ssh, scp and sftp check the gateway's host key for `conn` */
export function sshHostOptions(conn: string, knownHosts: string): string {
  return `-o UserKnownHostsFile=${shq(knownHosts)} -o HostKeyAlias=${hostAlias(conn)}`;
}

export function clientCommand(type: string, port: number, conn: ConnView, knownHosts?: string): string {
  switch (type) {
    case 'postgres': return `psql "postgres://127.0.0.1:${port}/${conn.database ?? 'postgres'}"`;
    case 'ssh': return `ssh -p ${port}${knownHosts ? ` ${sshHostOptions(conn.name, knownHosts)}` : ''} ${conn.user ? `${conn.user}@` : ''}127.0.0.1`;
    case 'http': return `curl http://127.0.0.1:${port}/`;
    default: return `nc 127.0.0.1 ${port}`;
  }
}

export default async function connect(name: string, opts: Opts): Promise<number> {
  let port: number | undefined;
  if (opts.port !== undefined) {
    port = Number(opts.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be a port number (got ${opts.port})`);
    // before any lease is taken: a port we cannot listen on must not leave one behind
    if (port !== 0 && !opts.socketDir) await portFree(port);
  }
  const gw = await authedClient(opts.gateway);
  const { connections } = await gw.request<{ connections: ConnView[] }>('GET', '/api/connections');
  let lease = await gw.request<LeaseInfo & { reused: boolean; remaining: string }>('POST', '/api/leases', { connection: name, duration: opts.duration, reason: opts.reason, new: Boolean(opts.newLease) });
  const conn: ConnView = connections.find((c) => c.name === name) ?? { name, type: 'tcp' };
  const emit = (v: Record<string, unknown>) => (out.json ? printJson(v) : undefined);
  const notes = lease as { clamped?: { requested: string; max: string }; reason_updated?: boolean; duration?: string };
  if (notes.clamped && !out.json) info(`hoopctl: --duration ${notes.clamped.requested} is above ${name}'s lease.max; the lease lasts ${notes.clamped.max}`);
  if (lease.reused && !out.json) {
    info(`hoopctl: reusing your active lease ${lease.id} on ${name}${opts.duration ? ' (its end stays as it was; --new-lease for a fresh one)' : ''}${notes.reason_updated ? `; its reason is now "${opts.reason}" (audited)` : ''}`);
  }

  if (lease.status === 'pending') {
    const done = await awaitApproval(gw, name, lease as LeaseInfo & PendingLease, emit);
    if (typeof done === 'number') return done;
    lease = { ...done, reused: false, remaining: '' } as typeof lease;
  }

  const tunnel = new LocalTunnel(gw, lease, { type: conn.type, anyLocalUser: opts.anyLocalUser });
  await tunnel.token(); // fail now, not on the first client connection, if tunnels are refused
  let bound: number;
  let command: string;
  let socketPath: string | undefined;
  const wanted = port ?? DEFAULT_PORTS[conn.type];
  const knownHosts = conn.type === 'ssh' && conn.host_key ? writeKnownHost(name, conn.host_key) : undefined;
  if (opts.socketDir) {
    bound = port ?? DEFAULT_PORTS[conn.type] ?? 5432;
    socketPath = await tunnel.listenUnix(opts.socketDir, bound);
    command = conn.type === 'postgres' ? `psql "host=${opts.socketDir} port=${bound} dbname=${(conn as { database?: string }).database ?? 'postgres'}"` : `nc -U ${socketPath}`;
  } else {
    bound = await tunnel.listen(port ?? DEFAULT_PORTS[conn.type] ?? 0, port === undefined);
    command = clientCommand(conn.type, bound, conn, knownHosts);
  }
  const expiresAt = Date.parse(lease.expires_at);

  const view = out.tty && !out.json ? await (await import('../views/connect-view.ts')).showConnect({ name, type: conn.type, port: bound, command, lease, tunnel }) : undefined;
  if (out.json) emit({ event: 'listening', connection: name, type: conn.type, address: socketPath ?? `127.0.0.1:${bound}`, port: bound, command, lease, ...(knownHosts ? { known_hosts: knownHosts, host_key_alias: hostAlias(name) } : {}) });
  else if (!view) {
    if (wanted && bound !== wanted) line(`Port ${wanted} is in use; listening on ${bound} instead.`);
    line(`Connected to ${name} (${conn.type}) on ${socketPath ?? `127.0.0.1:${bound}`}; lease ${lease.id} ${lease.reused ? 'reused' : 'granted'}, ends ${lease.expires_at}`);
    line(`Try: ${command}`);
    if (knownHosts) line(`scp and sftp: -P ${bound} ${sshHostOptions(name, knownHosts)} (the gateway's host key for ${name} is in ${knownHosts})`);
    line('Press Ctrl-C to stop listening (the lease stays valid until it expires or is revoked).');
  }
  tunnel.on('refused', (err: Error) => { if (!view && !out.json) info(`connection refused by gateway: ${err.message}`); });
  // what a client cannot always show (a closed stream has no message in most protocols)
  tunnel.on('local-refused', (why: string) => { if (!view && !out.json) info(`refused a local connection: ${why}`); else if (out.json) emit({ event: 'local_refused', reason: why }); });
  tunnel.on('closed-with-error', (err: { code: number; reason: string }) => {
    if (err.code !== CloseCode.overLimit) return;
    if (!view && !out.json) info(`connection refused by gateway: ${err.reason}`);
    else if (out.json) emit({ event: 'connection_refused', reason: err.reason });
  });
  if (!socketPath && !tunnel.ownerOnly && !out.json) {
    info(opts.anyLocalUser ? 'warning: --any-local-user: every local user can use this port and your lease'
      : `warning: on ${process.platform} hoopctl cannot tell which local user connects to 127.0.0.1:${bound}; other users of this machine could use your lease (use --socket-dir DIR for a private socket)`);
  }

  const ended = await new Promise<LeaseEnded | 'interrupted'>((resolve) => {
    const onSignal = () => resolve('interrupted');
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    tunnel.once('lease-ended', (e: LeaseEnded) => resolve(e));
    // the lease's own clock, and a poll that notices a revocation while no connection is open
    const expiry = setTimeout(() => resolve({ reason: 'lease expired', code: 4001 }), Math.max(0, expiresAt - Date.now()) + 1500);
    const poll = setInterval(() => {
      gw.request<{ status: string; end_reason: string | null }>('GET', `/api/leases/${lease.id}`).then((l) => {
        if (l.status !== 'active') resolve({ reason: l.end_reason ?? `lease ${l.status}`, code: 4002 });
      }, () => { /* gateway briefly unreachable: keep serving open tunnels */ });
    }, 3000);
    expiry.unref();
    poll.unref();
    tunnel.once('stop', () => { clearTimeout(expiry); clearInterval(poll); });
  });
  tunnel.emit('stop');
  view?.stop(ended === 'interrupted' ? 'stopped' : ended.reason);
  await tunnel.close();
  if (ended === 'interrupted') {
    if (out.json) emit({ event: 'stopped', lease: lease.id });
    else if (!view) line(`Stopped. Lease ${lease.id} stays valid until ${lease.expires_at} (hoopctl revoke ${lease.id} to end it).`);
    return 0;
  }
  if (out.json) emit({ event: 'lease_ended', lease: lease.id, reason: ended.reason });
  info(`hoopctl: ${ended.reason}; closed all connections of lease ${lease.id}`);
  return ExitCode.denied;
}

/**
 * A lease that waits for its review: the gateway answers the long poll the moment it is decided
 * (no polling loop here). Ctrl-C withdraws the request (the pending lease is revoked, which
 * cancels its review). Resolves the active lease, or the exit code: 5 rejected / timed out.
 */
async function awaitApproval(gw: GatewayClient, name: string, lease: LeaseInfo & PendingLease, emit: (v: Record<string, unknown>) => void): Promise<(LeaseInfo & PendingLease) | number> {
  const reviewId = lease.review_id ?? lease.review?.id ?? '?';
  const groups = lease.review?.groups ?? [];
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const view = out.tty && !out.json
    ? await (await import('../views/connect-view.ts')).showPending({ name, leaseId: lease.id, reviewId, groups, expiresAt: Date.parse(lease.expires_at) })
    : undefined;
  if (out.json) emit({ event: 'pending', lease, review_id: reviewId });
  else if (!view) info(`Lease ${lease.id} on ${name} is waiting for approval by ${groups.join(' or ') || 'a reviewer'} (review ${reviewId}): a reviewer runs \`hoopctl approve ${reviewId}\`. Ctrl-C withdraws the request.`);
  let done: (LeaseInfo & PendingLease) | undefined;
  try {
    done = await waitForLease<LeaseInfo & PendingLease>(gw, lease.id, stop.signal, (err) => { if (!view && !out.json) info(`gateway unreachable (${err.message}); still waiting…`); });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (!done) {
    await gw.request('POST', `/api/leases/${lease.id}/revoke`).catch(() => undefined);
    view?.stop(`Request withdrawn (review ${reviewId}).`);
    if (out.json) emit({ event: 'withdrawn', lease: lease.id, review_id: reviewId });
    else if (!view) info(`Request withdrawn (review ${reviewId}).`);
    return 130;
  }
  if (done.status !== 'active') {
    const why = done.end_reason ?? `lease ${done.status}`;
    view?.stop(`hoopctl: ${why}`);
    if (out.json) emit({ event: 'denied', lease: done, review_id: reviewId, reason: why });
    if (!view) info(`hoopctl: review ${reviewId}: ${why}`);
    return ExitCode.rejected;
  }
  view?.stop(`Approved${done.review?.decided_by ? ` by ${done.review.decided_by}` : ''}${done.review?.decision_reason ? `: ${done.review.decision_reason}` : ''}.`);
  if (out.json) emit({ event: 'approved', lease: done, review_id: reviewId });
  else if (!view) info(`Approved${done.review?.decided_by ? ` by ${done.review.decided_by}` : ''}${done.review?.decision_reason ? `: ${done.review.decision_reason}` : ''}.`);
  return done;
}

/** Exit 2 when `port` is taken on 127.0.0.1 (checked by binding it for a moment). */
async function portFree(port: number): Promise<void> {
  const net = await import('node:net');
  await new Promise<void>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE' || err.code === 'EACCES'
      ? new UsageError(`port ${port} on 127.0.0.1 is ${err.code === 'EACCES' ? 'not allowed for this user' : 'in use'}; no lease was taken`, { hint: 'pick another with --port, or leave --port out for the default (a free one when that is taken)' })
      : err));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve()));
  });
}
