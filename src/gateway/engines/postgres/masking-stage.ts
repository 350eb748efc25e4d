/**
 * The masking stage on the target → client path: decides per result column what masking applies
 * (a `ResultShape`) and rewrites DataRow, CopyData, ErrorResponse/NoticeResponse and
 * NotificationResponse messages. A message that needs no change is reported as unchanged (null)
 * so the engine forwards the original bytes.
 *
 * Rules enforced:
 * - a column is masked when its output name matches a column rule, when it is a plain reference
 *   to a table column whose real name matches (table OID + attnum from RowDescription), when it
 *   is a column of a view (or materialized view) whose definition derives it from a masked
 *   column, or when the statement's output derivation says it comes from a masked column
 *   (views named in the statement expanded the same way);
 * - COPY TO STDOUT: the COPY's query is described on the catalog's side connection and its
 *   columns judged like a result's; when that cannot be done, every field gets the column rules;
 * - masked values of non-text types become NULL, never a string of the wrong type;
 * - binary-format values of a masked column become NULL; binary text values get the detectors
 *   (their bytes are the UTF-8 text);
 * - content detectors run on every other value, type-aware (a card number found in an int8
 *   makes it NULL; json stays valid json);
 * - error and notice texts (message, detail, hint, context, internal query), notification
 *   payloads and ParameterStatus values go through the text masker, which also masks the values
 *   PostgreSQL quotes in "Key (col)=(value)" and "Failing row contains (...)" details; after a
 *   statement that touched a masked column (lineage.ts), they are masked as strongly as a
 *   column rule masks a value (issue 10).
 */
import type { Field } from 'pg-protocol/dist/messages.js';
import type { Catalog } from './catalog.ts';
import type { CopyFormat, Derivation, MaskCounter, MaskFns, Screen } from './policy.ts';
import { B, buildDataRow, buildErrorFields, buildMessage, buildNotification, parameterStatus, parseErrorFields, readCString } from './messages.ts';

export interface ResultShape {
  names: string[];
  typeOids: number[];
  /** column rule applies: whole value replaced */
  masked: boolean[];
  /** content detectors apply */
  detect: boolean[];
  /** any column needs a look at all */
  needsWork: boolean;
  /** the catalog generation the plan was built on (rebuilt when it changes) */
  gen: number;
  /** the statement's SQL was consulted: the plan holds for this text only, not for any with the same columns */
  usedDerivation: boolean;
  /** some table was not in the catalog (its columns masked, fail closed): not worth reusing */
  unresolved: boolean;
}

/** Types whose text form cannot carry a detector's match (bool, int2/int4, oid, dates, times, uuid). */
const NO_DETECT = new Set([16, 21, 23, 26, 1082, 1083, 1114, 1184, 1186, 1266, 2950]);
/** Types whose binary representation is their UTF-8 text. */
const TEXTUAL = new Set([18, 19, 25, 114, 142, 705, 1042, 1043]);

/**
 * `derivation` is asked for only when some column is not a plain table column under its own
 * name: a plain column reference is resolved exactly through the catalog, so statements that
 * select only table columns (most OLTP queries) are never parsed for masking. An aliased table
 * column (output name differs from the catalog's name) is also checked against the
 * derivation: it reads the SQL, so a column renamed since the catalog was loaded is still
 * caught under the name the statement used (see catalog.ts).
 */
export function buildShape(fields: readonly Field[], mask: MaskFns, catalog: Catalog | null, derivation: () => Derivation | null): ResultShape {
  const n = fields.length;
  const shape: ResultShape = { names: new Array(n), typeOids: new Array(n), masked: new Array(n), detect: new Array(n), needsWork: false, gen: catalog?.generation ?? 0, usedDerivation: false, unresolved: false };
  let deriv: Derivation | null | undefined;
  const derived = (i: number) => {
    if (deriv === undefined) { shape.usedDerivation = true; deriv = mapDerivation(derivation(), n); }
    return deriv?.[i] === 'masked';
  };
  for (let i = 0; i < n; i++) {
    const f = fields[i];
    shape.names[i] = f.name;
    shape.typeOids[i] = f.dataTypeID;
    let masked = false;
    if (mask.columnRules) {
      masked = mask.columnMatches(f.name);
      if (!masked && f.tableID !== 0 && f.columnID > 0) {
        const view = catalog?.view(f.tableID);
        // a table we could not resolve is masked: fail closed (also when the views are not
        // known yet: it may be one)
        if (!catalog?.has(f.tableID) || catalog.relations.unknown) { masked = true; shape.unresolved = true; }
        else if (view) {
          // the view's own column: masked when its definition derives it from a masked column
          const cols = mask.viewColumns(view, catalog.relations);
          if (!cols) shape.unresolved = true;
          masked = cols?.[f.columnID - 1] !== false || (catalog.columnName(f.tableID, f.columnID) !== f.name && derived(i));
        } else {
          const real = catalog.columnName(f.tableID, f.columnID);
          masked = (real !== undefined && mask.columnMatches(real)) || (real !== f.name && derived(i));
        }
      } else if (!masked) masked = derived(i);
    }
    shape.masked[i] = masked;
    shape.detect[i] = !masked && mask.detectors && !NO_DETECT.has(f.dataTypeID);
    if (masked || shape.detect[i]) shape.needsWork = true;
  }
  return shape;
}

