/**
 * Many TCP connections over one WebSocket: the tunnel's default between a `hoopctl connect` and the
 * gateway (negotiated as the WebSocket subprotocol MUX_PROTOCOL; a gateway or CLI without it falls
 * back to one WebSocket per connection).
 *
 * Why: with one WebSocket per TCP connection every query and every answer costs one write and one
 * read system call on each of the two hops, whatever the process does in user space; at pgbench
 * -c 16 those calls were most of the proxy's CPU (bench/RESULTS.md: a hand-framed relay with one
 * upstream connection per client connection still cost 50 µs/tx, a multiplexed one 35 µs/tx). Here
 * every frame produced during one turn of the event loop (all the sockets that were readable in
 * that turn) leaves in one WebSocket message, i.e. one system call, and one read on the far side
 * brings them all.
 *
 * Wire format, inside binary WebSocket messages (a message holds one or more whole frames):
 *   type u8 | stream id u32 | length u32 | payload
 *   OPEN   client → gateway: a new TCP connection (ids increase, never reused)
 *   DATA   bytes of the stream
 *   EOF    the sender ended its direction (TCP FIN)
 *   CLOSE  u16 code | UTF-8 reason: the stream is gone (codes as the WebSocket close codes of
 *          ws-duplex.ts: 1000 normal, 4001 lease expired, ...); no reply, the id is dead
 *   WINDOW u32: the receiver delivered this many more bytes of the stream
 * Flow control is per stream: a sender counts bytes not yet credited by WINDOW and its writer waits
 * (the fake socket's 'drain') above a high-water mark, so one slow reader holds back only its own
 * stream; a paused receiver queues what is in flight and credits nothing until it resumes, and a
 * peer that ignores its window is cut off at MAX_QUEUED.
 *
 * A MuxStream looks like the subset of a ws WebSocket that wsDuplex() uses (readyState, send,
 * close, terminate, pause, resume, 'message'/'close' events, _socket.writableLength and 'drain'),
 * so sessions, engines and bridges run unchanged on either kind of tunnel. Hand-written because no
 * maintained npm package multiplexes streams over a `ws` WebSocket with per-stream backpressure and
 * half-close (yamux/mplex implementations are tied to libp2p's stream abstractions).
 */
import { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';

export const MUX_PROTOCOL = 'hoop-mux.1';

const OPEN = 1;
const DATA = 2;
const EOF = 3;
const CLOSE = 4;
const WINDOW = 5;
const HDR = 9;

/** the receiver returns credit once this much has been delivered */
const CREDIT_STEP = 64 * 1024;
/** a sender's 'drain' fires when its uncredited bytes fall below this */
const DRAIN_BELOW = 128 * 1024;
/** what a paused stream may hold before the peer is deemed to ignore flow control */
const MAX_QUEUED = 8 * 1024 * 1024;
/** frames queued beyond this are sent at once rather than at the end of the loop turn */
const FLUSH_AT = 1024 * 1024;
const BINARY = { binary: true, compress: false } as const;
const EOF_TEXT = Buffer.from('eof');
const PROTOCOL_ERROR = 4007;

type Queued = Buffer | 'eof' | { code: number; reason: string };

/** what wsDuplex reads from `ws._socket`: the backlog and its 'drain' */
class CreditGauge extends EventEmitter {
  writableLength = 0;
  cork(): void {}
  uncork(): void {}
  setNoDelay(): void {}
}

export class MuxStream extends EventEmitter {
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readyState = 1;
  readonly id: number;
  readonly _socket = new CreditGauge();
  readonly #ch: MuxChannel;
  #paused = false;
  #queue: Queued[] = [];
  #queued = 0;
  #uncredited = 0;

  constructor(ch: MuxChannel, id: number) {
    super();
    this.#ch = ch;
    this.id = id;
  }

  send(data: Buffer | string, _opts?: unknown): void {
    if (this.readyState !== 1) return;
    if (typeof data === 'string') {
      this.#ch.frame(EOF, this.id);
      return;
    }
    this._socket.writableLength += data.length;
    this.#ch.frame(DATA, this.id, data);
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState !== 1) return;
    this.#ch.frame(CLOSE, this.id, closePayload(code, reason));
    this.#gone(code, reason);
  }

  terminate(): void {
    this.close(1006, '');
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    while (!this.#paused && this.#queue.length) {
      const q = this.#queue.shift()!;
      if (Buffer.isBuffer(q)) {
        this.#queued -= q.length;
        this.#deliver(q);
      } else if (q === 'eof') this.emit('message', EOF_TEXT, false);
      else this.#gone(q.code, q.reason);
    }
  }

  // --- from the channel
  _data(b: Buffer): void {
    if (this.#paused || this.#queue.length) {
      this.#queue.push(b);
      if ((this.#queued += b.length) > MAX_QUEUED) this.#fail('the peer ignored flow control');
      return;
    }
    this.#deliver(b);
  }

  _eof(): void {
    if (this.#paused || this.#queue.length) this.#queue.push('eof');
    else this.emit('message', EOF_TEXT, false);
  }

  _closed(code: number, reason: string, now = false): void {
    if (!now && (this.#paused || this.#queue.length)) this.#queue.push({ code, reason });
    else this.#gone(code, reason);
  }

  _credit(n: number): void {
    const g = this._socket;
    const before = g.writableLength;
    g.writableLength = Math.max(0, before - n);
    if (before >= DRAIN_BELOW && g.writableLength < DRAIN_BELOW) g.emit('drain');
  }

  #deliver(b: Buffer): void {
    if ((this.#uncredited += b.length) >= CREDIT_STEP) {
      this.#ch.frame(WINDOW, this.id, u32(this.#uncredited));
      this.#uncredited = 0;
    }
    this.emit('message', b, true);
  }

  #fail(why: string): void {
    this.close(PROTOCOL_ERROR, why);
  }

  #gone(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.#queue = [];
    this.#ch.forget(this.id);
    // asynchronous, as ws's own 'close'
    process.nextTick(() => this.emit('close', code, Buffer.from(reason)));
  }
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function closePayload(code: number, reason: string): Buffer {
  const r = Buffer.from(reason);
  const b = Buffer.allocUnsafe(2 + r.length);
  b.writeUInt16BE(code & 0xffff, 0);
  r.copy(b, 2);
  return b;
}

export class MuxChannel {
  readonly ws: WebSocket;
  readonly #streams = new Map<number, MuxStream>();
  readonly #onOpen: ((s: MuxStream) => void) | undefined;
  #out: Buffer[] = [];
  #outLen = 0;
  #scheduled = false;
  #nextId = 1;
  #lastPeerId = 0;
  #closed = false;

  /** `onOpen` (the gateway's side) receives each stream the peer opens; without it, OPEN is refused */
  constructor(ws: WebSocket, onOpen?: (s: MuxStream) => void) {
    this.ws = ws;
    this.#onOpen = onOpen;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return this.#fail('text message on a multiplexed tunnel');
      this.#read(data);
    });
    ws.on('close', (code: number, reason: Buffer) => this.#shut(code, reason.length ? reason.toString() : 'tunnel closed'));
    ws.on('error', () => { /* 'close' follows */ });
  }

  get size(): number {
    return this.#streams.size;
  }

  /** a new stream (the CLI's side); it can be written at once */
  open(): MuxStream {
    const s = new MuxStream(this, this.#nextId++);
    if (this.#closed) {
      s._closed(1006, 'tunnel closed', true);
      return s;
    }
    this.#streams.set(s.id, s);
    this.frame(OPEN, s.id);
    return s;
  }

  /** queues one frame; everything queued in this turn of the event loop leaves as one message */
  frame(type: number, id: number, payload?: Buffer): void {
    if (this.#closed) return;
    const h = Buffer.allocUnsafe(HDR);
    h[0] = type;
    h.writeUInt32BE(id, 1);
    h.writeUInt32BE(payload ? payload.length : 0, 5);
    this.#out.push(h);
    this.#outLen += HDR;
    if (payload && payload.length) {
      this.#out.push(payload);
      this.#outLen += payload.length;
    }
    if (this.#outLen >= FLUSH_AT) this.#flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flushLater);
    }
  }

  forget(id: number): void {
    this.#streams.delete(id);
  }

  readonly #flushLater = (): void => {
    this.#scheduled = false;
    this.#flush();
  };

  #flush(): void {
    if (!this.#outLen) return;
    const msg = this.#out.length === 1 ? this.#out[0] : Buffer.concat(this.#out, this.#outLen);
    this.#out = [];
    this.#outLen = 0;
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(msg, BINARY);
  }

  #read(m: Buffer): void {
    let off = 0;
    while (off < m.length) {
      if (m.length - off < HDR) return this.#fail('truncated frame header');
      const type = m[off];
      const id = m.readUInt32BE(off + 1);
      const len = m.readUInt32BE(off + 5);
      off += HDR;
      if (len > m.length - off) return this.#fail('frame longer than its message');
      const p = m.subarray(off, off + len);
      off += len;
      switch (type) {
        case DATA:
          this.#streams.get(id)?._data(p); // an unknown id is a stream we closed: drop
          break;
        case WINDOW:
          if (len !== 4) return this.#fail('bad WINDOW frame');
          this.#streams.get(id)?._credit(p.readUInt32BE(0));
          break;
        case EOF:
          this.#streams.get(id)?._eof();
          break;
        case CLOSE:
          if (len < 2) return this.#fail('bad CLOSE frame');
          this.#streams.get(id)?._closed(p.readUInt16BE(0), p.subarray(2).toString());
          break;
        case OPEN: {
          if (!this.#onOpen || id <= this.#lastPeerId) return this.#fail('unexpected OPEN frame');
          this.#lastPeerId = id;
          const s = new MuxStream(this, id);
          this.#streams.set(id, s);
          this.#onOpen(s);
          break;
        }
        default:
          return this.#fail(`unknown frame type ${type}`);
      }
    }
  }

  #fail(why: string): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(PROTOCOL_ERROR, why);
    this.#shut(PROTOCOL_ERROR, why);
  }

  #shut(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#out = [];
    this.#outLen = 0;
    // a stream still open when its WebSocket went away was cut off, whatever the WebSocket's code
    if (code === 1000 || code === 1005) code = 1006;
    for (const s of [...this.#streams.values()]) s._closed(code, reason, true);
    this.#streams.clear();
  }
}
