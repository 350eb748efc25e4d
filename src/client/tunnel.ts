/**
 * The local end of a tunnel: a TCP listener on 127.0.0.1; accepted connections ride a WebSocket to
 * the gateway's /tunnel/<connection>, proven by a short-lived tunnel token bound to the lease
 * (fetched ahead of expiry, shared by concurrent connections so setup costs no extra round trip).
 * By default one WebSocket carries all of them as streams (src/shared/mux.ts: fewer system calls
 * per query, no handshake per connection); HOOP_TUNNEL_MUX=0, or a gateway without the
 * subprotocol, gives each connection its own WebSocket. Bytes flow both ways through wsDuplex's
 * bridge (backpressure, half-close, TCP_NODELAY).
 */
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { WebSocket, type ClientOptions } from 'ws';
import { wsDuplex, TunnelClosed, CloseCode, type BridgeCounters, type WsDuplex } from '../shared/ws-duplex.ts';
import { AccessDenied, AuthError, HoopError, Unreachable } from '../errors.ts';
import { MuxChannel, MUX_PROTOCOL } from '../shared/mux.ts';
import { isLoopback, type GatewayClient } from './gateway-client.ts';
import { checkLocalPeer, peerCheckAvailable } from './local-peer.ts';
import { refusePostgres } from '../shared/pg-refuse.ts';
import { mkdirSync, chmodSync, lstatSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface LeaseInfo { id: string; connection: string; status: string; expires_at: string; user: string }

export interface TunnelStats { open: number; total: number; bytesUp: number; bytesDown: number; refused: number }

export interface TunnelOptions {
  /** the connection's type: a refused PostgreSQL client is told why in its own protocol */
  type?: string;
  /**
   * Let any local user connect to the TCP port (no owner check). Only for platforms or setups
   * where the check cannot work and the machine has no other users.
   */
  anyLocalUser?: boolean;
}

/** why the tunnel stopped: the lease ended (exit 4) or something else */
export interface LeaseEnded { reason: string; code: number }

interface TunnelToken { value: string; exp: number; wsOptions: ClientOptions }

/** the shared WebSocket of a multiplexed tunnel; connections wait in `waiting` until it is open */
interface SharedSocket { ws: WebSocket; channel?: MuxChannel; waiting: net.Socket[] }

const TOKEN_SLACK_MS = 15_000;

/**
 * RFC 6455 masks client frames with a random key so that a script in a browser cannot make an
 * intercepting HTTP proxy on the path misread bytes it chose. Over TLS no intermediary sees the
 * frames, and a loopback gateway has none on the path, so there the CLI sends an all-zero key:
 * ws then skips the per-byte XOR and the copy of every payload it needs, and the gateway's ws
 * skips unmasking (bench/RESULTS.md, iperf up). Any other gateway gets ws's random keys.
 */
function zeroMask(mask: Buffer): void {
  mask[0] = mask[1] = mask[2] = mask[3] = 0;
}
function maskNeeded(wsUrl: string): boolean {
  const u = new URL(wsUrl);
  return u.protocol !== 'wss:' && !isLoopback(u);
}
const MAX_FRAME = 4 * 1024 * 1024;

export class LocalTunnel extends EventEmitter {
  readonly stats: TunnelStats = { open: 0, total: 0, bytesUp: 0, bytesDown: 0, refused: 0 };
  readonly #gw: GatewayClient;
  readonly #lease: LeaseInfo;
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  readonly #websockets = new Set<WebSocket>();
  /** multiplex connections over one WebSocket (src/shared/mux.ts); HOOP_TUNNEL_MUX=0 opens one per connection */
  #useMux = process.env.HOOP_TUNNEL_MUX !== '0';
  #mux: SharedSocket | undefined;
  #token: TunnelToken | undefined;
  #tokenPending: Promise<TunnelToken> | undefined;
  readonly #wsUrl: string;
  /** frames may carry the all-zero mask (see zeroMask) */
  readonly #zeroMask: boolean;
  readonly #counters: BridgeCounters = {
    fromSocket: (n) => { this.stats.bytesUp += n; },
    fromTunnel: (n) => { this.stats.bytesDown += n; },
  };

  readonly #type: string | undefined;
  /** check the owner of each TCP connection (Linux); false on a Unix socket (its 0700 folder does) */
  #checkPeer: boolean;
  #socketPath: string | undefined;

  constructor(gw: GatewayClient, lease: LeaseInfo, opts: TunnelOptions = {}) {
    super();
    this.#gw = gw;
    this.#lease = lease;
    this.#type = opts.type;
    this.#checkPeer = !opts.anyLocalUser && peerCheckAvailable();
    this.#wsUrl = `${gw.url.replace(/^http/, 'ws')}/tunnel/${encodeURIComponent(lease.connection)}`;
    this.#zeroMask = !maskNeeded(this.#wsUrl);
    this.#server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (s) => this.#accept(s));
  }

  /** Listens on 127.0.0.1:port; when `fallback` and the port is taken, on a free port instead. */
  async listen(port: number, fallback: boolean): Promise<number> {
    const tryListen = (p: number) => new Promise<number>((resolve, reject) => {
      const onErr = (err: Error) => { this.#server.off('listening', onOk); reject(err); };
      const onOk = () => { this.#server.off('error', onErr); resolve((this.#server.address() as net.AddressInfo).port); };
      this.#server.once('error', onErr);
      this.#server.once('listening', onOk);
      this.#server.listen(p, '127.0.0.1');
    });
    try {
      return await tryListen(port);
    } catch (err) {
      if (fallback && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') return tryListen(0);
      throw err;
    }
  }

  /** whether TCP connections from other local users are refused (false: say so to the user) */
  get ownerOnly(): boolean {
    return this.#checkPeer;
  }

  /**
   * Listens on a Unix-domain socket in `dir` instead of TCP: the folder is made 0700 (created, or
   * tightened with a warning), so only this user (and root) can connect on any platform. A
   * PostgreSQL connection's socket is named as libpq expects (`psql -h DIR -p PORT`).
   */
  async listenUnix(dir: string, port: number): Promise<string> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory()) throw new Error(`--socket-dir ${dir} is not a directory`);
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new Error(`--socket-dir ${dir} belongs to another user (uid ${st.uid})`);
    if ((st.mode & 0o077) !== 0) {
      chmodSync(dir, 0o700);
      process.stderr.write(`warning: ${dir} was accessible to other users (mode ${(st.mode & 0o777).toString(8)}); changed to 0700\n`);
    }
    const path = join(dir, this.#type === 'postgres' ? `.s.PGSQL.${port}` : `hoop-${this.#lease.connection}.sock`);
    rmSync(path, { force: true }); // a socket file left by a killed connect
    this.#checkPeer = false;
    this.#socketPath = path;
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(path, () => { this.#server.off('error', reject); resolve(); });
    });
    return path;
  }

  /** A tunnel token for the lease, fetched ahead of expiry and shared between connections. */
  async token(): Promise<string> {
    return (await this.#currentToken()).value;
  }

  #currentToken(): Promise<TunnelToken> {
    const t = this.#token;
    const now = Date.now();
    if (t && t.exp - now > TOKEN_SLACK_MS) {
      // refresh in the background while the current one is still good
      if (t.exp - now < 2 * TOKEN_SLACK_MS) void this.#fetchToken().catch(() => {});
      return Promise.resolve(t);
    }
    return this.#fetchToken();
  }

  #fetchToken(): Promise<TunnelToken> {
    this.#tokenPending ??= this.#gw.request<{ token: string; expires_at: string }>('POST', `/api/leases/${this.#lease.id}/tunnel-token`)
      .then((r) => {
        // one options object per token, reused by every connection until the next token
        const wsOptions: ClientOptions = { headers: { authorization: `Bearer ${r.token}` }, perMessageDeflate: false, maxPayload: MAX_FRAME, skipUTF8Validation: true };
        if (this.#zeroMask) wsOptions.generateMask = zeroMask;
        return (this.#token = { value: r.token, exp: Date.parse(r.expires_at), wsOptions });
      })
      .finally(() => { this.#tokenPending = undefined; });
    return this.#tokenPending;
  }

  #accept(socket: net.Socket): void {
    if (!this.#checkPeer) return this.#admit(socket);
    socket.on('error', () => {});
    checkLocalPeer(socket).then((r) => {
      if (r.ok) return this.#admit(socket);
      this.#refuseLocal(socket, r.why);
    }, (err: Error) => this.#refuseLocal(socket, `cannot check the local user: ${err.message}`));
  }

  /**
   * Another local user's connection: closed before anything reaches the gateway; a PostgreSQL
   * client reads why (SQLSTATE 28000), and `connect` prints it ('local-refused').
   */
  #refuseLocal(socket: net.Socket, why: string): void {
    this.stats.refused++;
    this.emit('local-refused', why);
    const said = this.#type === 'postgres' ? refusePostgres(socket, '28000', `hoopctl: ${why}`) : Promise.resolve();
    void said.then(() => socket.destroy());
  }

  #admit(socket: net.Socket): void {
    this.#sockets.add(socket);
    this.stats.open++;
    this.stats.total++;
    this.emit('change');
    socket.on('error', () => {});
    socket.once('close', () => {
      this.#sockets.delete(socket);
      this.stats.open--;
      this.emit('change');
    });
    // a valid cached token opens at once; only a (re)fetch goes through a promise
    const t = this.#token;
    if (t && t.exp - Date.now() > 2 * TOKEN_SLACK_MS) return this.#open(socket, t.wsOptions);
    this.#currentToken().then((tok) => this.#open(socket, tok.wsOptions), (err: Error) => {
      this.stats.refused++;
      this.emit('refused', err);
      if ((err as { exit?: number }).exit === 4) this.emit('lease-ended', { reason: err.message, code: CloseCode.leaseExpired } satisfies LeaseEnded);
      socket.destroy();
    });
  }

  #open(socket: net.Socket, wsOptions: ClientOptions): void {
    if (socket.destroyed) return;
    if (this.#useMux) return this.#openMux(socket, wsOptions);
    const ws = new WebSocket(this.#wsUrl, wsOptions);
    this.#watch(ws, () => [socket]);
    ws.once('open', () => {
      (ws as unknown as { _socket: net.Socket })._socket.setNoDelay(true);
      this.#bridge(socket, ws);
    });
  }

  /** the connection becomes a stream of the shared multiplexed WebSocket, opened on first use */
  #openMux(socket: net.Socket, wsOptions: ClientOptions): void {
    const m = this.#mux;
    if (m?.channel) return this.#bridge(socket, m.channel.open() as unknown as WebSocket);
    if (m) return void m.waiting.push(socket);
    const ws = new WebSocket(this.#wsUrl, [MUX_PROTOCOL], wsOptions);
    const mux: SharedSocket = { ws, waiting: [socket] };
    this.#mux = mux;
    const drop = () => { if (this.#mux === mux) this.#mux = undefined; };
    ws.once('unexpected-response', drop); // refused: #watch reports it
    this.#watch(ws, () => mux.waiting.splice(0), (err) => {
      drop();
      // a gateway that does not multiplex: one WebSocket per connection from now on
      if (!/subprotocol/i.test(err.message)) return false;
      this.#useMux = false;
      for (const s of mux.waiting.splice(0)) this.#open(s, wsOptions);
      return true;
    });
    ws.once('open', () => {
      (ws as unknown as { _socket: net.Socket })._socket.setNoDelay(true);
      const ch = (mux.channel = new MuxChannel(ws, { writer: this.#zeroMask ? 'zero-mask' : 'ws' }));
      for (const s of mux.waiting.splice(0)) if (!s.destroyed) this.#bridge(s, ch.open() as unknown as WebSocket);
    });
    ws.once('close', (code: number, reason: Buffer) => {
      drop();
      if (code === CloseCode.leaseExpired || code === CloseCode.leaseRevoked)
        this.emit('lease-ended', { reason: reason.toString() || 'lease ended', code } satisfies LeaseEnded);
    });
  }

  /**
   * Reports a refused or failed WebSocket handshake and drops the connections that waited for it;
   * `retry` may take over a failure instead (returns true).
   */
  #watch(ws: WebSocket, waiting: () => net.Socket[], retry?: (err: Error) => boolean): void {
    this.#websockets.add(ws);
    ws.once('close', () => this.#websockets.delete(ws));
    ws.once('unexpected-response', (_req, res) => {
      readRefusal(res, (body, message) => {
        const err = Object.assign(new Error(message), { status: res.statusCode, code: body.error });
        this.#websockets.delete(ws);
        this.stats.refused++;
        this.emit('refused', err);
        if (res.statusCode === 403 && /^lease_/.test(body.error ?? '')) this.emit('lease-ended', { reason: err.message, code: CloseCode.leaseExpired } satisfies LeaseEnded);
        if (res.statusCode === 401) this.#token = undefined;
        for (const s of waiting()) s.destroy();
      });
    });
    let opened = false;
    ws.once('open', () => { opened = true; });
    ws.once('error', (err) => {
      if (opened) return; // a failure after the handshake closes the streams, which say why
      if (retry?.(err)) return;
      this.emit('refused', err);
      for (const s of waiting()) s.destroy();
    });
  }

  /** relays one local connection through a tunnel stream (a WebSocket, or a stream of the shared one) */
  #bridge(socket: net.Socket, ws: WebSocket): void {
    const stream = wsDuplex(ws);
    stream.bridge(socket, this.#counters).then(() => stream.destroy(), (err: Error) => {
      if (err instanceof TunnelClosed && (err.code === CloseCode.leaseExpired || err.code === CloseCode.leaseRevoked))
        this.emit('lease-ended', { reason: err.reason, code: err.code } satisfies LeaseEnded);
      else if (err instanceof TunnelClosed) this.emit('closed-with-error', err);
      // a local client's reset (or any socket error) closes the tunnel normally
      stream.destroy();
    });
  }

  /**
   * One tunnel stream for a client that lives in this process (`hoopctl exec` and `hoopctl mcp`
   * speak PostgreSQL themselves): no local listener and no loopback hop. Streams share the
   * multiplexed WebSocket like listener connections do. Rejects with a HoopError (exit 3 / 4 / 7)
   * when the gateway refuses the tunnel or cannot be reached.
   */
  async stream(): Promise<WsDuplex> {
    const tok = await this.#currentToken();
    if (this.#useMux) {
      const ch = await this.#sharedChannel(tok.wsOptions);
      if (ch) return wsDuplex(ch.open() as unknown as WebSocket);
    }
    const ws = new WebSocket(this.#wsUrl, tok.wsOptions);
    this.#websockets.add(ws);
    ws.once('close', () => this.#websockets.delete(ws));
    await handshake(ws);
    return wsDuplex(ws);
  }

  #channelPending: Promise<MuxChannel | undefined> | undefined;
  /** the shared multiplexed WebSocket for stream(); undefined when the gateway does not multiplex */
  #sharedChannel(wsOptions: ClientOptions): Promise<MuxChannel | undefined> {
    if (this.#mux?.channel) return Promise.resolve(this.#mux.channel);
    this.#channelPending ??= (async () => {
      const ws = new WebSocket(this.#wsUrl, [MUX_PROTOCOL], wsOptions);
      this.#websockets.add(ws);
      ws.once('close', () => this.#websockets.delete(ws));
      try {
        await handshake(ws);
      } catch (err) {
        if (/subprotocol/i.test((err as Error).message)) {
          this.#useMux = false;
          return undefined;
        }
        throw err;
      }
      (ws as unknown as { _socket: net.Socket })._socket.setNoDelay(true);
      const channel = new MuxChannel(ws, { writer: this.#zeroMask ? 'zero-mask' : 'ws' });
      const mux: SharedSocket = { ws, channel, waiting: [] };
      this.#mux = mux;
      ws.once('close', (code: number, reason: Buffer) => {
        if (this.#mux === mux) this.#mux = undefined;
        if (code === CloseCode.leaseExpired || code === CloseCode.leaseRevoked)
          this.emit('lease-ended', { reason: reason.toString() || 'lease ended', code } satisfies LeaseEnded);
      });
      return channel;
    })().finally(() => { this.#channelPending = undefined; });
    return this.#channelPending;
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    // no close handshake on the way out: a busy peer must not hold the CLI for ws's 30 s timeout
    for (const ws of this.#websockets) ws.terminate();
    return new Promise((resolve) => this.#server.close(() => {
      if (this.#socketPath) rmSync(this.#socketPath, { force: true });
      resolve();
    }));
  }
}

/** Reads the gateway's JSON answer to a refused upgrade (`{error, message}`; anything else as the status) and hands it on. */
function readRefusal(res: import('node:http').IncomingMessage, then: (body: { error?: string; message?: string }, message: string) => void): void {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => {
    let body: { error?: string; message?: string } = {};
    try { body = JSON.parse(Buffer.concat(chunks).toString()); } catch { /* not JSON */ }
    then(body, body.message ?? `gateway refused the tunnel: HTTP ${res.statusCode}`);
  });
}

/** Resolves when the WebSocket is open; a refused or failed handshake becomes a HoopError. */
function handshake(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => {
      readRefusal(res, (body, message) => {
        ws.terminate();
        if (res.statusCode === 401) reject(new AuthError(body.error ?? 'unauthorized', message));
        else if (res.statusCode === 403 || res.statusCode === 404) reject(new AccessDenied(message, { code: body.error }));
        else reject(new HoopError(body.error ?? `http_${res.statusCode}`, message, { status: res.statusCode, expose: true, exit: 7 }));
      });
    });
    ws.once('error', (err: Error & { code?: string }) => {
      if (/subprotocol/i.test(err.message)) return reject(err);
      reject(new Unreachable(`gateway unreachable: ${err.code ?? err.message}`, { cause: err, hint: 'is the gateway running? check --gateway / HOOP_GATEWAY' }));
    });
  });
}