/**
 * Spreads outputDerivation's entries over n result columns: an 'unknown' entry is a star that
 * expands to zero or more columns, so entries before the first star map from the start and
 * entries after the last star from the end; columns in between stay 'unknown' (judged by their
 * names and table columns). Null when the counts cannot fit.
 */
export function mapDerivation(d: Derivation | null, n: number): Derivation | null {
  if (!d) return null;
  const first = d.indexOf('unknown');
  if (first < 0) return d.length === n ? d : null;
  const last = d.lastIndexOf('unknown');
  const tail = d.length - last - 1;
  if (first + tail > n) return null;
  const out: Derivation = new Array(n).fill('unknown');
  for (let i = 0; i < first; i++) out[i] = d[i];
  for (let i = 0; i < tail; i++) out[n - tail + i] = d[last + 1 + i];
  return out;
}

const COPY_QUERY = /^\s*copy\s*\(([\s\S]*)\)\s*to\s+stdout\b/i;
const COPY_RELATION = /^\s*copy\s+((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)\s*(?:\(([^)]*)\))?\s+to\s+stdout\b/i;

/**
 * Per field of the rows of a text/csv `COPY ... TO STDOUT`: whether the column rules apply.
 * CopyOutResponse gives only a column count, so the COPY's query is described on the side
 * connection (`Catalog.describe`: Parse + Describe, nothing runs) and its RowDescription
 * judged exactly like a SELECT's: table OID + attnum, views, derivation. Describing is
 * preferred to expanding `*` in the derivation because it also resolves the columns of
 * views, functions and `t.*` the way the server does. `COPY table [(cols)]` is described as
 * `SELECT cols FROM table` (without a list: the columns COPY writes, generated ones excluded).
 * When the query cannot be described there (a temporary table, a namesake in another schema),
 * the statement's derivation is used if it has no star; otherwise, and for a COPY text this
 * cannot read (several statements, unusual syntax), every field is masked.
 */
export async function copyColumnsMasked(text: string, ncols: number, mask: MaskFns, catalog: Catalog, derivation: (sql: string) => Derivation | null): Promise<boolean[]> {
  const all = new Array<boolean>(ncols).fill(true);
  let sql: string | null = null;
  const q = COPY_QUERY.exec(text);
  if (q) sql = q[1];
  else {
    const r = COPY_RELATION.exec(text);
    const cols = r?.[2]?.trim() ? r[2] : r ? await catalog.copyColumns(r[1]) : null;
    if (r && cols) sql = `select ${cols} from ${r[1]}`;
  }
  if (sql === null) return all;
  const fields = await catalog.describe(sql);
  if (fields && fields.length === ncols) {
    await catalog.prepare(fields, sql);
    return buildShape(fields, mask, catalog, () => derivation(sql)).masked;
  }
  await catalog.prepare([], sql, true);
  const d = derivation(sql);
  if (d && d.length === ncols && !d.includes('unknown')) return d.map((x) => x !== 'plain');
  return all;
}

/** Format of result column i given Bind's result-format codes. */
export function columnFormat(formats: readonly number[] | undefined, i: number): number {
  if (!formats || formats.length === 0) return 0;
  return formats.length === 1 ? formats[0] : (formats[i] ?? 0);
}

/**
 * Rewrites one DataRow; returns null when nothing changed. `counter.masked` is increased by the
 * number of values replaced. Without a shape every value becomes NULL (fail closed).
 */
