/**
 * Splits a PostgreSQL v3 byte stream into whole messages, after pg-protocol's src/parser.ts:
 * frame on the 5-byte header (type byte + int32 length), dispatch only whole messages, hand out
 * views of the incoming chunk (no copy) and copy only a message that straddles two chunks.
 *
 * pg-protocol only parses the backend direction and knows nothing of the untagged packets a
 * client sends first (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest: int32 length,
 * no type byte), so this framer serves both directions: `untagged = true` makes the next message
 * an untagged one, and the engine flips it back on after answering an SSLRequest.
 *
 * Fails closed: a length below 4 or above `maxMessageSize` throws ProtocolError before any
 * byte of that message is buffered (as ws's maxPayload closes with 1009). Below that limit, a
 * straddling message's buffer grows with the bytes that arrive, never to the length its header
 * declares before they do (firstCapacity).
 *
 * A straddling message gets a fresh buffer each time — never a reused one — because views handed
 * to `onMessage` may still sit in a socket's write queue.
 */
import { HoopError } from '../../../errors.ts';

/** A malformed or oversized protocol message; the connection it came from is closed. */
export class ProtocolError extends HoopError {
  constructor(message: string) {
    super('pg_protocol', message, { status: 400, expose: true });
  }
}

/**
 * Called once per whole message. `code` is the type byte, or 0 for an untagged packet; the
 * message occupies `buf[start, end)` (header included). The view is valid until the socket's
 * write completes; keep a reference, not a copy, if needed later.
 */
export type OnMessage = (code: number, buf: Buffer, start: number, end: number) => void;

/** PostgreSQL's own limit for startup packets (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET = 10_000;
/** default cap for one message: well above what psql/pg/pgbench send, far below memory trouble */
export const DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024;

/** the first buffer of a straddling message: what arrived, at least this much, never the declared length */
const FIRST_PARTIAL = 16 * 1024;

/**
 * A header declares a length; what arrives may never follow (a client that sends a header for a
 * 64 MB message and stops). So the buffer starts at what arrived and grows as bytes come in:
 * memory held is at most twice the bytes received, not what a header claims.
 */
function firstCapacity(total: number, arrived: number): number {
  return Math.min(total, Math.max(FIRST_PARTIAL, arrived));
}

export class MessageFramer {
  /** when true the next message has no type byte (startup phase) */
  untagged: boolean;
  readonly maxMessageSize: number;
  private readonly onMessage: OnMessage;
  // a message that straddles chunks: header bytes first, then the whole message once its length is known
  private head = Buffer.allocUnsafe(5);
  private headLen = 0;
  private partial: Buffer | null = null;
  private partialFilled = 0;
  private partialCode = 0;
  /** the whole length of the straddling message; `partial` grows towards it as bytes arrive */
  private partialTotal = 0;
  private paused = false;
  private queue: Buffer[] = [];
  private failed: ProtocolError | null = null;

  constructor(onMessage: OnMessage, opts: { untagged?: boolean; maxMessageSize?: number } = {}) {
    this.onMessage = onMessage;
    this.untagged = opts.untagged ?? false;
    this.maxMessageSize = opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE;
  }

