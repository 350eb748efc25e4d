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
/** maskContent modes: a number's own text (int8, numeric, JSON numbers): no card windows inside longer digit runs */
export const AS_NUMBER = 1;
/** free text (errors, notices, notifications, ParameterStatus): also bare 9-digit SSNs */
export const FREE_TEXT = 2;

export function maskContent(m: CompiledMasking, value: string, counter?: MaskCounter, mode = 0): string {
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
    if (!(prevDigit && isRunSep(ch))) digitRun = 0;
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
  const could = detectorsThatCould(c, len, digits, letters, dots, dashes, at, keyValue, maxRun, maxDigitRun);
  if (could === 0) return value;
  // order matters: secrets first (a URL password looks like an email's local part), IBAN
  // before cards (its digits can pass Luhn), SSN before phone (`012-34-5678` fits both)
  let out = value;
  if (could & D_SECRET) out = maskSecrets(out, counter);
  if (could & D_IBAN) out = maskIbans(out, counter);
  if (could & D_CARD) out = maskCards(out, counter, (mode & AS_NUMBER) === 0);
  if (could & D_SSN) out = maskSsns(out, counter, (mode & FREE_TEXT) !== 0);
  if (could & D_PHONE) out = maskPhones(out, counter);
  if (could & D_IPV4) out = maskIpv4s(out, counter);
  if (could & D_EMAIL) out = maskEmails(out, counter);
  return out;
}

const D_SECRET = 1;
const D_IBAN = 2;
const D_CARD = 4;
const D_SSN = 8;
const D_PHONE = 16;
const D_IPV4 = 32;
const D_EMAIL = 64;

/**
 * The pre-checks of every detector, on the counts of one pass over the value (the string pass
 * of `maskContent` or the byte pass of `contentMayMatch`: one definition, so the byte pass can
 * never skip a value the string pass would mask). A detector whose bit is clear cannot match;
 * each check only asks for a count to reach a bound.
 */
function detectorsThatCould(c: Compiled, len: number, digits: number, letters: number, dots: number, dashes: number, at: boolean, keyValue: boolean, maxRun: number, maxDigitRun: number): number {
  let could = 0;
  // every token format has a 16+ character word; key=value, URLs and PEM blocks have = : or -----
  if (c.secret && len >= 10 && (maxRun >= 16 || (keyValue && letters >= 3) || dashes >= 5)) could |= D_SECRET;
  if (c.iban && digits >= 2 && letters >= 2 && len >= 15) could |= D_IBAN;
  if (c.card && maxDigitRun >= 13) could |= D_CARD;
  // 9 digits, dashed, otherwise separated or bare (free text), possibly inside a longer run
  if (c.ssn && maxDigitRun >= 9) could |= D_SSN;
  if (c.phone && digits >= 8) could |= D_PHONE;
  if (c.ipv4 && digits >= 4 && dots >= 3) could |= D_IPV4;
  if (c.email && at) could |= D_EMAIL;
  return could;
}

/**
 * False when no detector can match the UTF-8 text in `buf[start, end)`: the counts of
 * `maskContent`'s pass taken over the bytes, without decoding them (bulk results: most values
 * are skipped without a string). Exact for text that is its own value: every byte of a
 * multi-byte character is >= 0x80, which, like the character in the string pass, is neither a
 * digit, a letter nor a separator; the byte length is >= the string length, so a length check
 * passes at least as often. A backslash or a double quote (COPY/CSV/JSON escapes, which the
 * callers decode before masking) answers true: let the decoding path decide.
 */
export function contentMayMatch(m: CompiledMasking, buf: Uint8Array, start: number, end: number): boolean {
  const c = m as Compiled;
  if (!c.hasDetectors || end - start < 6) return false;
  let digits = 0;
  let letters = 0;
  let dots = 0;
  let dashes = 0;
  let at = false;
  let keyValue = false;
  let run = 0;
  let maxRun = 0;
  let digitRun = 0;
  let maxDigitRun = 0;
  let prevDigit = false;
  for (let i = start; i < end; i++) {
    const ch = buf[i];
    if (ch >= 48 && ch <= 57) {
      digits++;
      run++;
      if (++digitRun > maxDigitRun) maxDigitRun = digitRun;
      prevDigit = true;
      continue;
    }
    if (!(prevDigit && isRunSep(ch))) digitRun = 0;
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
    else if (ch === 92 || ch === 34) return true;
  }
  if (run > maxRun) maxRun = run;
  return detectorsThatCould(c, end - start, digits, letters, dots, dashes, at, keyValue, maxRun, maxDigitRun) !== 0;
}

/**
 * `contentMayMatch` for a stream of values that arrive in order inside large chunks (the rows of
 * a bulk result), cheaper per value when the detectors are among email, credit_card and ssn:
 * their pre-checks are then "an `@`" and "a run of K digits joined by single spaces or dashes"
 * (K = 9 with ssn, else 13), and with the escape rule "a backslash or a double quote":
 *
 * - `@`, `\` and `"` are found with Buffer.indexOf (memchr) once per chunk and character, and
 *   each value only compares the next position with its bounds;
 * - a qualifying digit run spans at least K bytes, each of them a digit or a single separator
 *   next to a digit, so probing every K-th byte for such a byte cannot step over one; a probe
 *   that hits is settled by counting the digit run around it exactly as `maskContent` does.
 *
 * Other detector sets (count-based pre-checks) fall back to `contentMayMatch` per value.
 */
