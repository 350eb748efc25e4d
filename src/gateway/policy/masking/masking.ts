/**
 * Masking policy: "masking never lets a raw sensitive value reach the client or the recording".
 *
 * - compile once per connection config (`compileMasking`), then per value:
 * - a result column whose name matches a column rule → `maskWholeValue` (nothing survives);
 * - every other value → `maskValue` / `maskContent` (content detectors mask only what they find);
 * - free text (ErrorResponse/Notice fields, NOTIFY payloads) → `maskText`.
 *
 * Hot path: a value is scanned once for digits, '@' and '.', and only the detectors that could
 * possibly match it run; unchanged values come back as the same string instance.
 */
import type { MaskingConfig } from '../../config/schema.ts';
import { DETECTORS } from '../../config/schema.ts';
import { HoopError } from '../../../errors.ts';
import {
  type MaskCounter, maskCards, maskEmails, maskIbans, maskIpv4s, maskPhones, maskSecrets, maskSsns,
} from './detectors.ts';
import { TypeClass, classifyType } from './pg-types.ts';
import { maskChars, maskWholeValue } from './whole-value.ts';

export type { MaskCounter };

export interface CompiledMasking {
  /** false when the connection has no rules: the engine can skip masking entirely */
  readonly active: boolean;
  /** at least one column rule (the engine needs column names only then) */
  readonly hasColumnRules: boolean;
  /** at least one content detector */
  readonly hasDetectors: boolean;
}

interface Compiled extends CompiledMasking {
  readonly columns: RegExp | null;
  readonly email: boolean;
  readonly card: boolean;
  readonly ssn: boolean;
  readonly phone: boolean;
  readonly iban: boolean;
  readonly ipv4: boolean;
  readonly secret: boolean;
}

function globToRegExpSource(glob: string): string {
  let src = '';
  for (const ch of glob) {
    if (ch === '*') src += '.*';
    else if (ch === '?') src += '.';
    else src += /[\\^$.*+?()[\]{}|/]/.test(ch) ? `\\${ch}` : ch;
  }
  return src;
}

/** Compiles a connection's masking rules once; `undefined` (no `masking:` key) gives an inactive policy. */
export function compileMasking(cfg: MaskingConfig | undefined): CompiledMasking {
  const columns = cfg?.columns ?? [];
  const detectors = new Set<string>(cfg?.detectors ?? []);
  for (const d of detectors) {
    if (!(DETECTORS as readonly string[]).includes(d)) {
      throw new HoopError('config_invalid', `masking.detectors: unknown detector ${JSON.stringify(d)} (known: ${DETECTORS.join(', ')})`, { status: 500, expose: true });
    }
  }
  const hasColumnRules = columns.length > 0;
  const compiled: Compiled = {
    active: hasColumnRules || detectors.size > 0,
    hasColumnRules,
    hasDetectors: detectors.size > 0,
    columns: hasColumnRules ? new RegExp(`^(?:${columns.map(globToRegExpSource).join('|')})$`, 'iu') : null,
    email: detectors.has('email'),
    card: detectors.has('credit_card'),
    ssn: detectors.has('ssn'),
    phone: detectors.has('phone'),
    iban: detectors.has('iban'),
    ipv4: detectors.has('ipv4'),
    secret: detectors.has('secret'),
  };
  return Object.freeze(compiled);
}

/** Case-insensitive glob match (`*` any run, `?` one character) of a result column name. */
export function columnMatches(m: CompiledMasking, columnName: string): boolean {
  const re = (m as Compiled).columns;
  return re !== null && re.test(columnName);
}

/**
 * Runs the content detectors over a text value. Returns the same string instance when nothing
 * matched; when `counter` is given, adds the number of masked matches to `counter.masked`.
 */