  /** bytes held back (partial message + queued chunks while paused) */
  get pendingBytes(): number {
    let n = this.headLen + this.partialFilled;
    for (const q of this.queue) n += q.length;
    return n;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Feeds one chunk. Throws ProtocolError on a bad length; the framer stays failed afterwards. */
  push(chunk: Buffer): void {
    if (this.failed) throw this.failed;
    if (this.paused || this.queue.length > 0) {
      if (chunk.length > 0) this.queue.push(chunk);
      return;
    }
    this.consume(chunk);
  }

  /**
   * Stops dispatching after the current message; later bytes are queued by reference. Used to
   * hold client messages while a statement awaits review, and target messages while a catalog
   * lookup runs.
   */
  pause(): void {
    this.paused = true;
  }

  /** Dispatches what was queued, until paused again. */
  resume(): void {
    if (this.failed) throw this.failed;
    this.paused = false;
    while (!this.paused && this.queue.length > 0) this.consume(this.queue.shift()!);
  }

  private fail(message: string): never {
    this.failed = new ProtocolError(message);
    this.queue = [];
    throw this.failed;
  }

  /** Validates a header; returns the whole message length (type byte included). */
  private messageLength(code: number, len: number): number {
    if (len < 4) this.fail(`invalid message length ${len}`);
    const max = code === 0 ? MAX_STARTUP_PACKET : this.maxMessageSize;
    if (len > max) this.fail(`message of ${len} bytes exceeds the limit of ${max}`);
    return code === 0 ? len : len + 1;
  }

  private consume(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    if (this.headLen > 0 || this.partial) {
      off = this.fillPartial(chunk);
      if (off < 0) return; // still incomplete
      if (this.paused) {
        if (off < n) this.queue.unshift(chunk.subarray(off));
        return;
      }
    }
    while (off < n) {
      const tagged = !this.untagged;
      const hdr = tagged ? 5 : 4;
      if (n - off < hdr) break;
      const code = tagged ? chunk[off] : 0;
      const total = this.messageLength(code, chunk.readInt32BE(tagged ? off + 1 : off));
      if (n - off < total) break;
      if (!tagged) this.untagged = false;
      this.onMessage(code, chunk, off, off + total);
      off += total;
      if (this.paused) {
        if (off < n) this.queue.unshift(chunk.subarray(off));
        return;
      }
    }
    if (off < n) this.startPartial(chunk, off);
  }

  private startPartial(chunk: Buffer, off: number): void {
    const rest = chunk.length - off;
    const hdr = this.untagged ? 4 : 5;
    if (rest < hdr) {
      chunk.copy(this.head, 0, off);
      this.headLen = rest;
      return;
    }
    const code = this.untagged ? 0 : chunk[off];
    const total = this.messageLength(code, chunk.readInt32BE(this.untagged ? off : off + 1));
    this.partial = Buffer.allocUnsafe(firstCapacity(total, rest));
    this.partialCode = code;
    this.partialTotal = total;
    this.partialFilled = chunk.copy(this.partial, 0, off);
  }

  /** Continues a straddling message; returns the offset after it in `chunk`, or -1 if it needs more. */
  private fillPartial(chunk: Buffer): number {
    let off = 0;
    if (!this.partial) {
      const hdr = this.untagged ? 4 : 5;
      const take = Math.min(hdr - this.headLen, chunk.length);
      chunk.copy(this.head, this.headLen, 0, take);
      this.headLen += take;
      off = take;
      if (this.headLen < hdr) return -1;
      const code = this.untagged ? 0 : this.head[0];
      const total = this.messageLength(code, this.head.readInt32BE(this.untagged ? 0 : 1));
      this.partial = Buffer.allocUnsafe(firstCapacity(total, hdr + chunk.length - off));
      this.partialCode = code;
      this.partialTotal = total;
      this.partialFilled = this.head.copy(this.partial, 0, 0, hdr);
      this.headLen = 0;
    }
    const total = this.partialTotal;
    const take = Math.min(total - this.partialFilled, chunk.length - off);
    let p = this.partial;
    if (this.partialFilled + take > p.length) {
      // grow with what arrives (at least doubling: copies stay linear in the message's size)
      const bigger = Buffer.allocUnsafe(Math.min(total, Math.max(2 * p.length, this.partialFilled + take)));
      p.copy(bigger, 0, 0, this.partialFilled);
      this.partial = p = bigger;
    }
    chunk.copy(p, this.partialFilled, off, off + take);
    this.partialFilled += take;
    off += take;
    if (this.partialFilled < total) return -1;
    this.partial = null;
    this.partialFilled = 0;
    if (this.partialCode === 0) this.untagged = false;
    this.onMessage(this.partialCode, p, 0, total);
    return off;
  }
}
