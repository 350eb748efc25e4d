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
 * peer that ignores its window is cut off at MAX_QUEUED. Credit is checked too: a WINDOW taking a
 * stream's credit beyond what the receiver may offer (MAX_CREDIT_AHEAD) closes the WebSocket, and
 * at most `maxStreams` streams are open at once (an OPEN beyond is answered with CLOSE 4008).
 *
 * A MuxStream looks like the subset of a ws WebSocket that wsDuplex() uses (readyState, send,
 * close, terminate, pause, resume, 'message'/'close' events, _socket.writableLength and 'drain'),
 * so sessions, engines and bridges run unchanged on either kind of tunnel. Hand-written because no
 * maintained npm package multiplexes streams over a `ws` WebSocket with per-stream backpressure and
 * half-close (yamux/mplex implementations are tied to libp2p's stream abstractions).
 */
import { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import { CloseCode } from './ws-duplex.ts';

export const MUX_PROTOCOL = 'hoop-mux.1';

const OPEN = 1;
const DATA = 2;
const EOF = 3;
const CLOSE = 4;
const WINDOW_FRAME = 5;
const HDR = 9;

/**
 * Flow control. A stream's writer waits while more than WINDOW bytes are uncredited (wsDuplex reads
 * it as the fake socket's `tunnelWindow`). The receiver credits what it delivered every
 * CREDIT_STEP bytes, and a stream that fills its steps fast (a bulk transfer) is granted extra
 * window beyond what it delivered, up to MAX_EXTRA, out of a budget of CHANNEL_EXTRA per
 * WebSocket returned when the stream closes. Why: a fixed 256 KB window held bulk transfers to a
 * third of their speed (credits need a turn of both event loops), while a fixed 8 MB one lets
 * every stalled connection park 8 MB in the gateway; this way what stalled connections can hold is
 * bounded by connections × WINDOW + CHANNEL_EXTRA.
 */
const WINDOW = Number(process.env.HOOP_MUX_WINDOW_KB ?? 256) * 1024;
const CREDIT_STEP = WINDOW / 4;
/** a sender's 'drain' fires when its uncredited bytes fall below this */
const DRAIN_BELOW = WINDOW / 2;
const MAX_EXTRA = 8 * 1024 * 1024;
const CHANNEL_EXTRA = 32 * 1024 * 1024;
/** a stream whose credit steps come this close together (ms) is streaming: its window grows */
const FAST_STEP_MS = 1;
/** what a paused stream may hold before the peer is deemed to ignore flow control */
const MAX_QUEUED = WINDOW + MAX_EXTRA + 4 * 1024 * 1024;
/**
 * The most credit a receiver may have granted ahead of what it was sent: the extra window it
 * grows a fast stream by (MAX_EXTRA). A WINDOW that takes a stream's credit past this is a peer
 * granting itself window it was never offered (0xFFFFFFFF, then it stops reading: the sender
 * would queue without bound), so it is a protocol error that closes the whole WebSocket.
 */
export const MAX_CREDIT_AHEAD = MAX_EXTRA;
/**
 * Streams open at once on one WebSocket (the gateway's side; HOOP_MUX_MAX_STREAMS). An OPEN
 * beyond it is answered with a CLOSE naming the limit; the WebSocket and its other streams go on.
 * The gateway's per-lease and per-user limits (lease.max_connections) are usually lower.
 */
export const MAX_STREAMS = Number(process.env.HOOP_MUX_MAX_STREAMS ?? 256);
/** frames queued beyond this are sent at once rather than at the end of the loop turn */
const FLUSH_AT = 1024 * 1024;
const BINARY = { binary: true, compress: false } as const;
const EOF_TEXT = Buffer.from('eof');

type Queued = Buffer | 'eof' | { code: number; reason: string };

/** what wsDuplex reads from `ws._socket`: the backlog and its 'drain' */
class CreditGauge extends EventEmitter {
  /** bytes sent and not yet credited; below zero when the receiver granted window ahead */
  writableLength = 0;
  readonly tunnelWindow = WINDOW;
  cork(): void {}
  uncork(): void {}
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
  /** delivered, not yet credited */
  #owed = 0;
  /** window granted beyond what was delivered (taken from the channel's budget) */
  #extra = 0;
  #lastStep = 0;

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

  /** false: the credit exceeds what the receiver could have offered (the channel fails) */
  _credit(n: number): boolean {
    const g = this._socket;
    const before = g.writableLength;
    g.writableLength = before - n; // below zero: window granted ahead
    if (g.writableLength < -MAX_CREDIT_AHEAD) return false;
    if (before >= DRAIN_BELOW && g.writableLength < DRAIN_BELOW) g.emit('drain');
    return true;
  }

  #deliver(b: Buffer): void {
    if ((this.#owed += b.length) >= CREDIT_STEP) this.#credit();
    this.emit('message', b, true);
  }

  #credit(): void {
    let give = this.#owed;
    this.#owed = 0;
    const now = Date.now();
    if (now - this.#lastStep <= FAST_STEP_MS && this.#extra < MAX_EXTRA) {
      const grow = this.#ch.takeBudget(Math.min(2 * CREDIT_STEP, MAX_EXTRA - this.#extra));
      this.#extra += grow;
      give += grow;
    }
    this.#lastStep = now;
    this.#ch.frame(WINDOW_FRAME, this.id, u32(give));
  }

  #fail(why: string): void {
    this.close(CloseCode.protocolError, why);
  }

  #gone(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.#queue = [];
    this.#ch.forget(this.id, this.#extra);
    this.#extra = 0;
    // asynchronous, as ws's own 'close'
    process.nextTick(() => this.emit('close', code, Buffer.from(reason)));
  }
}