export function maskDataRow(buf: Buffer, start: number, end: number, shape: ResultShape | null, formats: readonly number[] | undefined, mask: MaskFns, counter: MaskCounter, screen: Screen | null = null): Buffer | null {
  const n = buf.readInt16BE(start + 5);
  let pos = start + 7;
  let out: Array<string | Buffer | null> | null = null;
  const failClosed = !shape || shape.names.length !== n;
  for (let i = 0; i < n; i++) {
    if (pos + 4 > end) throw new RangeError('DataRow shorter than its contents');
    const len = buf.readInt32BE(pos);
    pos += 4;
    const vStart = pos;
    if (len > 0) {
      pos += len;
      if (pos > end) throw new RangeError('DataRow shorter than its contents');
    }
    let replacement: string | null | undefined; // undefined = keep
    if (len >= 0) {
      if (failClosed) { replacement = null; counter.masked++; }
      else if (shape.masked[i]) {
        replacement = columnFormat(formats, i) === 1 ? null : mask.wholeValue(buf.toString('utf8', vStart, pos), shape.typeOids[i]);
        counter.masked++;
      } else if (shape.detect[i] && len > 0) {
        const type = shape.typeOids[i];
        if (columnFormat(formats, i) === 0) {
          // most values cannot hold a match: tell from the bytes, without a string (bytea's
          // text form is hex of other bytes: always decoded)
          if (type === 17 || screen === null || screen.mayMatch(buf, vStart, pos)) {
            const v = buf.toString('utf8', vStart, pos);
            const m = mask.value(v, type, counter);
            if (m !== v) replacement = m;
          }
        } else if (TEXTUAL.has(type)) {
          // binary text values are their UTF-8 bytes
          const v = buf.toString('utf8', vStart, pos);
          const m = mask.text(v, counter);
          if (m !== v) replacement = m;
        } else {
          // other binary values: inspect their text form; NULL when a detector matches or when
          // the type cannot be decoded here (fail closed)
          const text = binaryAsText(buf, vStart, pos, type);
          if (text === null || mask.value(text, type, counter) !== text) {
            replacement = null;
            if (text === null) counter.masked++;
          }
        }
      }
    }
    if (replacement !== undefined) {
      if (!out) {
        out = new Array(n);
        // earlier values unchanged: re-walk them as views
        let p = start + 7;
        for (let j = 0; j < i; j++) {
          const l = buf.readInt32BE(p); p += 4;
          out[j] = l < 0 ? null : buf.subarray(p, p + l);
          if (l > 0) p += l;
        }
      }
      out[i] = replacement;
    } else if (out) {
      out[i] = len < 0 ? null : buf.subarray(vStart, pos);
    }
  }
  return out ? buildDataRow(out) : null;
}

/**
 * The text form of a binary-format value, for the detectors: int8, float4/8, numeric, jsonb,
 * bytea (as latin1). Null when the type is not decoded here.
 */
export function binaryAsText(buf: Buffer, start: number, end: number, type: number): string | null {
  const len = end - start;
  switch (type) {
    case 20: return len === 8 ? buf.readBigInt64BE(start).toString() : null;
    case 700: return len === 4 ? String(buf.readFloatBE(start)) : null;
    case 701: return len === 8 ? String(buf.readDoubleBE(start)) : null;
    case 1700: return len >= 8 ? numericText(buf, start, end) : null;
    case 3802: return len >= 1 && buf[start] === 1 ? buf.toString('utf8', start + 1, end) : null;
    case 17: return buf.toString('latin1', start, end);
    default: return null;
  }
}

/** numeric's binary form: ndigits, weight, sign, dscale, then base-10000 digits. */
function numericText(buf: Buffer, start: number, end: number): string | null {
  const ndigits = buf.readInt16BE(start);
  const weight = buf.readInt16BE(start + 2);
  const sign = buf.readUInt16BE(start + 4);
  if (sign === 0xc000) return 'NaN';
  if (start + 8 + 2 * ndigits > end) return null;
  let int = '';
  let frac = '';
  for (let i = 0; i < ndigits; i++) {
    const d = buf.readInt16BE(start + 8 + 2 * i);
    const s = i === 0 && i <= weight ? String(d) : String(d).padStart(4, '0');
    if (i <= weight) int += s; else frac += s;
  }
  for (let i = ndigits; i <= weight; i++) int += '0000';
  if (weight < -1) frac = '0000'.repeat(-1 - weight) + frac;
  return (sign === 0x4000 ? '-' : '') + (int || '0') + (frac ? '.' + frac : '');
}

/** Reads a DataRow's values as strings for the recording (binary values as \x hex). */
export function rowValues(buf: Buffer, start: number, end: number, formats: readonly number[] | undefined): Array<string | null> {
  const n = buf.readInt16BE(start + 5);
  const vals = new Array<string | null>(n);
  let pos = start + 7;
  for (let i = 0; i < n && pos + 4 <= end; i++) {
    const len = buf.readInt32BE(pos);
    pos += 4;
    if (len < 0) { vals[i] = null; continue; }
    vals[i] = columnFormat(formats, i) === 1 ? '\\x' + buf.toString('hex', pos, pos + len) : buf.toString('utf8', pos, pos + len);
    pos += len;
  }
  return vals;
}

