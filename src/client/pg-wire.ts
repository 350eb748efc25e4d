/**
 * A small PostgreSQL frontend (protocol 3.0, simple query only) for `hoopctl exec` and
 * `hoopctl mcp`, speaking over a tunnel stream in-process (no local listener, no libpq).
 *
 * Why our own instead of node-postgres: results must stream with bounded memory and keep their
 * column type OIDs, and the hot path should not decode what it only copies. The framer hands each
 * DataRow to the sink as the raw message (`row(buf, start, end)`), so CSV output copies field
 * bytes into its output buffer without making a JS string per value (pg-protocol's Parser, which
 * node-postgres uses, builds a string array per row). A sink can say "stop" (return false) — the
 * output is full, or it needs to look something up — and the framer keeps the rest of the chunk
 * and pauses the tunnel until `resume()`, so a slow stdout holds the gateway, and through it the
 * target, instead of growing a buffer here.
 *
 * Messages (backend): R S K Z T D C I E N H d c G A n 1 2 3 s t; (frontend): StartupMessage,
 * Query, Terminate, CopyFail, CancelRequest.
 */
import type { LinkHandlers, TunnelLink } from '../shared/ws-duplex.ts';

export interface Column { name: string; typeOid: number; tableOid: number; attnum: number; typmod: number }

/** fields of an ErrorResponse / NoticeResponse, named as in libpq's PG_DIAG_* */
export interface PgFields {
  severity: string; sqlstate: string; message: string;
  detail?: string; hint?: string; position?: string; where?: string; routine?: string;
}

export class PgServerError extends Error {
  readonly fields: PgFields;
  constructor(f: PgFields) {
    super(f.message);
    this.fields = f;
  }
}

/** what one statement's messages are told; each may return false to stop reading until resume() */
export interface StatementSink {
  columns?(cols: Column[]): boolean | void;
  /** a DataRow: buf[start..end) is the message body (int16 count, then int32 length + bytes per field) */
  row?(buf: Buffer, start: number, end: number): boolean | void;
  notice?(f: PgFields): boolean | void;
  /** COPY ... TO STDOUT data */
  copyData?(buf: Buffer, start: number, end: number): boolean | void;
}

export interface StatementResult {
  /** CommandComplete tag ("SELECT 3"); undefined for an empty query or an error */
  command?: string;
  error?: PgFields;
  empty?: boolean;
  /** the transaction status after it: I idle, T in a transaction, E failed transaction */
  txStatus: string;
}

/** the session went away (tunnel closed, lease ended, protocol error) */
export class SessionClosed extends Error {}

const MAX_MESSAGE = 512 * 1024 * 1024;

const PROTOCOL_3 = 196608;
const CANCEL_CODE = 80877102;

export function startupMessage(params: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(`${k}\0${v}\0`));
  const body = Buffer.concat([...parts, Buffer.from([0])]);
  const b = Buffer.allocUnsafe(8 + body.length);
  b.writeInt32BE(8 + body.length, 0);
  b.writeInt32BE(PROTOCOL_3, 4);
  body.copy(b, 8);
  return b;
}

function tagged(type: string, body: Buffer): Buffer {
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = type.charCodeAt(0);
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}
export const queryMessage = (sql: string) => tagged('Q', Buffer.from(`${sql}\0`));
export const copyFailMessage = (why: string) => tagged('f', Buffer.from(`${why}\0`));
export const terminateMessage = Buffer.from([0x58, 0, 0, 0, 4]);
export function cancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_CODE, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret, 12);
  return b;
}

function cstring(buf: Buffer, at: number): [string, number] {
  const end = buf.indexOf(0, at);
  return [buf.toString('utf8', at, end), end + 1];
}

const FIELD_NAMES: Record<string, keyof PgFields> = { S: 'severity', C: 'sqlstate', M: 'message', D: 'detail', H: 'hint', P: 'position', W: 'where', R: 'routine' };
function parseFields(buf: Buffer, start: number, end: number): PgFields {
  const f: Partial<PgFields> & Record<string, string> = {};
  let at = start;
  while (at < end && buf[at] !== 0) {
    const code = String.fromCharCode(buf[at]);
    const [v, next] = cstring(buf, at + 1);
    const name = FIELD_NAMES[code];
    // 'S' is localized; 'V' (v9.6+) is not: prefer it
    if (code === 'V') f.severity = v;
    else if (name && !(name === 'severity' && f.severity)) f[name] = v;
    at = next;
  }
  return { severity: f.severity ?? 'ERROR', sqlstate: f.sqlstate ?? 'XX000', message: f.message ?? '(no message)', ...f } as PgFields;
}

