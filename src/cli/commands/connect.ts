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
import { out, printJson, line, info } from '../output.ts';

interface Opts { port?: string; duration?: string; reason?: string; newLease?: boolean; gateway?: string; json?: boolean }

/** local ports clients expect, moved off the real service's port */
export const DEFAULT_PORTS: Record<string, number> = { postgres: 5433, ssh: 2222, http: 8080, tcp: 9000 };

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
  }
  const gw = await authedClient(opts.gateway);
  const { connections } = await gw.request<{ connections: ConnView[] }>('GET', '/api/connections');
  let lease = await gw.request<LeaseInfo & { reused: boolean; remaining: string }>('POST', '/api/leases', { connection: name, duration: opts.duration, reason: opts.reason, new: Boolean(opts.newLease) });
  const conn: ConnView = connections.find((c) => c.name === name) ?? { name, type: 'tcp' };
  const emit = (v: Record<string, unknown>) => (out.json ? printJson(v) : undefined);

  if (lease.status === 'pending') {
    info(`Lease ${lease.id} on ${name} is waiting for review; it starts the moment a reviewer approves (hoopctl approve ${lease.id}).`);
    emit({ event: 'pending', lease });
    while (lease.status === 'pending') {
      await new Promise((r) => setTimeout(r, 1000));
      lease = await gw.request('GET', `/api/leases/${lease.id}`);
    }
    if (lease.status !== 'active') {
      info(`hoopctl: lease ${lease.id} was ${lease.status}${(lease as { end_reason?: string }).end_reason ? `: ${(lease as { end_reason?: string }).end_reason}` : ''}`);
      return ExitCode.rejected;
    }
  }

  const tunnel = new LocalTunnel(gw, lease);
  await tunnel.token(); // fail now, not on the first client connection, if tunnels are refused
  const bound = await tunnel.listen(port ?? DEFAULT_PORTS[conn.type] ?? 0, port === undefined);
  const wanted = port ?? DEFAULT_PORTS[conn.type];
  const knownHosts = conn.type === 'ssh' && conn.host_key ? writeKnownHost(name, conn.host_key) : undefined;
  const command = clientCommand(conn.type, bound, conn, knownHosts);
  const expiresAt = Date.parse(lease.expires_at);

  const view = out.tty && !out.json ? await (await import('../views/connect-view.ts')).showConnect({ name, type: conn.type, port: bound, command, lease, tunnel }) : undefined;
  if (out.json) emit({ event: 'listening', connection: name, type: conn.type, address: `127.0.0.1:${bound}`, port: bound, command, lease, ...(knownHosts ? { known_hosts: knownHosts, host_key_alias: hostAlias(name) } : {}) });
  else if (!view) {
    if (wanted && bound !== wanted) line(`Port ${wanted} is in use; listening on ${bound} instead.`);
    line(`Connected to ${name} (${conn.type}) on 127.0.0.1:${bound}; lease ${lease.id} ${lease.reused ? 'reused' : 'granted'}, ends ${lease.expires_at}`);
    line(`Try: ${command}`);
    if (knownHosts) line(`scp and sftp: -P ${bound} ${sshHostOptions(name, knownHosts)} (the gateway's host key for ${name} is in ${knownHosts})`);
    line('Press Ctrl-C to stop listening (the lease stays valid until it expires or is revoked).');
  }
  tunnel.on('refused', (err: Error) => { if (!view && !out.json) info(`connection refused by gateway: ${err.message}`); });

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
