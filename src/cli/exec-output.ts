/**
 * `hoopctl exec` output formats (issue 11). All of them stream: rows go out as they arrive, through
 * one byte buffer that is flushed when it fills, at the end of each event-loop turn and at each
 * statement's end; when stdout will not take more, the writer answers "stop" and the session stops
 * reading the tunnel until stdout drains (the gateway, and the target behind it, wait too). So a
 * 1M-row select holds at most a buffer's worth of it here, never the result.
 *
 * - csv (default when stdout is not a terminal): as `psql --csv`: a header line per result, NULL
 *   and the empty string both empty, quotes only where psql puts them. Command tags of statements
 *   without rows go to stderr, so stdout is only CSV.
 * - table (default on a terminal): psql's aligned format; column widths come from the first 1000
 *   rows (later rows keep them, like psql's FETCH_COUNT), then "(N rows)".
 * - json: one array; per statement {statement, line, text, columns: [{name, type, type_oid}],
 *   rows: [[...]], row_count, command} or {…, error: {sqlstate, message, …}, exit_code}.
 * - ndjson: the same objects, one line per statement (each line written as its rows arrive).
 *   Values: NULL → null, boolean → true/false, smallint/integer/oid/real/double → numbers (NaN and
 *   ±Infinity stay strings), json/jsonb → the JSON value itself, everything else (bigint and numeric
 *   too, so no digit is lost) → the text PostgreSQL sent.
 */
import type { Writable } from 'node:stream';
import { forEachField, rowValues, type PgFields, type StatementResult } from '../client/pg-wire.ts';
import type { ColumnInfo, ResultWriter } from '../client/sql-exec.ts';
import type { SplitStatement } from '../client/sql-split.ts';

export type Format = 'table' | 'csv' | 'json' | 'ndjson';

const FLUSH_AT = 64 * 1024;