/**
 * A binary WebSocket frame header (RFC 6455 5.2) for a `len`-byte message, with room for `extra`
 * bytes behind it: FIN + opcode 2, the length, and for a client an all-zero masking key (a key of
 * zeros leaves the payload as it is).
 */
function wsHeader(len: number, masked: boolean, extra: number): Buffer {
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const size = 2 + lenBytes + (masked ? 4 : 0);
  const b = Buffer.allocUnsafe(size + extra);
  b[0] = 0x82;
  const m = masked ? 0x80 : 0;
  if (lenBytes === 0) b[1] = m | len;
  else if (lenBytes === 2) {
    b[1] = m | 126;
    b.writeUInt16BE(len, 2);
  } else {
    b[1] = m | 127;
    b.writeUInt32BE(0, 2);
    b.writeUInt32BE(len, 6);
  }
  if (masked) b.writeUInt32BE(0, 2 + lenBytes);
  return b;
}

/** one WebSocket message holding small frames, copied behind its header */
function smallMessage(m: Buffer[], masked: boolean): Buffer {
  let len = 0;
  for (const b of m) len += b.length;
  const b = wsHeader(len, masked, len);
  let off = b.length - len;
  for (const piece of m) off += piece.copy(b, off);
  return b;
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

/**
 * How the channel puts messages on the wire: through ws's Sender (`ws`), or as WebSocket frames
 * written straight to the socket: `server` (unmasked) or `zero-mask` (a client whose peer accepts
 * the all-zero key, see src/client/tunnel.ts). The straight path lets a large DATA payload go out
 * as its own message without being copied behind its header (header and payload leave in one
 * writev); ws.send() takes one buffer per message, so prepending costs a copy of every payload.
 */
export type FrameWriter = 'ws' | 'server' | 'zero-mask';

/** DATA payloads from this size travel as a message of their own (no copy, see FrameWriter) */
const OWN_MESSAGE = 16 * 1024;

export class MuxChannel {
  readonly ws: WebSocket;
  readonly #streams = new Map<number, MuxStream>();
  readonly #onOpen: ((s: MuxStream) => void) | undefined;
  readonly #writer: FrameWriter;
  /** queued messages, each a list of frame pieces; the last one takes further small frames */
  #out: Buffer[][] = [[]];
  #outLen = 0;
  #scheduled = false;
  #nextId = 1;
  #lastPeerId = 0;
  #closed = false;
  #budget = CHANNEL_EXTRA;
  readonly #maxStreams: number;

  /**
   * `onOpen` (the gateway's side) receives each stream the peer opens; without it, OPEN is
   * refused. `maxStreams`: streams the peer may hold open at once (default MAX_STREAMS).
   */
  constructor(ws: WebSocket, opts: { onOpen?: (s: MuxStream) => void; writer?: FrameWriter; maxStreams?: number } = {}) {
    this.ws = ws;
    this.#onOpen = opts.onOpen;
    this.#maxStreams = opts.maxStreams ?? MAX_STREAMS;
    this.#writer = opts.writer ?? 'ws';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return this.#fail('text message on a multiplexed tunnel');
      this.#read(data);
    });
    ws.on('close', (code: number, reason: Buffer) => this.#shut(code, reason.length ? reason.toString() : 'tunnel closed'));
    ws.on('error', () => { /* 'close' follows */ });
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

  /** queues one frame; everything queued in this turn of the event loop leaves in one system call */
  frame(type: number, id: number, payload?: Buffer): void {
    if (this.#closed) return;
    const h = Buffer.allocUnsafe(HDR);
    h[0] = type;
    h.writeUInt32BE(id, 1);
    const n = payload ? payload.length : 0;
    h.writeUInt32BE(n, 5);
    const out = this.#out;
    if (n >= OWN_MESSAGE) {
      // a message of its own (in place of an empty list), and a fresh list for what follows
      if (!out[out.length - 1].length) out.pop();
      out.push([h, payload!], []);
    } else {
      const last = out[out.length - 1];
      last.push(h);
      if (n) last.push(payload!);
    }
    this.#outLen += HDR + n;
    if (this.#outLen >= FLUSH_AT) this.#flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flushLater);
    }
  }

  forget(id: number, extra: number): void {
    this.#streams.delete(id);
    this.#budget += extra;
  }

  /** up to `n` bytes of extra window from the channel's budget */
  takeBudget(n: number): number {
    const got = Math.min(n, this.#budget);
    this.#budget -= got;
    return got;
  }

  readonly #flushLater = (): void => {
    this.#scheduled = false;
    this.#flush();
  };

  #flush(): void {
    if (!this.#outLen) return;
    const out = this.#out;
    this.#out = [[]];
    this.#outLen = 0;
    const ws = this.ws;
    if (ws.readyState !== ws.OPEN) return;
    if (this.#writer === 'ws') {
      for (const m of out) if (m.length) ws.send(m.length === 1 ? m[0] : Buffer.concat(m), BINARY);
      return;
    }
    const sock = (ws as unknown as { _socket: import('node:net').Socket })._socket;
    const masked = this.#writer === 'zero-mask';
    // one small message (a lone query or answer) is one plain write; anything more, one writev
    // (a large payload always leaves a fresh list behind it, so a single list holds small frames)
    if (out.length === 1) return void sock.write(smallMessage(out[0], masked));
    sock.cork();
    for (const m of out) {
      if (!m.length) continue;
      if (m.length === 2 && m[1].length >= OWN_MESSAGE) {
        // header (WebSocket + frame) in one small buffer, the payload as it is
        const h = wsHeader(HDR + m[1].length, masked, HDR);
        m[0].copy(h, h.length - HDR);
        sock.write(h);
        sock.write(m[1]);
      } else sock.write(smallMessage(m, masked));
    }
    sock.uncork();
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
        case WINDOW_FRAME:
          if (len !== 4) return this.#fail('bad WINDOW frame');
          if (this.#streams.get(id)?._credit(p.readUInt32BE(0)) === false) return this.#fail('WINDOW credit beyond the window offered');
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
          if (this.#streams.size >= this.#maxStreams) {
            // refused, not fatal: the client's other connections go on, and this one learns why
            s.close(CloseCode.overLimit, `too many connections on one tunnel (limit ${this.#maxStreams})`);
            break;
          }
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
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(CloseCode.protocolError, why);
    this.#shut(CloseCode.protocolError, why);
  }

  #shut(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#out = [[]];
    this.#outLen = 0;
    // a stream still open when its WebSocket went away was cut off, whatever the WebSocket's code
    if (code === 1000 || code === 1005) code = 1006;
    for (const s of [...this.#streams.values()]) s._closed(code, reason, true);
    this.#streams.clear();
  }
}
