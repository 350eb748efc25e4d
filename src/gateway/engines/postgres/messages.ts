/**
 * What pg-protocol does not provide: reading the frontend messages the engine must inspect
 * (startup packet, Query, Parse, Bind, Describe, Execute, Close) and building the backend
 * messages the gateway answers with itself (ErrorResponse, ReadyForQuery, ...). Readers take
 * the framer's view (`buf[start, end)`, header included) and never copy the message.
 */
import { ProtocolError } from './framer.ts';

/** Frontend message type bytes. */
export const F = {
  Query: 0x51, // Q
  Parse: 0x50, // P
  Bind: 0x42, // B
  Describe: 0x44, // D
  Execute: 0x45, // E
  Sync: 0x53, // S
  Flush: 0x48, // H
  Close: 0x43, // C
  FunctionCall: 0x46, // F
  Terminate: 0x58, // X
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Password: 0x70, // p (password / SASL responses)
} as const;

/** Backend message type bytes. */
export const B = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  FunctionCallResponse: 0x56, // V
  NegotiateProtocolVersion: 0x76, // v
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;

/** Protocol codes of untagged packets (the int32 after the length). */
export const PROTOCOL_3_0 = 196608;
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** Reads a NUL-terminated UTF-8 string at `pos`; returns it and the offset after the NUL. */
export function readCString(buf: Buffer, pos: number, end: number): [string, number] {
  const nul = buf.indexOf(0, pos);
  if (nul < 0 || nul >= end) throw new ProtocolError('unterminated string in message');
  return [buf.toString('utf8', pos, nul), nul + 1];
}

function need(pos: number, n: number, end: number): void {
  if (pos + n > end) throw new ProtocolError('message shorter than its contents');
}

export type StartupPacket =
  | { name: 'startup'; major: number; minor: number; params: Map<string, string> }
  | { name: 'sslRequest' }
  | { name: 'gssEncRequest' }
  | { name: 'cancelRequest'; pid: number; secret: number };