/** a byte buffer in front of a stream, with backpressure reported to the caller */
class ByteOut {
  readonly #to: Writable;
  #buf = Buffer.allocUnsafe(FLUSH_AT * 2);
  #len = 0;
  #scheduled = false;
  #waiting: (() => void) | undefined;
  #draining = false;
  constructor(to: Writable) {
    this.#to = to;
  }
  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n));
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }
  #touch(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.flush();
    });
  }
  bytes(src: Buffer, s: number, e: number): void {
    this.#room(e - s);
    src.copy(this.#buf, this.#len, s, e);
    this.#len += e - s;
    this.#touch();
  }
  byte(b: number): void {
    this.#room(1);
    this.#buf[this.#len++] = b;
    this.#touch();
  }
  str(s: string): void {
    this.#room(Buffer.byteLength(s));
    this.#len += this.#buf.write(s, this.#len);
    this.#touch();
  }
  /** after a row: false when the caller should stop until `resume` is called */
  maybeFlush(resume: () => void): boolean {
    if (this.#len < FLUSH_AT) return true;
    if (this.flush()) return true;
    this.#waiting = resume;
    return false;
  }
  /** writes what is buffered; false when the stream is full (its 'drain' calls the waiting resume) */
  flush(): boolean {
    if (!this.#len) return true;
    const chunk = Buffer.from(this.#buf.subarray(0, this.#len));
    this.#len = 0;
    const ok = this.#to.write(chunk);
    if (!ok && !this.#draining) {
      this.#draining = true;
      this.#to.once('drain', () => {
        this.#draining = false;
        const w = this.#waiting;
        this.#waiting = undefined;
        w?.();
      });
    }
    return ok;
  }
  end(): Promise<void> {
    this.flush();
    return new Promise((resolve) => {
      if (this.#to.writableNeedDrain) this.#to.once('drain', () => resolve());
      else resolve();
    });
  }
}

const COMMA = 0x2c;
const QUOTE = 0x22;
const NL = 0x0a;
const CR = 0x0d;

/** psql's csv_print_field: quote when the field holds the separator, a quote, CR/LF, or is exactly "\." */
function csvField(out: ByteOut, buf: Buffer, s: number, e: number): void {
  let quote = e - s === 2 && buf[s] === 0x5c && buf[s + 1] === 0x2e;
  for (let k = s; k < e && !quote; k++) {
    const c = buf[k];
    if (c === COMMA || c === QUOTE || c === NL || c === CR) quote = true;
  }
  if (!quote) return out.bytes(buf, s, e);
  out.byte(QUOTE);
  let from = s;
  for (let k = s; k < e; k++) {
    if (buf[k] === QUOTE) {
      out.bytes(buf, from, k + 1);
      out.byte(QUOTE);
      from = k + 1;
    }
  }
  out.bytes(buf, from, e);
  out.byte(QUOTE);
}
const csvText = (out: ByteOut, s: string) => { const b = Buffer.from(s); csvField(out, b, 0, b.length); };

export interface OutputStreams { stdout: Writable; stderr: Writable }

/** errors and notices on stderr, psql-like */
export function printServerMessage(stderr: Writable, f: PgFields, where?: string): void {
  const lines = [`${f.severity}:  ${f.message}`];
  if (f.detail) lines.push(`DETAIL:  ${f.detail}`);
  if (f.hint) lines.push(`HINT:  ${f.hint}`);
  if (where) lines.push(`CONTEXT:  ${where}`);
  stderr.write(`${lines.join('\n')}\n`);
}

const statementContext = (stmt: SplitStatement, index: number) => {
  const oneLine = stmt.text.replace(/\s+/g, ' ');
  return `statement ${index + 1} (line ${stmt.line}): ${oneLine.length > 120 ? `${oneLine.slice(0, 120)}…` : oneLine}`;
};

abstract class BaseWriter implements ResultWriter {
  protected readonly out: ByteOut;
  protected readonly err: Writable;
  protected resume: () => void = () => {};
  protected cols: ColumnInfo[] = [];
  constructor(s: OutputStreams) {
    this.out = new ByteOut(s.stdout);
    this.err = s.stderr;
  }
  begin(_stmt: SplitStatement, _i: number, resume: () => void): void {
    this.resume = resume;
    this.cols = [];
  }
  abstract columns(cols: ColumnInfo[]): boolean | void;
  abstract row(buf: Buffer, start: number, end: number): boolean | void;
  copyData(buf: Buffer, start: number, end: number): boolean | void {
    this.out.bytes(buf, start, end);
    return this.out.maybeFlush(this.resume);
  }
  notice(f: PgFields): void {
    this.out.flush(); // keep notices next to the rows they came with
    printServerMessage(this.err, f);
  }
  abstract end(stmt: SplitStatement, index: number, r: StatementResult, exit: number): void;
  /** the run is over (`interrupted`: a statement's output was cut off) */
  finish(_interrupted?: string): Promise<void> {
    return this.out.end();
  }
}

class CsvWriter extends BaseWriter {
  columns(cols: ColumnInfo[]): void {
    this.cols = cols;
    cols.forEach((c, i) => {
      if (i) this.out.byte(COMMA);
      csvText(this.out, c.name);
    });
    this.out.byte(NL);
  }
  row(buf: Buffer, start: number): boolean {
    const out = this.out;
    forEachField(buf, start, (i, s, e) => {
      if (i) out.byte(COMMA);
      if (s >= 0) csvField(out, buf, s, e);
    });
    out.byte(NL);
    return out.maybeFlush(this.resume);
  }
  end(stmt: SplitStatement, index: number, r: StatementResult): void {
    this.out.flush();
    if (r.error) printServerMessage(this.err, r.error, statementContext(stmt, index));
    else if (r.command && !this.cols.length) this.err.write(`${r.command}\n`);
  }
}

const NUMERIC_OIDS = new Set([20, 21, 23, 26, 700, 701, 790, 1700]);
const TABLE_SAMPLE = 1000;

class TableWriter extends BaseWriter {
  #sample: Array<Array<string | null>> | null = null;
  #widths: number[] = [];
  #rows = 0;
  columns(cols: ColumnInfo[]): void {
    this.cols = cols;
    this.#sample = [];
    this.#rows = 0;
  }
  row(buf: Buffer, start: number): boolean {
    const v = rowValues(buf, start).map((x) => (x === null ? '' : x));
    this.#rows++;
    if (this.#sample) {
      this.#sample.push(v);
      if (this.#sample.length >= TABLE_SAMPLE) this.#printSample();
      return true;
    }
    this.#line(v);
    return this.out.maybeFlush(this.resume);
  }
  #printSample(): void {
    const rows = this.#sample ?? [];
    this.#sample = null;
    this.#widths = this.cols.map((c, i) => Math.max(width(c.name), ...rows.map((r) => width(r[i] ?? ''))));
    const head = this.cols.map((c, i) => center(c.name, this.#widths[i]));
    this.out.str(`${(' ' + head.join(' | ')).trimEnd()}\n`);
    this.out.str(`${this.#widths.map((w) => '-'.repeat(w + 2)).join('+')}\n`);
    for (const r of rows) this.#line(r);
  }
  #line(v: Array<string | null>): void {
    const cells = v.map((x, i) => {
      const s = x ?? '';
      const pad = Math.max(0, (this.#widths[i] ?? 0) - width(s));
      return NUMERIC_OIDS.has(this.cols[i]?.type_oid) ? ' '.repeat(pad) + s : s + ' '.repeat(pad);
    });
    this.out.str(`${(' ' + cells.join(' | ')).trimEnd()}\n`);
  }
  end(stmt: SplitStatement, index: number, r: StatementResult): void {
    if (this.#sample) this.#printSample();
    if (this.cols.length && !r.error) this.out.str(`(${this.#rows} ${this.#rows === 1 ? 'row' : 'rows'})\n\n`);
    else if (r.command && !r.error) this.out.str(`${r.command}\n`);
    this.out.flush();
    if (r.error) printServerMessage(this.err, r.error, statementContext(stmt, index));
  }
}

const width = (s: string) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};
const center = (s: string, w: number) => {
  const pad = Math.max(0, w - width(s));
  const left = Math.floor(pad / 2);
  return ' '.repeat(left) + s + ' '.repeat(pad - left);
};

const NUMBER_OIDS = new Set([21, 23, 26, 700, 701]);
const JSON_OIDS = new Set([114, 3802]);

/** how a column's text becomes a JSON value: 0 string, 1 boolean, 2 number, 3 JSON (see the header) */
export function valueKind(typeOid: number): number {
  return typeOid === 16 ? 1 : NUMBER_OIDS.has(typeOid) ? 2 : JSON_OIDS.has(typeOid) ? 3 : 0;
}

/** one value as JSON, from its text form (the json/ndjson formats and the MCP server agree) */
export function jsonValue(kind: number, text: string | null): unknown {
  if (text === null) return null;
  if (kind === 1) return text === 't';
  if (kind === 2) return /^-?\d/.test(text) ? Number(text) : text;
  if (kind === 3) {
    try { return JSON.parse(text); } catch { return text; }
  }
  return text;
}

/** json and ndjson: one object per statement, its rows streamed into it */
class JsonWriter extends BaseWriter {
  readonly #lines: boolean;
  #count = 0;
  #open = false;
  #rows = 0;
  #kinds: Uint8Array = new Uint8Array(0);
  constructor(s: OutputStreams, lines: boolean) {
    super(s);
    this.#lines = lines;
    if (!lines) this.out.str('[');
  }
  override begin(stmt: SplitStatement, i: number, resume: () => void): void {
    super.begin(stmt, i, resume);
    if (!this.#lines && this.#count) this.out.str(',');
    if (!this.#lines) this.out.str('\n');
    this.#count++;
    this.#open = true;
    this.#rows = 0;
    this.out.str(`{"statement":${i + 1},"line":${stmt.line},"text":${JSON.stringify(stmt.text)}`);
  }
  columns(cols: ColumnInfo[]): void {
    this.cols = cols;
    this.#kinds = Uint8Array.from(cols, (c) => valueKind(c.type_oid));
    this.out.str(`,"columns":${JSON.stringify(cols)},"rows":[`);
  }
  row(buf: Buffer, start: number): boolean {
    const out = this.out;
    const kinds = this.#kinds;
    out.str(this.#rows++ ? ',[' : '[');
    forEachField(buf, start, (i, s, e) => {
      if (i) out.byte(COMMA);
      if (s < 0) return out.str('null');
      const k = kinds[i];
      if (k === 1) out.str(buf[s] === 0x74 ? 'true' : 'false');
      else if (k === 3) out.bytes(buf, s, e);
      else if (k === 2) {
        const t = buf.toString('latin1', s, e);
        out.str(/^-?\d/.test(t) ? t : JSON.stringify(t));
      } else out.str(JSON.stringify(buf.toString('utf8', s, e)));
    });
    out.byte(0x5d);
    return out.maybeFlush(this.resume);
  }
  end(_stmt: SplitStatement, _i: number, r: StatementResult, exit: number): void {
    if (this.cols.length) this.out.str(`],"row_count":${this.#rows}`);
    if (r.command) this.out.str(`,"command":${JSON.stringify(r.command)}`);
    if (r.error) {
      const { severity, sqlstate, message, detail, hint, routine } = r.error;
      this.out.str(`,"error":${JSON.stringify({ severity, sqlstate, message, detail, hint, routine })},"exit_code":${exit}`);
    }
    this.out.str('}');
    this.#open = false;
    if (this.#lines) this.out.byte(NL);
    this.out.flush();
  }
  override finish(interrupted?: string): Promise<void> {
    if (this.#open) {
      // cut off mid-statement (held for review, lease ended, cancelled): still valid JSON
      if (this.cols.length) this.out.str(`],"row_count":${this.#rows}`);
      this.out.str(`,"error":${JSON.stringify({ message: interrupted ?? 'interrupted' })},"incomplete":true}`);
      if (this.#lines) this.out.byte(NL);
      this.#open = false;
    }
    if (!this.#lines) this.out.str(this.#count ? '\n]\n' : ']\n');
    return super.finish();
  }
}

export function createWriter(format: Format, s: OutputStreams): ResultWriter & { finish(interrupted?: string): Promise<void> } {
  switch (format) {
    case 'csv': return new CsvWriter(s);
    case 'table': return new TableWriter(s);
    case 'json': return new JsonWriter(s, false);
    case 'ndjson': return new JsonWriter(s, true);
  }
}
