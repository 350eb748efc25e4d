/**
 * COPY ... TO STDOUT rows (one CopyData message = one row). Column-rule columns are masked
 * whole (character by character: COPY carries no type OIDs, and a NULL could break a NOT NULL
 * re-import), every other field goes through the content detectors. Escapes stay valid: a
 * field holding escapes is decoded, masked and re-encoded; masks never write a delimiter,
 * quote, backslash or newline. Binary-format COPY is not handled here (see README).
 */
import type { MaskCounter } from './detectors.ts';
import { type CompiledMasking, maskContent } from './masking.ts';
import { maskChars } from './whole-value.ts';

export interface CopyTextOptions {
  /** COPY's DELIMITER; default tab */
  delimiter?: string;
  /** COPY's NULL string; default `\N` */
  null?: string;
}

export interface CopyCsvOptions {
  /** default `,` */
  delimiter?: string;
  /** default `"` */
  quote?: string;
  /** default: the quote character */
  escape?: string;
  /** default: the empty unquoted string */
  null?: string;
}

// delimiters no detector can match across: a whole-row pass equals a per-field pass
const SAFE_DELIMITERS = new Set(['\t', ',', '|', ';']);

function splitEol(line: string): [string, string] {
  if (line.endsWith('\r\n')) return [line.slice(0, -2), '\r\n'];
  if (line.endsWith('\n')) return [line.slice(0, -1), '\n'];
  return [line, ''];
}

const TEXT_ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

function decodeCopyText(field: string): string {
  let out = '';
  for (let i = 0; i < field.length; i++) {
    const ch = field[i];
    if (ch !== '\\' || i + 1 >= field.length) { out += ch; continue; }
    const nx = field[++i];
    if (nx in TEXT_ESCAPES) out += TEXT_ESCAPES[nx];
    else if (nx >= '0' && nx <= '7') {
      let oct = nx;
      while (oct.length < 3 && field[i + 1] >= '0' && field[i + 1] <= '7') oct += field[++i];
      out += String.fromCharCode(parseInt(oct, 8));
    } else if (nx === 'x' && /[0-9a-fA-F]/.test(field[i + 1] ?? '')) {
      let hex = field[++i];
      if (/[0-9a-fA-F]/.test(field[i + 1] ?? '')) hex += field[++i];
      out += String.fromCharCode(parseInt(hex, 16));
    } else out += nx;
  }
  return out;
}

function encodeCopyText(value: string, delimiter: string): string {
  let out = '';
  for (const ch of value) {
    if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t' && delimiter === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (ch === '\v') out += '\\v';
    else if (ch === delimiter) out += `\\${ch}`;
    else out += ch;
  }
  return out;
}

/**
 * Masks one COPY text-format row. `columnsMasked[i]` is true when column i matched a column
 * rule (null: none did). Same instance back when nothing changed.
 */
export function maskCopyLine(m: CompiledMasking, line: string, columnsMasked: readonly boolean[] | null, opts: CopyTextOptions = {}, counter?: MaskCounter): string {
  if (!m.active) return line;
  const delimiter = opts.delimiter ?? '\t';
  const nullStr = opts.null ?? '\\N';
  const [body, eol] = splitEol(line);
  if (body === '\\.') return line;
  const anyColumn = columnsMasked !== null && columnsMasked.includes(true);
  if (!anyColumn && SAFE_DELIMITERS.has(delimiter) && !body.includes('\\')) {
    const masked = maskContent(m, body, counter);
    return masked === body ? line : masked + eol;
  }
  const fields = body.split(delimiter);
  // a delimiter escaped as `\<delimiter>` belongs to the field: re-join such splits
  for (let i = 0; i < fields.length - 1; i++) {
    let bs = 0;
    for (let j = fields[i].length - 1; j >= 0 && fields[i][j] === '\\'; j--) bs++;
    if (bs % 2 === 1) { fields.splice(i, 2, fields[i] + delimiter + fields[i + 1]); i--; }
  }
  let changed = false;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    if (f === nullStr) continue;
    const hasEscape = f.includes('\\');
    const value = hasEscape ? decodeCopyText(f) : f;
    let masked: string;
    if (columnsMasked?.[i]) {
      masked = maskChars(value);
      if (counter && masked !== value) counter.masked++;
    } else masked = maskContent(m, value, counter);
    if (masked === value) continue;
    fields[i] = hasEscape || masked.includes(delimiter) ? encodeCopyText(masked, delimiter) : masked;
    changed = true;
  }
  return changed ? fields.join(delimiter) + eol : line;
}

