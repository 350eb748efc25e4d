/**
 * The masking stage on the target → client path: decides per result column what masking applies
 * (a `ResultShape`) and rewrites DataRow, CopyData, ErrorResponse/NoticeResponse and
 * NotificationResponse messages. A message that needs no change is reported as unchanged (null)
 * so the engine forwards the original bytes.
 *
 * Rules enforced:
 * - a column is masked when its output name matches a column rule, when it is a plain reference
 *   to a table column whose real name matches (table OID + attnum from RowDescription), or when
 *   the statement's output derivation says it comes from a masked column;
 * - masked values of non-text types become NULL, never a string of the wrong type;
 * - binary-format values of a masked column become NULL; binary text values get the detectors
 *   (their bytes are the UTF-8 text);
 * - content detectors run on every other text value;
 * - error and notice texts (message, detail, hint, context, internal query) and notification
 *   payloads go through the text masker; a "Key (col)=(value)" detail naming a masked column
 *   and a "Failing row contains (...)" detail are redacted whole, since they echo row values.
 */
import type { Field } from 'pg-protocol/dist/messages.js';
import type { Catalog } from './catalog.ts';
import type { Derivation, MaskFns } from './policy.ts';
import { B, buildDataRow, buildErrorFields, buildMessage, buildNotification, parseErrorFields, readCString } from './messages.ts';

export interface ResultShape {
  names: string[];
  typeOids: number[];
  /** column rule applies: whole value replaced */
  masked: boolean[];
  /** content detectors apply */
  detect: boolean[];
  /** any column needs a look at all */
  needsWork: boolean;
}

/** Types whose values cannot carry the detectors' patterns (bool, floats, dates, times, uuid, ...). */
const NO_DETECT = new Set([16, 21, 26, 700, 701, 1082, 1083, 1114, 1184, 1186, 1266, 2950, 3220]);
/** Types whose binary representation is their UTF-8 text. */
const TEXTUAL = new Set([18, 19, 25, 114, 142, 705, 1042, 1043]);

export function buildShape(fields: readonly Field[], mask: MaskFns, catalog: Catalog | null, derivation: Derivation | null): ResultShape {
  const n = fields.length;
  const shape: ResultShape = { names: new Array(n), typeOids: new Array(n), masked: new Array(n), detect: new Array(n), needsWork: false };
  const deriv = derivation && derivation.length === n ? derivation : null;
  for (let i = 0; i < n; i++) {
    const f = fields[i];
    shape.names[i] = f.name;
    shape.typeOids[i] = f.dataTypeID;
    let masked = false;
    if (mask.columnRules) {
      masked = mask.columnMatches(f.name) || deriv?.[i] === 'masked';
      if (!masked && f.tableID !== 0 && f.columnID > 0) {
        // a table we could not resolve is masked: fail closed
        if (!catalog?.has(f.tableID)) masked = true;
        else {
          const real = catalog.columnName(f.tableID, f.columnID);
          masked = real !== undefined && mask.columnMatches(real);
        }
      }
    }
    shape.masked[i] = masked;
    shape.detect[i] = !masked && mask.detectors && !NO_DETECT.has(f.dataTypeID);
    if (masked || shape.detect[i]) shape.needsWork = true;
  }
  return shape;
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
export function maskDataRow(buf: Buffer, start: number, end: number, shape: ResultShape | null, formats: readonly number[] | undefined, mask: MaskFns, counter: { masked: number }): Buffer | null {
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
      if (failClosed) replacement = null;
      else if (shape.masked[i]) {
        replacement = columnFormat(formats, i) === 1 ? null : mask.wholeValue(buf.toString('utf8', vStart, pos), shape.typeOids[i]);
      } else if (shape.detect[i] && len > 0) {
        const binary = columnFormat(formats, i) === 1;
        if (!binary || TEXTUAL.has(shape.typeOids[i])) {
          const v = buf.toString('utf8', vStart, pos);
          const m = mask.content(v);
          if (m !== v) replacement = m;
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
      counter.masked++;
    } else if (out) {
      out[i] = len < 0 ? null : buf.subarray(vStart, pos);
    }
  }
  return out ? buildDataRow(out) : null;
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

const KEY_DETAIL = /^Key \((.*)\)=\((.*)\)(.*)$/s;
const FAILING_ROW = /^Failing row contains \(/;

/** Masks ErrorResponse / NoticeResponse texts; null when unchanged. */
export function maskErrorMessage(buf: Buffer, start: number, end: number, mask: MaskFns, counter: { masked: number }): Buffer | null {
  const fields = parseErrorFields(buf, start, end);
  let changed = false;
  for (const f of fields) {
    const [code, value] = f;
    // M message, D detail, H hint, W context, q internal query
    if (code !== 0x4d && code !== 0x44 && code !== 0x48 && code !== 0x57 && code !== 0x71) continue;
    let v = value;
    if (code === 0x44 && mask.columnRules) {
      const k = KEY_DETAIL.exec(v);
      if (k && k[1].split(',').some((c) => mask.columnMatches(c.trim().replace(/^"|"$/g, '')))) v = `Key (${k[1]})=(masked)${k[3]}`;
      else if (FAILING_ROW.test(v)) v = 'Failing row contains (masked).';
    }
    v = mask.text(v);
    if (v !== value) { f[1] = v; changed = true; counter.masked++; }
  }
  return changed ? buildErrorFields(buf[start], fields) : null;
}

export function maskNotification(buf: Buffer, start: number, end: number, mask: MaskFns, counter: { masked: number }): Buffer | null {
  const pid = buf.readInt32BE(start + 5);
  const [channel, p] = readCString(buf, start + 9, end);
  const [payload] = readCString(buf, p, end);
  const m = mask.text(payload);
  if (m === payload) return null;
  counter.masked++;
  return buildNotification(pid, channel, m);
}

/** Masks one CopyData message of a text/csv COPY TO STDOUT; null when unchanged. */
export function maskCopyData(buf: Buffer, start: number, end: number, columnsMasked: boolean[] | null, mask: MaskFns, counter: { masked: number }): Buffer | null {
  const line = buf.toString('utf8', start + 5, end);
  const m = mask.copyLine(line, columnsMasked);
  if (m === line) return null;
  counter.masked++;
  return buildMessage(B.CopyData, Buffer.from(m, 'utf8'));
}