export function parseStartupPacket(buf: Buffer, start: number, end: number): StartupPacket {
  need(start, 8, end);
  const code = buf.readInt32BE(start + 4);
  if (code === SSL_REQUEST) return { name: 'sslRequest' };
  if (code === GSSENC_REQUEST) return { name: 'gssEncRequest' };
  if (code === CANCEL_REQUEST) {
    need(start, 16, end);
    return { name: 'cancelRequest', pid: buf.readInt32BE(start + 8), secret: buf.readInt32BE(start + 12) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) throw new ProtocolError(`unsupported frontend protocol ${major}.${minor}: server supports 3.0`);
  const params = new Map<string, string>();
  let pos = start + 8;
  while (pos < end && buf[pos] !== 0) {
    const [k, p1] = readCString(buf, pos, end);
    const [v, p2] = readCString(buf, p1, end);
    params.set(k, v);
    pos = p2;
  }
  return { name: 'startup', major, minor, params };
}

/** Query text of a simple Query ('Q'). */
export function parseQuery(buf: Buffer, start: number, end: number): string {
  return readCString(buf, start + 5, end)[0];
}

export interface ParseMessage { statement: string; text: string; paramTypes: number[] }
export function parseParse(buf: Buffer, start: number, end: number): ParseMessage {
  const [statement, p1] = readCString(buf, start + 5, end);
  const [text, p2] = readCString(buf, p1, end);
  need(p2, 2, end);
  const n = buf.readInt16BE(p2);
  need(p2 + 2, 4 * n, end);
  const paramTypes = new Array<number>(n);
  for (let i = 0; i < n; i++) paramTypes[i] = buf.readUInt32BE(p2 + 2 + 4 * i);
  return { statement, text, paramTypes };
}

export interface BindMessage {
  portal: string;
  statement: string;
  /** parameter values: null = SQL NULL; Buffer views into the message */
  params: (Buffer | null)[];
  paramFormats: number[];
  /** result column formats as sent: [] = all text, [f] = all f, else one per column */
  resultFormats: number[];
}
export function parseBind(buf: Buffer, start: number, end: number): BindMessage {
  const [portal, p1] = readCString(buf, start + 5, end);
  const [statement, p2] = readCString(buf, p1, end);
  let pos = p2;
  need(pos, 2, end);
  const nf = buf.readInt16BE(pos); pos += 2;
  need(pos, 2 * nf, end);
  const paramFormats = new Array<number>(nf);
  for (let i = 0; i < nf; i++) { paramFormats[i] = buf.readInt16BE(pos); pos += 2; }
  need(pos, 2, end);
  const np = buf.readInt16BE(pos); pos += 2;
  const params = new Array<Buffer | null>(np);
  for (let i = 0; i < np; i++) {
    need(pos, 4, end);
    const len = buf.readInt32BE(pos); pos += 4;
    if (len < 0) { params[i] = null; continue; }
    need(pos, len, end);
    params[i] = buf.subarray(pos, pos + len);
    pos += len;
  }
  need(pos, 2, end);
  const nr = buf.readInt16BE(pos); pos += 2;
  need(pos, 2 * nr, end);
  const resultFormats = new Array<number>(nr);
  for (let i = 0; i < nr; i++) { resultFormats[i] = buf.readInt16BE(pos); pos += 2; }
  return { portal, statement, params, paramFormats, resultFormats };
}

/** Describe ('D') and Close ('C'): kind 'S' (statement) or 'P' (portal) and a name. */
export function parseTargetRef(buf: Buffer, start: number, end: number): { kind: 'S' | 'P'; name: string } {
  need(start + 5, 1, end);
  const k = buf[start + 5];
  if (k !== 0x53 && k !== 0x50) throw new ProtocolError('Describe/Close must name S or P');
  return { kind: k === 0x53 ? 'S' : 'P', name: readCString(buf, start + 6, end)[0] };
}

export function parseExecute(buf: Buffer, start: number, end: number): { portal: string; maxRows: number } {
  const [portal, p] = readCString(buf, start + 5, end);
  need(p, 4, end);
  return { portal, maxRows: buf.readInt32BE(p) };
}

// ---- ErrorResponse / NoticeResponse fields, kept in wire order so they can be rewritten ----

export type ErrorFields = Array<[code: number, value: string]>;

export function parseErrorFields(buf: Buffer, start: number, end: number): ErrorFields {
  const fields: ErrorFields = [];
  let pos = start + 5;
  while (pos < end && buf[pos] !== 0) {
    const code = buf[pos];
    const [v, p] = readCString(buf, pos + 1, end);
    fields.push([code, v]);
    pos = p;
  }
  return fields;
}

export function errorField(fields: ErrorFields, code: string): string | undefined {
  const c = code.charCodeAt(0);
  for (const [k, v] of fields) if (k === c) return v;
  return undefined;
}

export function buildErrorFields(type: number, fields: ErrorFields): Buffer {
  let len = 4 + 1;
  const encoded = fields.map(([k, v]) => { const b = Buffer.from(v, 'utf8'); len += 2 + b.length; return [k, b] as const; });
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = type;
  out.writeInt32BE(len, 1);
  let pos = 5;
  for (const [k, b] of encoded) { out[pos++] = k; pos += b.copy(out, pos); out[pos++] = 0; }
  out[pos] = 0;
  return out;
}

/** An ErrorResponse made by the gateway itself. `severity` ERROR keeps the session; FATAL ends it. */
/**
 * `routine` (R) carries the gateway's machine-readable reason beside the SQLSTATE, so a client
 * can tell a guardrail (`hoop_guardrail`) from a review's end (`hoop_review_rejected`,
 * `hoop_review_expired`, `hoop_review_cancelled`) where PostgreSQL itself would use 42501 too.
 */
export function errorResponse(severity: 'ERROR' | 'FATAL', sqlstate: string, message: string, extra: { detail?: string; hint?: string; routine?: string } = {}): Buffer {
  return buildErrorFields(B.ErrorResponse, noticeFields(severity, sqlstate, message, extra));
}

/** A NoticeResponse (`routine` as for errorResponse: `hoop_review_pending`). */
export function noticeResponse(sqlstate: string, message: string, extra: { detail?: string; hint?: string; routine?: string } = {}): Buffer {
  return buildErrorFields(B.NoticeResponse, noticeFields('NOTICE', sqlstate, message, extra));
}

function noticeFields(severity: string, sqlstate: string, message: string, extra: { detail?: string; hint?: string; routine?: string }): ErrorFields {
  const fields: ErrorFields = [
    [0x53, severity], // S
    [0x56, severity], // V (non-localized severity)
    [0x43, sqlstate], // C
    [0x4d, message], // M
  ];
  if (extra.detail) fields.push([0x44, extra.detail]);
  if (extra.hint) fields.push([0x48, extra.hint]);
  if (extra.routine) fields.push([0x52, extra.routine]);
  return fields;
}

const rfq = { I: Buffer.from([B.ReadyForQuery, 0, 0, 0, 5, 0x49]), T: Buffer.from([B.ReadyForQuery, 0, 0, 0, 5, 0x54]), E: Buffer.from([B.ReadyForQuery, 0, 0, 0, 5, 0x45]) };
/** ReadyForQuery with transaction status I (idle), T (in transaction) or E (failed transaction). */
export function readyForQuery(status: number): Buffer {
  return status === 0x54 ? rfq.T : status === 0x45 ? rfq.E : rfq.I;
}

export const authenticationOk = Buffer.from([B.Authentication, 0, 0, 0, 8, 0, 0, 0, 0]);
export const sslNo = Buffer.from('N');

export function backendKeyData(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(13);
  b[0] = B.BackendKeyData;
  b.writeInt32BE(12, 1);
  b.writeInt32BE(pid, 5);
  b.writeInt32BE(secret, 9);
  return b;
}

/** Tells a client that asked for protocol 3.x (x > 0) that we speak 3.0, and which options we ignored. */
export function negotiateProtocolVersion(unrecognized: string[]): Buffer {
  const names = unrecognized.map((s) => Buffer.from(s + '\0', 'utf8'));
  const len = 4 + 4 + 4 + names.reduce((a, b) => a + b.length, 0);
  const b = Buffer.allocUnsafe(1 + len);
  b[0] = B.NegotiateProtocolVersion;
  b.writeInt32BE(len, 1);
  b.writeInt32BE(0, 5); // newest minor version we support
  b.writeInt32BE(names.length, 9);
  let pos = 13;
  for (const n of names) pos += n.copy(b, pos);
  return b;
}

export function cancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret, 12);
  return b;
}

