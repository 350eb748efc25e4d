/**
 * A Duplex over one WebSocket carrying one TCP connection's bytes, used on both ends of a tunnel.
 * ws's own createWebSocketStream() has no half-close (ending one direction closes the socket) and
 * waits for every send callback; TCP clients (psql's COPY, `ssh -N`, iperf3) need half-close, and
 * throughput needs writes that return at once while the socket's buffer is small. So:
 *
 * - binary frames carry data; a text frame "eof" ends one direction (TCP FIN);
 * - the WebSocket closes (1000) once both directions have ended; a normal close also ends the
 *   direction that had not sent "eof" yet (so the side that ends last sends only the close);
 * - backpressure both ways: a full readable side pauses the WebSocket (ws.pause(): stops reading
 *   the socket), a full socket send buffer holds the writer until 'drain';
 * - an abnormal close (code ≠ 1000/1005) destroys the stream with a TunnelClosed error that carries
 *   the peer's code and reason, so each side can say why it stopped.
 *
 * Raw TCP relaying (the CLI's local end, the gateway's `tcp` engine) skips the stream machinery:
 * `bridge(socket)` writes each WebSocket message straight to the socket and sends each socket
 * read as one frame, pausing the faster side on backpressure, as a bare ws relay does (Duplex +
 * pipe on both sides cost per-chunk stream bookkeeping; see also countRelayed below for the GC
 * side of streaming). The protocol on the wire is the same either way.
 */
import { Duplex, type Writable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

/** WebSocket close codes of the tunnel protocol (4000–4999 is the application range). */
export const CloseCode = {
  normal: 1000,
  leaseExpired: 4001,
  leaseRevoked: 4002,
  targetUnreachable: 4003,
  targetClosed: 4004,
  engineError: 4005,
  gatewayShutdown: 4006,
  protocolError: 4007,
  /** a connection refused for a limit (streams per tunnel, lease.max_connections, per user) */
  overLimit: 4008,
} as const;

export class TunnelClosed extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string) {
    super(reason || `tunnel closed (code ${code})`);
    this.code = code;
    this.reason = reason;
  }
}

const SEND_HWM = 1 << 20; // bytes queued in the socket before a writer waits for 'drain'
const MAX_COALESCE = 1 << 20;
/**
 * bridge(): bytes queued in the WebSocket's TCP socket before the source socket is paused; a
 * quarter of the bare relay's 1 MiB (less held per stalled connection), and loopback streaming
 * still runs at the relay's speed (bench/RESULTS.md).
 */
const BRIDGE_HWM = 256 * 1024;
/** one options object for every data frame (ws copies it; no per-send literal) */
const BINARY = { binary: true, compress: false } as const;

/**
 * A young-generation GC after every YOUNG_GC_BYTES relayed by the bridges of this process
 * (HOOP_TUNNEL_GC_MB, default 2; 0 turns it off). Why: each relayed chunk lives in its own
 * ArrayBuffer (socket reads, ws's frame assembly and masking), so streaming allocates ~2 bytes
 * of ArrayBuffer per byte relayed but very little JS heap. V8 collects young objects only when
 * the JS young generation fills, which at that ratio is rare, so dead chunks pile up as external
 * memory until V8's external-memory pressure starts full mark-compacts — over the whole heap
 * (~18 MB in the gateway, ~10 MB in the CLI), ~10 per second at 4 Gbit/s. A scavenge frees the
 * dead chunks for ~0.3 ms. Measured with bench/run.sh iperf (CPU per GB relayed, gateway + CLI,
 * against the bare ws relay in the same run): 1.3–2.3× the relay without, 0.9–1.3× with. Over the
 * multiplexed tunnel, iperf through hoop-tcp (two runs each, four alternating rounds): 2 MB gave
 * 7.9–8.4 Gbit/s each way, 4 MB 5.7–7.9, 1 MB 6.9–7.6, 16 MB 4.4–5.9, off 4.5–5.2.
 */
const YOUNG_GC_BYTES = Number(process.env.HOOP_TUNNEL_GC_MB ?? 2) * 1024 * 1024;
let relayed = 0;
let youngGc: ((opts: { type: 'minor' }) => void) | undefined;
function countRelayed(n: number): void {
  if ((relayed += n) < YOUNG_GC_BYTES || !(YOUNG_GC_BYTES > 0)) return;
  relayed = 0;
  if (!youngGc) {
    // --expose-gc set at run time reaches new contexts only; the function works on the whole heap
    v8.setFlagsFromString('--expose-gc');
    youngGc = vm.runInNewContext('gc') as typeof youngGc;
  }
  youngGc!({ type: 'minor' });
}