function parseRowDescription(buf: Buffer, start: number): Column[] {
  const n = buf.readInt16BE(start);
  let at = start + 2;
  const cols: Column[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const [name, next] = cstring(buf, at);
    at = next;
    cols[i] = { name, tableOid: buf.readUInt32BE(at), attnum: buf.readInt16BE(at + 4), typeOid: buf.readUInt32BE(at + 6), typmod: buf.readInt32BE(at + 12) };
    at += 18;
  }
  return cols;
}

/** Iterates the fields of a DataRow body: calls `each(i, start, end)`, start = -1 for NULL. */
export function forEachField(buf: Buffer, start: number, each: (i: number, s: number, e: number) => void): void {
  const n = buf.readInt16BE(start);
  let at = start + 2;
  for (let i = 0; i < n; i++) {
    const len = buf.readInt32BE(at);
    at += 4;
    if (len < 0) each(i, -1, -1);
    else {
      each(i, at, at + len);
      at += len;
    }
  }
}

/** DataRow fields as strings (null for NULL): for the formats that need values, not bytes */
export function rowValues(buf: Buffer, start: number): Array<string | null> {
  const n = buf.readInt16BE(start);
  const out: Array<string | null> = new Array(n);
  let at = start + 2;
  for (let i = 0; i < n; i++) {
    const len = buf.readInt32BE(at);
    at += 4;
    if (len < 0) out[i] = null;
    else {
      out[i] = buf.toString('utf8', at, at + len);
      at += len;
    }
  }
  return out;
}

interface Pending {
  sink: StatementSink;
  result: Partial<StatementResult>;
  resolve(r: StatementResult): void;
  reject(e: Error): void;
}

export interface SessionInfo { pid: number; secret: number; params: Map<string, string> }

/**
 * One logged-in session on a tunnel link. `query()` runs one simple Query at a time.
 */
export class PgSession {
  readonly params = new Map<string, string>();
  pid = 0;
  secret = 0;
  #link: TunnelLink | undefined;
  #rest: Buffer | null = null;
  #stopped = false;
  #closed: Error | undefined;
  #pending: Pending | undefined;
  #login: { resolve(): void; reject(e: Error): void } | undefined;
  /** called when the stream is gone (closeGracefully waits for it) */
  #gone: (() => void) | undefined;
  /** a FATAL ErrorResponse: why the stream is about to close */
  #fatal: PgFields | undefined;
  /** messages of the login that are not ours to act on go here (e.g. NoticeResponse) */
  onNotice: ((f: PgFields) => void) | undefined;
  /** called once when the session ends for a reason other than close() */
  onClosed: ((err: Error) => void) | undefined;

  /** Starts the session over `link` (from wsDuplex(...).link) and logs in with `params`. */
  static async open(attach: (h: LinkHandlers) => TunnelLink, params: Record<string, string>): Promise<PgSession> {
    const s = new PgSession();
    await s.#start(attach, params);
    return s;
  }