interface CsvField { value: string; quoted: boolean }

function parseCsvRow(body: string, delimiter: string, quote: string, escape: string): CsvField[] {
  const fields: CsvField[] = [];
  let i = 0;
  const n = body.length;
  for (;;) {
    if (body[i] === quote) {
      let value = '';
      let j = i + 1;
      while (j < n) {
        const ch = body[j];
        if (escape !== quote && ch === escape && (body[j + 1] === quote || body[j + 1] === escape)) { value += body[j + 1]; j += 2; continue; }
        if (ch === quote) {
          if (escape === quote && body[j + 1] === quote) { value += quote; j += 2; continue; }
          j++;
          break;
        }
        value += ch;
        j++;
      }
      // PostgreSQL never writes text between a closing quote and the delimiter; keep any
      // as part of the value so nothing is silently dropped
      const d = body.indexOf(delimiter, j);
      const end = d < 0 ? n : d;
      fields.push({ value: value + body.slice(j, end), quoted: true });
      if (d < 0) break;
      i = d + delimiter.length;
    } else {
      const d = body.indexOf(delimiter, i);
      const end = d < 0 ? n : d;
      fields.push({ value: body.slice(i, end), quoted: false });
      if (d < 0) break;
      i = d + delimiter.length;
    }
  }
  return fields;
}

function encodeCsv(f: CsvField, delimiter: string, quote: string, escape: string, nullStr: string): string {
  const needs = f.quoted || f.value === nullStr || f.value.includes(delimiter) || f.value.includes(quote) || f.value.includes('\n') || f.value.includes('\r') || (escape !== quote && f.value.includes(escape));
  if (!needs) return f.value;
  let out = quote;
  for (const ch of f.value) {
    if (ch === quote || (escape !== quote && ch === escape)) out += escape + ch;
    else out += ch;
  }
  return out + quote;
}

/** Masks one COPY CSV-format row; the CSV counterpart of `maskCopyLine`. */
export function maskCsvLine(m: CompiledMasking, line: string, columnsMasked: readonly boolean[] | null, opts: CopyCsvOptions = {}, counter?: MaskCounter): string {
  if (!m.active) return line;
  const delimiter = opts.delimiter ?? ',';
  const quote = opts.quote ?? '"';
  const escape = opts.escape ?? quote;
  const nullStr = opts.null ?? '';
  const [body, eol] = splitEol(line);
  const anyColumn = columnsMasked !== null && columnsMasked.includes(true);
  if (!anyColumn && SAFE_DELIMITERS.has(delimiter) && quote === '"' && escape === quote) {
    const masked = maskContent(m, body, counter);
    return masked === body ? line : masked + eol;
  }
  const fields = parseCsvRow(body, delimiter, quote, escape);
  let changed = false;
  const out: string[] = [];
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    if (!f.quoted && f.value === nullStr) { out.push(f.value); continue; }
    let masked: string;
    if (columnsMasked?.[i]) {
      masked = maskChars(f.value);
      if (counter && masked !== f.value) counter.masked++;
    } else masked = maskContent(m, f.value, counter);
    if (masked !== f.value) changed = true;
    out.push(encodeCsv({ value: masked, quoted: f.quoted }, delimiter, quote, escape, nullStr));
  }
  return changed ? out.join(delimiter) + eol : line;
}
