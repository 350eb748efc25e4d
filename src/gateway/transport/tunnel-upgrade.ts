/**
 * WebSocket upgrades on `/tunnel/<connection>`: the tunnel token is checked BEFORE the handshake
 * completes (a refused upgrade gets a plain HTTP status and a JSON reason the CLI prints). With the
 * subprotocol MUX_PROTOCOL (the CLI's default) the WebSocket carries every TCP connection of one
 * `hoopctl connect` as streams (src/shared/mux.ts), each stream a session, each checked against
 * the lease when it opens, and the WebSocket closes with the lease; without it, one WebSocket
 * carries one TCP connection. Sessions see the same stream interface either way.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { AccessDenied, NotFound, AuthError, UsageError, toHoopError } from '../../errors.ts';
import { wsDuplex, CloseCode, type WsDuplex } from '../../shared/ws-duplex.ts';
import { MuxChannel, MUX_PROTOCOL, type MuxStream } from '../../shared/mux.ts';
import { bearer } from '../api.ts';
import type { Lease } from '../store/store.ts';
import type { ConnectionConfig } from '../config/schema.ts';
import type { TunnelTokens } from '../session/tunnel-token.ts';
import { runSession, type SessionDeps } from '../session/run-session.ts';
import { refusePostgres } from '../../shared/pg-refuse.ts';
import { ConnectionLimits } from './limits.ts';

/** a single frame larger than this closes the tunnel with 1009 (ws maxPayload) */
export const MAX_FRAME = 4 * 1024 * 1024;
/** a multiplexed WebSocket closes this long after its lease ended (its sessions say goodbye first) */
const LEASE_CLOSE_MS = 300;

/** a percent-encoded path segment; a malformed escape is the client's error (400), not ours */
export function decodePathSegment(raw: string, what: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new UsageError(`${what}: malformed percent-escape in ${JSON.stringify(raw.slice(0, 80))}`, { details: { field: 'path' } });
  }
}

