/**
 * A Duplex over one WebSocket carrying one TCP connection's bytes, used on both ends of a tunnel.
 * ws's own createWebSocketStream() has no half-close (ending one direction closes the socket) and
 * waits for every send callback; TCP clients (psql's COPY, `ssh -N`, iperf3) need half-close, and
 * throughput needs writes that return at once while the socket's buffer is small. So:
 *
 * - binary frames carry data; a text frame "eof" ends one direction (TCP FIN);
 * - the WebSocket closes (1000) once both directions have ended;
 * - backpressure both ways: a full readable side pauses the WebSocket (ws.pause(): stops reading
 *   the socket), a full socket send buffer holds the writer until 'drain';
 * - an abnormal close (code ≠ 1000/1005) destroys the stream with a TunnelClosed error that carries
 *   the peer's code and reason, so each side can say why it stopped.
 */
import { Duplex } from 'node:stream';
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

export interface WsDuplex extends Duplex {
  /** set when the WebSocket closed: the peer's code and reason */
  closeInfo?: { code: number; reason: string };
  /** closes the tunnel with an application code and a reason the peer shows */
  closeWith(code: number, reason: string): void;
}

export function wsDuplex(ws: WebSocket): WsDuplex {
  let paused = false;
  let sentEof = false;
  let gotEof = false;
  const maybeClose = () => {
    if (sentEof && gotEof && ws.readyState === ws.OPEN) ws.close(CloseCode.normal);
  };
  const socket = () => (ws as unknown as { _socket?: { writableLength: number; once(e: string, f: () => void): void } })._socket;
  const afterSend = (cb: (err?: Error | null) => void) => {
    const s = socket();
    if (s && s.writableLength > SEND_HWM) s.once('drain', () => cb());
    else cb();
  };

  const d = new Duplex({
    allowHalfOpen: true,
    readableHighWaterMark: 1 << 20,
    writableHighWaterMark: 1 << 20,
    read() {
      if (paused) {
        paused = false;
        ws.resume();
      }
    },
    write(chunk: Buffer, _enc, cb) {
      if (ws.readyState !== ws.OPEN) return cb(new TunnelClosed(d.closeInfo?.code ?? 1006, d.closeInfo?.reason ?? 'tunnel closed'));
      ws.send(chunk, { binary: true, compress: false });
      afterSend(cb);
    },
    writev(chunks, cb) {
      if (ws.readyState !== ws.OPEN) return cb(new TunnelClosed(d.closeInfo?.code ?? 1006, d.closeInfo?.reason ?? 'tunnel closed'));
      // coalesce small writes into frames of at most MAX_COALESCE bytes (the peer's maxPayload is larger)
      let batch: Buffer[] = [];
      let size = 0;
      for (const { chunk } of chunks) {
        if (size + chunk.length > MAX_COALESCE && batch.length) {
          ws.send(batch.length === 1 ? batch[0] : Buffer.concat(batch, size), { binary: true, compress: false });
          batch = [];
          size = 0;
        }
        batch.push(chunk as Buffer);
        size += chunk.length;
      }
      ws.send(batch.length === 1 ? batch[0] : Buffer.concat(batch, size), { binary: true, compress: false });
      afterSend(cb);
    },
    final(cb) {
      if (ws.readyState === ws.OPEN) ws.send('eof');
      sentEof = true;
      maybeClose();
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

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) {
      if (!d.push(data) && !paused) {
        paused = true;
        ws.pause();
      }
    } else if (data.length === 3 && data.toString() === 'eof') {
      gotEof = true;
      d.push(null);
      maybeClose();
    } else {
      // fail closed on anything the tunnel protocol does not define
      d.closeWith(CloseCode.protocolError, 'unknown control frame on the tunnel');
    }
  });
  ws.on('close', (code: number, reasonBuf: Buffer) => {
    const reason = reasonBuf.toString();
    d.closeInfo = { code, reason };
    if (code === CloseCode.normal || code === 1005) {
      if (!gotEof) d.push(null);
      if (!d.writableFinished) d.destroy();
    } else d.destroy(new TunnelClosed(code, reason));
  });
  ws.on('error', (err) => d.destroy(err));
  return d;
}

/** WebSocket close reasons are limited to 123 bytes. */
export function truncateReason(reason: string): string {
  const b = Buffer.from(reason);
  return b.length <= 123 ? reason : b.subarray(0, 120).toString().replace(/\uFFFD$/, '') + '...';
}