/**
 * After a clean close handshake ws ends its frame receiver and its socket a second time (on the
 * socket's 'end' and 'close'); Node's Writable.end() on a finished stream builds an
 * ERR_STREAM_ALREADY_FINISHED error, stack trace and all, only for nobody to see it. That was
 * 2–3 errors per connection on each side, ~4 % of the CPU of a connection (CPU profiles of
 * bench/run.sh connsetup). An argument-less end() of a finished or destroyed stream does nothing
 * else, so it returns at once here.
 */
function quietEnd(this: Writable, ...args: unknown[]): Writable {
  if (args.length === 0 && (this.writableFinished || this.destroyed)) return this;
  return Reflect.apply((Object.getPrototypeOf(this) as Writable).end, this, args) as Writable;
}
function quietEnds(ws: WebSocket): void {
  const internals = ws as unknown as { _socket?: Writable; _receiver?: Writable };
  if (internals._socket && internals._receiver && typeof internals._receiver.end === 'function') {
    internals._socket.end = quietEnd;
    internals._receiver.end = quietEnd;
  }
}

/** byte counters a bridge reports to, as it relays */
export interface BridgeCounters {
  /** bytes that came out of the tunnel and were written to the socket */
  fromTunnel?(n: number): void;
  /** bytes read from the socket and sent into the tunnel */
  fromSocket?(n: number): void;
}

/** What a message-level user of the tunnel (a protocol engine) is told; see WsDuplex.link(). */
export interface LinkHandlers {
  /** one binary message from the peer */
  data(b: Buffer): void;
  /** the peer ended its direction ("eof") */
  end(): void;
  /** the tunnel is gone (closed or failed); nothing more arrives */
  close(): void;
  /** a write that returned false has been taken by the socket: write again */
  drain(): void;
}

/**
 * The tunnel as a sequence of messages: the subset of a Duplex a protocol engine uses, without
 * the stream machinery in between (no Readable buffer, no write callbacks and their nextTicks).
 * A plain Duplex can stand in for it (engines/engine.ts: clientLink()).
 */
export interface TunnelLink {
  /** starts delivering to the handlers (anything already buffered first) */
  start(): void;
  /** sends one binary message; false when the socket holds more than its high-water mark */
  write(b: Buffer): boolean;
  /** holds several writes for one system call (writev) until uncork() */
  cork(): void;
  uncork(): void;
  pause(): void;
  resume(): void;
  /** ends our direction ("eof") */
  end(): void;
  destroy(): void;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
}

export interface WsDuplex extends Duplex {
  /** set when the WebSocket closed: the peer's code and reason */
  closeInfo?: { code: number; reason: string };
  /** closes the tunnel with an application code and a reason the peer shows */
  closeWith(code: number, reason: string): void;
  /**
   * Relays between the tunnel and a TCP socket directly, instead of reading/writing this stream
   * (anything already buffered in it is written to the socket first). Half-close both ways: the
   * socket's FIN sends "eof", the peer's "eof" ends the socket. Settles when the socket closes:
   * rejects with TunnelClosed if the tunnel closed abnormally (the socket is then destroyed), or
   * with the socket's own error; resolves otherwise. A normal tunnel close ends the socket once
   * its queued writes are flushed. Call once, with nothing else reading or writing the stream.
   */
  bridge(socket: Socket, count?: BridgeCounters): Promise<void>;
  /**
   * Hands the tunnel to a message-level user: once `start()` is called on the link, each binary
   * message goes to `h.data` (anything already buffered in the stream first), "eof" to `h.end`,
   * the close to `h.close`. Call once, with nothing else reading or writing the stream; the stream itself
   * still closes and reports 'close' as before (the session watches that).
   */
  link(h: LinkHandlers): TunnelLink;
}