  #start(attach: (h: LinkHandlers) => TunnelLink, params: Record<string, string>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#login = { resolve, reject };
      this.#link = attach({
        data: (b) => this.#onData(b),
        end: () => this.#fail(this.#fatal ? new PgServerError(this.#fatal) : new SessionClosed('the gateway ended the session')),
        close: () => {
          this.#fail(this.#fatal ? new PgServerError(this.#fatal) : new SessionClosed('the tunnel closed'));
          this.#gone?.();
        },
        drain: () => {},
      });
      this.#link.start();
      this.#link.write(startupMessage(params));
    });
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /** Runs one statement (or a Query the caller put together); resolves at ReadyForQuery. */
  query(sql: string, sink: StatementSink = {}): Promise<StatementResult> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (this.#pending) return Promise.reject(new Error('a query is already running on this session'));
    return new Promise((resolve, reject) => {
      this.#pending = { sink, result: {}, resolve, reject };
      this.#link!.write(queryMessage(sql));
    });
  }

  /** Stops reading (the rest of the current chunk is kept) until resume(). */
  pause(): void {
    this.#stopped = true;
    this.#link?.pause();
  }

  resume(): void {
    if (!this.#stopped || this.#closed) return;
    this.#stopped = false;
    const rest = this.#rest;
    this.#rest = null;
    if (rest) this.#onData(rest);
    if (!this.#stopped) this.#link?.resume();
  }

  /**
   * Terminate, then wait (at most 1 s) for the gateway to close the stream, so the session ends
   * as "client closed" in its recording rather than as a dropped tunnel. A running query fails
   * with SessionClosed.
   */
  closeGracefully(): Promise<void> {
    const link = this.#link;
    if (this.#closed || !link || link.destroyed) {
      this.#fail(new SessionClosed('session closed'), false);
      link?.destroy();
      return Promise.resolve();
    }
    link.write(terminateMessage);
    link.end();
    this.#fail(new SessionClosed('session closed'), false);
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => { link.destroy(); resolve(); }, 1000);
      this.#gone = () => { clearTimeout(timer); resolve(); };
    });
  }

  /** Terminate without waiting. */
  close(): void {
    void this.closeGracefully();
  }

  /** Drops the connection at once (no Terminate): what a client that goes away does. */
  destroy(): void {
    this.#fail(new SessionClosed('session closed'), false);
    this.#link?.destroy();
  }

  #fail(err: Error, notify = true): void {
    if (this.#closed) return;
    this.#closed = err;
    this.#login?.reject(err);
    this.#login = undefined;
    const p = this.#pending;
    this.#pending = undefined;
    p?.reject(err);
    if (notify) this.onClosed?.(err);
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    let buf = chunk;
    if (this.#rest) {
      buf = Buffer.concat([this.#rest, chunk]);
      this.#rest = null;
    }
    if (this.#stopped) {
      this.#rest = buf;
      return;
    }
    let at = 0;
    const n = buf.length;
    while (n - at >= 5) {
      const len = buf.readInt32BE(at + 1);
      if (len < 4 || len > MAX_MESSAGE) {
        this.#fail(new SessionClosed(`protocol error: bad message length ${len}`));
        this.#link?.destroy();
        return;
      }
      if (n - at < 1 + len) break;
      const type = buf[at];
      const go = this.#message(type, buf, at + 5, at + 1 + len);
      at += 1 + len;
      if (this.#closed) return;
      if (go === false || this.#stopped) {
        this.#stopped = true;
        this.#link?.pause();
        break;
      }
    }
    if (at < n) {
      // a partial message (or what a stop left): copy when small so the big chunk can go
      const left = buf.subarray(at);
      this.#rest = left.length < 4096 ? Buffer.from(left) : left;
    }
  }

  /** one whole message; false = stop reading */
  #message(type: number, buf: Buffer, start: number, end: number): boolean | void {
    const p = this.#pending;
    switch (type) {
      case 0x44: // D DataRow
        return p?.sink.row?.(buf, start, end);
      case 0x64: // d CopyData
        return p?.sink.copyData?.(buf, start, end);
      case 0x54: // T RowDescription
        return p?.sink.columns?.(parseRowDescription(buf, start));
      case 0x43: // C CommandComplete
        if (p) p.result.command = cstring(buf, start)[0];
        return;
      case 0x49: // I EmptyQueryResponse
        if (p) p.result.empty = true;
        return;
      case 0x45: { // E ErrorResponse
        const f = parseFields(buf, start, end);
        if (this.#login) {
          this.#link?.destroy();
          this.#fail(new PgServerError(f));
          return false;
        }
        // FATAL (the gateway ending the session: lease expired or revoked, 57P01): the stream
        // closes next, and the running query fails with this error rather than "tunnel closed"
        if (f.severity === 'FATAL' || f.severity === 'PANIC') {
          this.#fatal = f;
          if (!p) this.#fail(new PgServerError(f));
          return;
        }
        if (p) p.result.error = f;
        return;
      }
      case 0x4e: { // N NoticeResponse
        const f = parseFields(buf, start, end);
        if (p?.sink.notice) return p.sink.notice(f);
        this.onNotice?.(f);
        return;
      }
      case 0x5a: { // Z ReadyForQuery
        const tx = String.fromCharCode(buf[start]);
        if (this.#login) {
          const l = this.#login;
          this.#login = undefined;
          l.resolve();
          return;
        }
        if (p) {
          this.#pending = undefined;
          p.resolve({ ...p.result, txStatus: tx });
        }
        return;
      }
      case 0x47: // G CopyInResponse: exec has no data to send
        this.#link?.write(copyFailMessage('COPY FROM STDIN is not supported by hoopctl exec; use \\copy in psql: hoopctl exec <conn> -- psql ...'));
        return;
      case 0x52: { // R Authentication*
        const code = buf.readInt32BE(start);
        if (code !== 0) {
          // the gateway answers the startup itself (the lease is the login): anything else is not a hoop gateway
          this.#fail(new SessionClosed(`the gateway asked for authentication method ${code}; expected none (the lease is the login)`));
          this.#link?.destroy();
          return false;
        }
        return;
      }
      case 0x53: { // S ParameterStatus
        const [k, next] = cstring(buf, start);
        this.params.set(k, cstring(buf, next)[0]);
        return;
      }
      case 0x4b: // K BackendKeyData (the gateway's own key, mapped to the target's for CancelRequest)
        this.pid = buf.readInt32BE(start);
        this.secret = buf.readInt32BE(start + 4);
        return;
      default:
        // H CopyOutResponse, c CopyDone, A NotificationResponse, v NegotiateProtocolVersion, 1/2/3 n s t: nothing to do
        return;
    }
  }
}