export function maskContent(m: CompiledMasking, value: string, counter?: MaskCounter): string {
  const c = m as Compiled;
  // the shortest detectable values are `a@b.co` and `1.1.1.1`
  if (!c.hasDetectors || value.length < 6) return value;
  // one pass of counts decides which detectors could match at all
  let digits = 0;
  let letters = 0;
  let dots = 0;
  let dashes = 0;
  let at = false;
  let keyValue = false;
  let run = 0; // current run of [A-Za-z0-9_]
  let maxRun = 0;
  let digitRun = 0; // digits in the current run of digit groups joined by single spaces/dashes
  let maxDigitRun = 0;
  let prevDigit = false;
  const len = value.length;
  for (let i = 0; i < len; i++) {
    const ch = value.charCodeAt(i);
    if (ch >= 48 && ch <= 57) {
      digits++;
      run++;
      if (++digitRun > maxDigitRun) maxDigitRun = digitRun;
      prevDigit = true;
      continue;
    }
    if (!(prevDigit && (ch === 32 || ch === 45))) digitRun = 0;
    prevDigit = false;
    const lower = ch | 32;
    if (lower >= 97 && lower <= 122) { letters++; run++; continue; }
    if (ch === 95) { run++; continue; }
    if (run > maxRun) maxRun = run;
    run = 0;
    if (ch === 64) at = true;
    else if (ch === 46) dots++;
    else if (ch === 45) dashes++;
    else if (ch === 61 || ch === 58) keyValue = true;
  }
  if (run > maxRun) maxRun = run;
  // order matters: secrets first (a URL password looks like an email's local part), IBAN
  // before cards (its digits can pass Luhn), SSN before phone (`012-34-5678` fits both)
  let out = value;
  // every token format has a 16+ character word; key=value, URLs and PEM blocks have = : or -----
  if (c.secret && len >= 10 && (maxRun >= 16 || (keyValue && letters >= 3) || dashes >= 5)) out = maskSecrets(out, counter);
  if (c.iban && digits >= 2 && letters >= 2 && len >= 15) out = maskIbans(out, counter);
  if (c.card && maxDigitRun >= 13) out = maskCards(out, counter);
  if (c.ssn && maxDigitRun >= 9 && dashes >= 2) out = maskSsns(out, counter);
  if (c.phone && digits >= 8) out = maskPhones(out, counter);
  if (c.ipv4 && digits >= 4 && dots >= 3) out = maskIpv4s(out, counter);
  if (c.email && at) out = maskEmails(out, counter);
  return out;
}

/**
 * Masks one JSON document so it stays valid JSON: detectors run on each string (decoded when
 * it holds escapes) and each number; a masked number becomes a JSON string.
 */
function maskJson(m: CompiledMasking, text: string, counter: MaskCounter | undefined): string {
  const probe = maskContent(m, text);
  // \u escapes can hide characters from the raw-text pass; everything else it sees correctly
  if (probe === text && !text.includes('\\u')) return text;
  let out = '';
  let last = 0;
  let changed = false;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      let j = i + 1;
      let escaped = false;
      while (j < n) {
        const d = text.charCodeAt(j);
        if (d === 92) { escaped = true; j += 2; continue; }
        if (d === 34) break;
        j++;
      }
      let rep: string | null = null;
      if (escaped) {
        let decoded: unknown;
        try { decoded = JSON.parse(text.slice(i, j + 1)); } catch { return probe; }
        const masked = maskContent(m, decoded as string, counter);
        if (masked !== decoded) rep = JSON.stringify(masked);
      } else {
        const raw = text.slice(i + 1, j);
        const masked = maskContent(m, raw, counter);
        if (masked !== raw) rep = `"${masked}"`;
      }
      if (rep !== null) { out += text.slice(last, i) + rep; last = j + 1; changed = true; }
      i = j + 1;
    } else if (c === 45 || (c >= 48 && c <= 57)) {
      let j = i + 1;
      while (j < n) {
        const d = text.charCodeAt(j);
        if ((d >= 48 && d <= 57) || d === 46 || d === 101 || d === 69 || d === 43 || d === 45) j++;
        else break;
      }
      const tok = text.slice(i, j);
      const masked = maskContent(m, tok, counter);
      if (masked !== tok) { out += text.slice(last, i) + JSON.stringify(masked); last = j; changed = true; }
      i = j;
    } else i++;
  }
  return changed ? out + text.slice(last) : text;
}