export function wsDuplex(ws: WebSocket): WsDuplex {
  quietEnds(ws);
  let paused = false;
  let sentEof = false;
  let gotEof = false;
  // bridge mode: the socket we relay to, and who is paused for whose backpressure
  let sock: Socket | undefined;
  // link mode: the message-level user
  let linked: LinkHandlers | undefined;
  let linkWaitsDrain = false;
  let counters: BridgeCounters = {};
  let wsHeld = false;
  let sockHeld = false;
  const maybeClose = () => {
    if (sentEof && gotEof && ws.readyState === ws.OPEN) ws.close(CloseCode.normal);
  };
  // When the peer has already sent its "eof", the normal close says the same and ends the tunnel:
  // one frame (and one write syscall) less per connection on the side that finishes last.
  const sendEof = () => {
    sentEof = true;
    if (ws.readyState !== ws.OPEN) return;
    if (gotEof) ws.close(CloseCode.normal);
    else ws.send('eof');
  };
  const socket = () => (ws as unknown as { _socket?: Socket & { tunnelWindow?: number } })._socket;
  const afterSend = (cb: (err?: Error | null) => void) => {
    const s = socket();
    if (s && s.writableLength > (s.tunnelWindow ?? SEND_HWM)) s.once('drain', () => cb());
    else cb();
  };
  const closedError = () => new TunnelClosed(d.closeInfo?.code ?? 1006, d.closeInfo?.reason ?? 'tunnel closed');

  const d = new Duplex({
    allowHalfOpen: true,
    readableHighWaterMark: 1 << 20,
    writableHighWaterMark: 1 << 20,
    read() {
      if (paused && !sock) {
        paused = false;
        ws.resume();
      }
    },
    write(chunk: Buffer, _enc, cb) {
      if (ws.readyState !== ws.OPEN) return cb(closedError());
      ws.send(chunk, BINARY);
      afterSend(cb);
    },
    writev(chunks, cb) {
      if (ws.readyState !== ws.OPEN) return cb(closedError());
      // coalesce small writes into frames of at most MAX_COALESCE bytes (the peer's maxPayload is larger)
      let batch: Buffer[] = [];
      let size = 0;
      for (const { chunk } of chunks) {
        if (size + chunk.length > MAX_COALESCE && batch.length) {
          ws.send(batch.length === 1 ? batch[0] : Buffer.concat(batch, size), BINARY);
          batch = [];
          size = 0;
        }
        batch.push(chunk as Buffer);
        size += chunk.length;
      }
      ws.send(batch.length === 1 ? batch[0] : Buffer.concat(batch, size), BINARY);
      afterSend(cb);
    },
    final(cb) {
      sendEof();
      cb();
    },
    destroy(err, cb) {
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) {
        if (err && !(err instanceof TunnelClosed)) ws.close(CloseCode.engineError, truncateReason(err.message));
        else if (!d.closeInfo) ws.close(CloseCode.normal);
      }
      cb(err);
    },
  }) as WsDuplex;

  d.closeWith = (code, reason) => {
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, truncateReason(reason));
    d.destroy();
  };

  // --- bridge mode: plain functions, no closures per chunk
  const releaseWs = () => {
    wsHeld = false;
    ws.resume();
  };
  const releaseSock = () => {
    sockHeld = false;
    sock?.resume();
  };
  const onSockData = (b: Buffer) => {
    counters.fromSocket?.(b.length);
    countRelayed(b.length);
    // once the tunnel is closing, the close handler ends or destroys the socket; drop the rest
    if (ws.readyState !== ws.OPEN) return;
    ws.send(b, BINARY);
    const raw = socket();
    if (raw && raw.writableLength > (raw.tunnelWindow ?? BRIDGE_HWM) && !sockHeld) {
      sockHeld = true;
      sock!.pause();
      raw.once('drain', releaseSock);
    }
  };
  const onSockEnd = () => {
    if (!sentEof) sendEof();
  };
  // the peer's "eof": end the socket, and stop holding the WebSocket for the socket's 'drain',
  // which an ending socket never emits (the close frame behind the eof must still be read)
  const endSocket = () => {
    sock!.end();
    if (wsHeld) {
      wsHeld = false;
      sock!.off('drain', releaseWs);
      ws.resume();
    }
  };
  const toSocket = (data: Buffer) => {
    counters.fromTunnel?.(data.length);
    countRelayed(data.length);
    if (!sock!.write(data) && !wsHeld) {
      wsHeld = true;
      ws.pause();
      sock!.once('drain', releaseWs);
    }
  };

  d.bridge = (s, count) => {
    sock = s;
    if (count) counters = count;
    s.allowHalfOpen = true; // the tunnel's "eof" ends our writes; the socket's FIN must not end them
    return new Promise<void>((resolve, reject) => {
      if (s.destroyed) return resolve(); // the caller closes the tunnel
      let sockErr: Error | undefined;
      d.on('error', () => { /* reported through the promise */ });
      s.on('error', (err) => { sockErr ??= err; });
      s.once('close', () => {
        if (d.closeInfo && d.closeInfo.code !== CloseCode.normal && d.closeInfo.code !== 1005) reject(closedError());
        else if (sockErr) reject(sockErr);
        else resolve();
      });
      // what arrived before the bridge was built (e.g. while the gateway dialled the target)
      for (let c: Buffer | null; (c = d.read() as Buffer | null) !== null; ) toSocket(c);
      if (d.closeInfo) return closeSocket(d.closeInfo.code);
      if (gotEof) endSocket();
      if (paused) {
        paused = false;
        if (!wsHeld) ws.resume();
      }
      s.on('data', onSockData);
      s.on('end', onSockEnd);
      if (s.isPaused()) s.resume();
    });
  };
  // the tunnel is gone: flush and end the socket after a normal close, reset it otherwise
  const closeSocket = (code: number) => {
    const s = sock!;
    if (s.destroyed) return;
    if (code !== CloseCode.normal && code !== 1005) return void s.destroy();
    if (!s.writableEnded) s.end();
    if (s.writableFinished) s.destroy();
    else s.once('finish', () => s.destroy());
  };

  const linkDrained = () => {
    linkWaitsDrain = false;
    linked?.drain();
  };
  let handlers: LinkHandlers | undefined;
  const link: TunnelLink = {
    start() {
      const h = handlers!;
      // what arrived before the user was ready (e.g. while the session was set up)
      for (let c: Buffer | null; (c = d.read() as Buffer | null) !== null; ) h.data(c);
      linked = h;
      if (gotEof) h.end();
      if (d.closeInfo || d.destroyed) h.close();
      else if (paused) {
        paused = false;
        ws.resume();
      }
    },
    write(b) {
      if (ws.readyState !== ws.OPEN) return true; // closing: the close handler tells the user
      ws.send(b, BINARY);
      const raw = socket();
      if (!raw || raw.writableLength <= (raw.tunnelWindow ?? SEND_HWM)) return true;
      if (!linkWaitsDrain) {
        linkWaitsDrain = true;
        raw.once('drain', linkDrained);
      }
      return false;
    },
    cork() { socket()?.cork(); },
    uncork() { socket()?.uncork(); },
    pause() { ws.pause(); },
    resume() { if (ws.readyState === ws.OPEN) ws.resume(); },
    end() { if (!sentEof) sendEof(); },
    destroy() { d.destroy(); },
    get destroyed() { return d.destroyed || ws.readyState > ws.OPEN; },
    get writableEnded() { return sentEof; },
  };
  d.link = (h) => {
    handlers = h;
    return link;
  };

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) {
      if (linked) linked.data(data);
      else if (sock) toSocket(data);
      else if (!d.push(data) && !paused) {
        paused = true;
        ws.pause();
      }
    } else if (data.length === 3 && data[0] === 0x65 && data[1] === 0x6f && data[2] === 0x66) { // "eof"
      gotEof = true;
      if (linked) linked.end();
      else if (sock) endSocket();
      else d.push(null);
      maybeClose();
    } else {
      // fail closed on anything the tunnel protocol does not define
      d.closeWith(CloseCode.protocolError, 'unknown control frame on the tunnel');
    }
  });
  ws.on('close', (code: number, reasonBuf: Buffer) => {
    d.closeInfo = { code, reason: reasonBuf.length ? reasonBuf.toString() : '' };
    if (sock) closeSocket(code);
    linked?.close();
    if (code === CloseCode.normal || code === 1005) {
      if (!gotEof && !sock) d.push(null);
      if (!d.writableFinished) d.destroy();
    } else d.destroy(closedError());
  });
  ws.on('error', (err) => {
    d.destroy(err);
    linked?.close();
  });
  return d;
}

/** WebSocket close reasons are limited to 123 bytes. */
export function truncateReason(reason: string): string {
  const b = Buffer.from(reason);
  return b.length <= 123 ? reason : b.subarray(0, 120).toString().replace(/\uFFFD$/, '') + '...';
}