export function createTunnelUpgrade(deps: SessionDeps & { tunnelTokens: TunnelTokens }) {
  /** sessions still running: shutdown waits for them to write their last rows */
  const sessions = new Set<Promise<void>>();
  // only "eof" travels as text, and it is compared byte for byte: no UTF-8 validation needed
  const wss = new WebSocketServer({
    noServer: true, maxPayload: MAX_FRAME, perMessageDeflate: false, skipUTF8Validation: true, clientTracking: true,
    // HOOP_TUNNEL_MUX=0 on the gateway refuses multiplexing: CLIs fall back to one WebSocket per connection
    handleProtocols: (protocols) => (protocols.has(MUX_PROTOCOL) && process.env.HOOP_TUNNEL_MUX !== '0' ? MUX_PROTOCOL : false),
  });

  // keepalive: ping every tunnel so idle tunnels survive proxies; a peer that misses two pings is gone
  const alive = new WeakMap<WebSocket, boolean>();
  const pinger = setInterval(() => {
    for (const ws of wss.clients) {
      if (alive.get(ws) === false) { ws.terminate(); continue; }
      alive.set(ws, false);
      ws.ping();
    }
  }, deps.cfg.tunnel_keepalive);
  pinger.unref();

  function refuse(socket: Duplex, err: unknown): void {
    const e = toHoopError(err);
    const body = JSON.stringify(e.toJSON());
    const reason = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found' }[e.status] ?? 'Error';
    socket.end(`HTTP/1.1 ${e.status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }

  const limits = new ConnectionLimits(deps.cfg.max_connections_per_user);

  /**
   * A connection over a limit: a PostgreSQL client reads an ErrorResponse (53300
   * too_many_connections, as from the server itself), any client a close with the reason that
   * `hoopctl connect` prints; no target is dialled. Audited as `session.refused`.
   */
  function refuseOverLimit(stream: WsDuplex, lease: Lease, conn: ConnectionConfig, why: string): void {
    stream.on('error', () => {});
    deps.audit.emit('session.refused', { actor: lease.user, connection: conn.name, leaseId: lease.id, data: { reason: why } });
    const said = conn.type === 'postgres' ? refusePostgres(stream, '53300', why) : Promise.resolve();
    void said.then(() => stream.closeWith(CloseCode.overLimit, why));
  }

  function start(stream: WsDuplex, lease: Lease, conn: ConnectionConfig): void {
    const slot = limits.acquire(lease, conn);
    if ('refused' in slot) return refuseOverLimit(stream, lease, conn, slot.refused);
    const running = runSession(deps, lease, conn, lease.groups, stream).catch((err) => {
      deps.log.error({ err }, 'session failed');
      stream.closeWith(CloseCode.engineError, 'gateway error');
    }).finally(slot.release);
    sessions.add(running);
    void running.finally(() => sessions.delete(running));
  }

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {});
    try {
      const url = new URL(req.url ?? '/', 'http://gateway');
      const name = decodePathSegment(url.pathname.slice('/tunnel/'.length), 'connection name in the tunnel path');
      const conn = deps.cfg.connections.find((c) => c.name === name);
      if (!conn) throw new NotFound(`unknown connection "${name}"`);
      const claims = await deps.tunnelTokens.verify(bearer(req), name);
      let lease = deps.leases.activeLease(claims.leaseId);
      if (!lease) {
        // the store is the truth: with several replicas a lease may be a few ms older than our news of it
        const stored = await deps.store.getLease(claims.leaseId);
        lease = stored?.status === 'active' && stored.expiresAt > Date.now() ? deps.leases.adopt(stored) : undefined;
        if (!lease) throw new AccessDenied(`lease ${claims.leaseId} is ${stored?.status === 'active' ? 'expired' : stored?.status ?? 'unknown'}`, { code: 'lease_not_active' });
      }
      if (lease.user !== claims.user) throw new AuthError('tunnel_token_invalid', 'tunnel token does not belong to the lease owner');
      if (lease.connection !== name) throw new AccessDenied(`lease ${lease.id} is for connection "${lease.connection}"`, { code: 'tunnel_token_wrong_connection' });
      const leaseId = lease.id;
      wss.handleUpgrade(req, socket, head, (ws) => {
        alive.set(ws, true);
        ws.on('pong', () => alive.set(ws, true));
        (ws as unknown as { _socket: import('node:net').Socket })._socket.setNoDelay(true);
        if (ws.protocol !== MUX_PROTOCOL) return start(wsDuplex(ws), lease, conn);
        new MuxChannel(ws, { writer: 'server', onOpen: (s: MuxStream) => {
          // a MuxStream stands in for the WebSocket (see mux.ts)
          const stream = wsDuplex(s as unknown as WebSocket);
          const current = deps.leases.activeLease(leaseId);
          if (current) start(stream, current, conn);
          else stream.closeWith(CloseCode.leaseExpired, `lease ${leaseId} has ended`);
        } });
        // the WebSocket ends with its lease, after the sessions' goodbyes (run-session.ts), so an
        // idle `hoopctl connect` learns of an expiry or a revocation at once
        const release = deps.leases.hold(leaseId, {
          close(code, reason) { setTimeout(() => { if (ws.readyState === ws.OPEN) ws.close(code, reason); }, LEASE_CLOSE_MS).unref(); },
        });
        ws.once('close', release);
      });
    } catch (err) {
      refuse(socket, err);
    }
  }

  return {
    upgrade,
    closeAll(code: number, reason: string) {
      for (const ws of wss.clients) ws.close(code, reason);
    },
    /** Resolves when every running session has finished (its recording closed, its row queued), or after `ms`. */
    settled(ms: number): Promise<void> {
      return new Promise((resolve) => {
        setTimeout(resolve, ms).unref();
        void Promise.all(sessions).then(() => resolve());
      });
    },
    close() {
      clearInterval(pinger);
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