/** Masks ErrorResponse / NoticeResponse texts; null when unchanged. */
// a line of an error's context (W) that names code, never a value
const SAFE_CONTEXT = /^(?:PL\/pgSQL function [^\n"]* line \d+ at [A-Za-z ]+|SQL function "[^"\n]*"(?: statement \d+| during [a-z ]+)?|PL\/pgSQL function [^\n"]*|during [a-z ]+)$/;
// the user's own text: RAISE (any level, any SQLSTATE it chose), ASSERT's message
const USER_ROUTINES = new Set(['exec_stmt_raise', 'exec_stmt_assert']);

/**
 * Masks one ErrorResponse/NoticeResponse: M message, D detail, H hint, W context, q internal
 * query. `tainted` (issue 10): the message answers a statement that touched a masked column,
 * so values in it are masked as a column rule masks them: the user's own text (RAISE/ASSERT,
 * details, hints, internal queries, context lines that are not code locations) entirely, a
 * server message's quoted values and digit/`@` tokens; the SQLSTATE and the other fields stay.
 * Returns the rebuilt message (null when unchanged) and the message text as masked (for the
 * recording).
 */
export function maskErrorMessage(buf: Buffer, start: number, end: number, mask: MaskFns, counter: MaskCounter, tainted = false): { bytes: Buffer | null; message: string | undefined } {
  const fields = parseErrorFields(buf, start, end);
  let changed = false;
  let message: string | undefined;
  let userText = false;
  if (tainted) for (const [code, value] of fields) if (code === 0x52 && USER_ROUTINES.has(value)) userText = true;
  for (const f of fields) {
    const [code, value] = f;
    if (code !== 0x4d && code !== 0x44 && code !== 0x48 && code !== 0x57 && code !== 0x71) continue;
    let v: string;
    if (!tainted) v = mask.text(value, counter);
    else if (code === 0x4d) v = mask.taintedText(value, userText, counter);
    else if (code === 0x57) v = value.split('\n').map((line) => (SAFE_CONTEXT.test(line) ? line : mask.taintedText(line, !line.startsWith('SQL statement "'), counter))).join('\n');
    else v = mask.taintedText(value, true, counter);
    if (code === 0x4d) message = v;
    if (v !== value) { f[1] = v; changed = true; }
  }
  return { bytes: changed ? buildErrorFields(buf[start], fields) : null, message };
}

/**
 * Masks one NotificationResponse payload: detectors; entirely when our own backend sent it
 * (`ownPid`) while a statement that touched a masked column is in its transaction.
 */
export function maskNotification(buf: Buffer, start: number, end: number, mask: MaskFns, counter: MaskCounter, tainted = false, ownPid = 0): Buffer | null {
  const pid = buf.readInt32BE(start + 5);
  const [channel, p] = readCString(buf, start + 9, end);
  const [payload] = readCString(buf, p, end);
  const m = tainted && pid === ownPid ? mask.taintedText(payload, true, counter) : mask.text(payload, counter);
  if (m === payload) return null;
  return buildNotification(pid, channel, m);
}

/** Masks one ParameterStatus value (see MaskFns.parameterStatus); null when unchanged. */
export function maskParameterStatusMessage(buf: Buffer, start: number, end: number, mask: MaskFns, counter: MaskCounter, tainted: boolean): Buffer | null {
  const [name, p] = readCString(buf, start + 5, end);
  const [value] = readCString(buf, p, end);
  const m = mask.parameterStatus(name, value, tainted, counter);
  return m === value ? null : parameterStatus(name, m);
}

/** Masks one CopyData message of a text/csv COPY TO STDOUT; null when unchanged. */
export function maskCopyData(buf: Buffer, start: number, end: number, columnsMasked: boolean[] | null, format: CopyFormat, mask: MaskFns, counter: MaskCounter, screen: Screen | null = null): Buffer | null {
  // a row with no column-rule field that no detector can match passes as its bytes
  if (screen !== null && (columnsMasked === null || !columnsMasked.includes(true)) && !screen.mayMatch(buf, start + 5, end)) return null;
  const line = buf.toString('utf8', start + 5, end);
  const m = mask.copyLine(line, columnsMasked, format, counter);
  if (m === line) return null;
  return buildMessage(B.CopyData, Buffer.from(m, 'utf8'));
}