export const terminateMessage = Buffer.from([F.Terminate, 0, 0, 0, 4]);
export const syncMessage = Buffer.from([F.Sync, 0, 0, 0, 4]);

/** Describe of a prepared statement, injected by the engine to learn a statement's result columns. */
export function describeStatement(name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(1 + 4 + 1 + n.length + 1);
  b[0] = F.Describe;
  b.writeInt32BE(b.length - 1, 1);
  b[5] = 0x53;
  n.copy(b, 6);
  b[b.length - 1] = 0;
  return b;
}

export const flushMessage = Buffer.from([F.Flush, 0, 0, 0, 4]);

/** A simple Query message, for statements the engine sends on its own account. */
export function queryMessage(sql: string): Buffer {
  return buildMessage(F.Query, Buffer.from(sql + '\0', 'utf8'));
}

/**
 * Parse + Bind + Execute + Close (portal) + Close (statement) of `sql` under the named
 * statement and portal `name`: runs one statement inside an extended-protocol batch without
 * touching the client's unnamed statement or portal (a simple Query would drop both).
 */
export function runNamed(name: string, sql: string): Buffer {
  const n = name + '\0';
  return Buffer.concat([
    buildMessage(F.Parse, Buffer.from(`${n}${sql}\0\0\0`, 'utf8')),
    buildMessage(F.Bind, Buffer.from(`${n}${n}\0\0\0\0\0\0`, 'utf8')),
    buildMessage(F.Execute, Buffer.from(`${n}\0\0\0\0`, 'utf8')),
    buildMessage(F.Close, Buffer.from(`P${n}`, 'utf8')),
    buildMessage(F.Close, Buffer.from(`S${n}`, 'utf8')),
  ]);
}

// ---- DataRow ----

/**
 * Walks a DataRow's values without allocating: calls `fn(i, valueStart, valueLen)` per column
 * (valueLen -1 = NULL). Returns the column count.
 */
export function forEachValue(buf: Buffer, start: number, end: number, fn: (i: number, pos: number, len: number) => void): number {
  need(start + 5, 2, end);
  const n = buf.readInt16BE(start + 5);
  let pos = start + 7;
  for (let i = 0; i < n; i++) {
    need(pos, 4, end);
    const len = buf.readInt32BE(pos);
    pos += 4;
    if (len > 0) need(pos, len, end);
    fn(i, pos, len);
    if (len > 0) pos += len;
  }
  return n;
}

/** Builds a DataRow from values (null = SQL NULL; string = UTF-8; Buffer = raw bytes). */
export function buildDataRow(values: ReadonlyArray<string | Buffer | null>): Buffer {
  let len = 4 + 2;
  const enc = values.map((v) => {
    if (v === null) { len += 4; return null; }
    const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    len += 4 + b.length;
    return b;
  });
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = B.DataRow;
  out.writeInt32BE(len, 1);
  out.writeInt16BE(values.length, 5);
  let pos = 7;
  for (const b of enc) {
    if (b === null) { out.writeInt32BE(-1, pos); pos += 4; continue; }
    out.writeInt32BE(b.length, pos); pos += 4;
    pos += b.copy(out, pos);
  }
  return out;
}

/** A message with a single payload: CopyData ('d') or NotificationResponse rebuilt. */
export function buildMessage(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

export function buildNotification(pid: number, channel: string, payload: string): Buffer {
  const c = Buffer.from(channel + '\0', 'utf8');
  const p = Buffer.from(payload + '\0', 'utf8');
  const out = Buffer.allocUnsafe(1 + 4 + 4 + c.length + p.length);
  out[0] = B.NotificationResponse;
  out.writeInt32BE(out.length - 1, 1);
  out.writeInt32BE(pid, 5);
  c.copy(out, 9);
  p.copy(out, 9 + c.length);
  return out;
}

/** StartupMessage for protocol 3.0 (pg-protocol's adds client_encoding=UTF8, which must stay the client's choice). */
export function startupMessage(params: ReadonlyArray<[string, string]>): Buffer {
  const parts = params.map(([k, v]) => Buffer.from(`${k}\0${v}\0`, 'utf8'));
  const len = 4 + 4 + parts.reduce((a, b) => a + b.length, 0) + 1;
  const out = Buffer.allocUnsafe(len);
  out.writeInt32BE(len, 0);
  out.writeInt32BE(PROTOCOL_3_0, 4);
  let pos = 8;
  for (const p of parts) pos += p.copy(out, pos);
  out[pos] = 0;
  return out;
}

export function parameterStatus(name: string, value: string): Buffer {
  const body = Buffer.from(`${name}\0${value}\0`, 'utf8');
  return buildMessage(B.ParameterStatus, body);
}