function hexToLatin1(hex: string): string {
  return Buffer.from(hex, 'hex').toString('latin1');
}

/**
 * Content masking of one text-format value of a column of type `typeOid` (no column rule):
 * the result still parses as that type, or is NULL when a detector matched a type that cannot
 * carry a mask (a card number in an int8, an address in an inet, an email inside bytea).
 * Same instance back when nothing matched.
 */
export function maskValue(m: CompiledMasking, value: string, typeOid: number, counter?: MaskCounter): string | null {
  if (!(m as Compiled).hasDetectors) return value;
  switch (classifyType(typeOid)) {
    case TypeClass.skip: return value;
    case TypeClass.json: return maskJson(m, value, counter);
    case TypeClass.nullIfMatched: return maskContent(m, value, counter) === value ? value : null;
    case TypeClass.bytea: {
      const plain = value.startsWith('\\x') ? hexToLatin1(value.slice(2)) : value;
      return maskContent(m, plain, counter) === plain ? value : null;
    }
    default: return maskContent(m, value, counter);
  }
}

/**
 * One result cell: whole-value mask when the column matched a column rule, content detectors
 * otherwise. `null` in means SQL NULL and stays NULL.
 */
export function maskCell(m: CompiledMasking, value: string | null, typeOid: number, columnMasked: boolean, counter?: MaskCounter): string | null {
  if (value === null) return null;
  if (columnMasked) {
    if (counter) counter.masked++;
    return maskWholeValue(value, typeOid);
  }
  return maskValue(m, value, typeOid, counter);
}

// PostgreSQL error DETAIL lines that quote column values (English server messages)
const KEY_DETAIL = /\bKey \(([^)]*)\)=\(/gi;
const KEY_DETAIL_END = /\)(?= already exists| is not present| is still referenced| conflicts with|\.?(?:\n|$))/g;
const FAILING_ROW = /Failing row contains \(/g;
const FAILING_ROW_END = /\)\.?(?:\n|$)/g;

function maskQuotedTuple(text: string, start: RegExp, end: RegExp, applies: (match: RegExpExecArray) => boolean, counter: MaskCounter | undefined): string {
  start.lastIndex = 0;
  let s = start.exec(text);
  if (s === null) return text;
  let out = '';
  let last = 0;
  let changed = false;
  while (s !== null) {
    const from = s.index + s[0].length;
    if (applies(s)) {
      end.lastIndex = from;
      const e = end.exec(text);
      const to = e === null ? text.length : e.index;
      const masked = maskChars(text.slice(from, to));
      if (masked !== text.slice(from, to)) {
        out += text.slice(last, from) + masked;
        last = to;
        changed = true;
        if (counter) counter.masked++;
      }
    }
    start.lastIndex = Math.max(from, last);
    s = start.exec(text);
  }
  return changed ? out + text.slice(last) : text;
}

/**
 * Free-text channels (ErrorResponse/Notice fields, NOTIFY payloads): content detectors, plus,
 * when the connection has column rules, the values PostgreSQL quotes in DETAIL lines:
 * `Key (ssn)=(123456789) already exists` is masked when `ssn` matches a column rule, and
 * `Failing row contains (...)` is masked whole (its columns are not named).
 */
export function maskText(m: CompiledMasking, text: string, counter?: MaskCounter): string {
  const c = m as Compiled;
  let out = text;
  if (c.hasColumnRules && out.length > 12) {
    if (out.includes('ey (') || out.includes('EY (')) {
      out = maskQuotedTuple(out, KEY_DETAIL, KEY_DETAIL_END, (s) => s[1].split(',').some((col) => columnMatches(m, col.trim().replace(/^"|"$/g, ''))), counter);
    }
    if (out.includes('Failing row contains (')) out = maskQuotedTuple(out, FAILING_ROW, FAILING_ROW_END, () => true, counter);
  }
  out = maskContent(m, out, counter);
  return out;
}