export class ByteScreen {
  readonly #m: CompiledMasking;
  /** 0: use contentMayMatch; else the digit-run length that can match */
  readonly #k: number;
  readonly #email: boolean;
  #buf: Uint8Array | null = null;
  #from = 0;
  /** next position at or after #from of '@', '\\', '"' in #buf (buf.length: none) */
  #at = 0;
  #bs = 0;
  #dq = 0;

  constructor(m: CompiledMasking) {
    this.#m = m;
    const c = m as Compiled;
    this.#email = c.email;
    this.#k = !c.hasDetectors || c.phone || c.iban || c.ipv4 || c.secret ? 0 : c.ssn ? 9 : c.card ? 13 : Infinity;
  }

  mayMatch(buf: Buffer, start: number, end: number): boolean {
    const k = this.#k;
    if (k === 0) return contentMayMatch(this.#m, buf, start, end);
    if (end - start < 6) return false;
    if (buf !== this.#buf || start < this.#from) {
      this.#buf = buf;
      this.#at = this.#bs = this.#dq = -1;
    }
    this.#from = start;
    const n = buf.length;
    if (this.#bs < start) { const i = buf.indexOf(92, start); this.#bs = i < 0 ? n : i; }
    if (this.#bs < end) return true;
    if (this.#dq < start) { const i = buf.indexOf(34, start); this.#dq = i < 0 ? n : i; }
    if (this.#dq < end) return true;
    if (this.#email) {
      if (this.#at < start) { const i = buf.indexOf(64, start); this.#at = i < 0 ? n : i; }
      if (this.#at < end) return true;
    }
    if (k === Infinity || end - start < k) return false;
    for (let p = start + k - 1; p < end; p += k) {
      const b = buf[p];
      const digit = b >= 48 && b <= 57;
      if (!digit && !(isRunSep(b) && ((p > start && isDigitByte(buf[p - 1])) || (p + 1 < end && isDigitByte(buf[p + 1]))))) continue;
      // count the run around p: back to where a run could start, then forward as maskContent does
      let q = p;
      while (q > start && (isDigitByte(buf[q - 1]) || isRunSep(buf[q - 1]))) q--;
      let run = 0;
      let prevDigit = false;
      let r = q;
      for (; r < end; r++) {
        const ch = buf[r];
        if (ch >= 48 && ch <= 57) {
          if (++run >= k) return true;
          prevDigit = true;
          continue;
        }
        if (!(prevDigit && isRunSep(ch))) {
          if (r > p) break;
          run = 0;
        }
        prevDigit = false;
      }
      // the run around p is settled up to r (a non-digit): probe on from r + k - 1
      p = r - 1;
    }
    return false;
  }
}

function isDigitByte(b: number): boolean { return b >= 48 && b <= 57; }
/** what joins digit groups into one run for the card and SSN pre-checks: space - . / _ */
function isRunSep(c: number): boolean { return c === 32 || c === 45 || c === 46 || c === 47 || c === 95; }

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
      const masked = maskContent(m, tok, counter, AS_NUMBER);
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
    case TypeClass.nullIfMatched: return maskContent(m, value, counter, AS_NUMBER) === value ? value : null;
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
  out = maskContent(m, out, counter, FREE_TEXT);
  return out;
}

// PostgreSQL quotes the values it echoes in messages: `invalid input syntax for type integer: "…"`
const QUOTED = /"[^"\n]*"/g;
// a token holding a digit or an `@`: numbers and addresses a message may echo unquoted
const VALUE_TOKEN = /[^\s"]*[0-9@][^\s"]*/g;

/**
 * Free text answering a statement that touched a column-rule column (issue 10: errors are
 * masked as strongly as results). `whole`: the text is the user's own (RAISE, details, hints,
 * internal queries): every character as a column rule masks a value (`maskChars`). Otherwise
 * (a server message template): the quoted values and every token holding a digit or an `@`,
 * so `invalid input syntax for type integer: "alice@example.com1"` keeps its words and loses
 * the value: `... integer: "*****@*******.****"`.
 */
export function maskTaintedText(m: CompiledMasking, text: string, whole: boolean, counter?: MaskCounter): string {
  let out = whole ? maskChars(text) : text.replace(QUOTED, (q) => `"${maskChars(q.slice(1, -1))}"`).replace(VALUE_TOKEN, maskChars);
  if (out === text) out = maskText(m, text, counter);
  else if (counter) counter.masked++;
  return out;
}

/**
 * ParameterStatus values that clients parse to speak the protocol (encodings, date formats,
 * versions): PostgreSQL validates them, so they cannot carry a value; any other parameter
 * (application_name, search_path, session_authorization, extensions' GUC_REPORT ones) goes
 * through the detectors, or is masked whole after a statement that touched a masked column.
 */
const PROTOCOL_PARAMETERS = new Set([
  'client_encoding', 'datestyle', 'integer_datetimes', 'standard_conforming_strings', 'server_version', 'server_encoding',
  'intervalstyle', 'timezone', 'is_superuser', 'in_hot_standby', 'default_transaction_read_only', 'scram_iterations',
]);

/** A ParameterStatus value as the client may see it; same instance when unchanged. */
export function maskParameterStatus(m: CompiledMasking, name: string, value: string, tainted: boolean, counter?: MaskCounter): string {
  if (PROTOCOL_PARAMETERS.has(name.toLowerCase())) return value;
  return tainted ? maskTaintedText(m, value, true, counter) : maskText(m, value, counter);
}
