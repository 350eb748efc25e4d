/**
 * The "shape" of a SQL text: the text with its plain literals (numbers and simple '...'
 * strings) cut out, so statements that differ only in literal values share one key.
 *
 * Hand-written rather than libpg-query's scanSync: it runs on every statement text the
 * exact-text caches have not seen (pgbench and most apps inline values, so that is every
 * statement), and must cost well under a microsecond where one WASM call (copying the text
 * in, building JSON, parsing it back) costs tens. It only needs to find where literal tokens
 * start and end; everything between them is kept verbatim in the key, so it follows
 * PostgreSQL's lexical rules (src/backend/parser/scan.l, PostgreSQL 18) only as far as
 * telling literals from the other tokens, and gives up (returns undefined, so the caller
 * takes the full path) on anything it does not model exactly:
 * - backslashes outside E'...' (they mean something else with standard_conforming_strings
 *   off), U&'...' / U&"..." (UESCAPE changes their meaning), psql-style :'var' / :"var";
 * - unterminated quotes, dollar quotes and comments, `$` that is neither a parameter nor a
 *   dollar quote, numbers with trailing junk (`1e`, `1_`, `12abc`, `1..2`), which are errors;
 * - string literals followed by another quote (PostgreSQL joins '...' '...' across a newline);
 * - NUL and control characters other than tab/newline/CR/form feed, unpaired UTF-16
 *   surrogates (they change when encoded to UTF-8), and U+03A3 GREEK CAPITAL SIGMA (its
 *   lowercase depends on its neighbours, which breaks the per-literal lowercasing that
 *   deny_patterns use, see shape.ts).
 * Only decimal numbers and '...' strings without backslashes are cut out; E'', B'', X'',
 * N'' strings, dollar quotes, hex/octal/binary integers and $n parameters stay verbatim.
 * Whether a shape may share a verdict at all is decided later, against the parse tree of the
 * first text seen with it (shape.ts).
 */

export interface Shape {
  /**
   * The text with each cut-out literal replaced by NUL and its class: `i` an integer that
   * PostgreSQL lexes as ICONST (fits in int32), `f` any other number (FCONST), `d` a number
   * starting with a dot (FCONST, but it is not a "word" for pattern normalization), `s` a
   * '...' string (SCONST). The text itself never holds NUL, so keys cannot collide.
   */
  readonly key: string;
  /** [start, end) of each cut-out literal, UTF-16 offsets, flattened: s0, e0, s1, e1... */
  readonly spans: readonly number[];
}

/** Texts longer than this are not shaped: they are rarely repeated and would make big keys. */
export const MAX_SHAPED_LENGTH = 16_384;

// Characters that rule out a shape wherever they appear (see the header comment).
const REFUSED = /[\0-\x08\x0b\x0e-\x1f\u03a3]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const QUOTE = 0x27; // '
const DQUOTE = 0x22; // "
const DOLLAR = 0x24;
const DOT = 0x2e;
const MINUS = 0x2d;
const SLASH = 0x2f;
const STAR = 0x2a;
const COLON = 0x3a;
const BACKSLASH = 0x5c;
const UNDERSCORE = 0x5f;

const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
// scan.l: ident_start [A-Za-z\200-\377_], ident_cont [A-Za-z\200-\377_0-9\$]; bytes >= 0x80 are
// the UTF-8 of any non-ASCII character, so every non-ASCII UTF-16 unit counts.
const isIdentStart = (c: number) => (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === UNDERSCORE || c >= 0x80;
const isIdentCont = (c: number) => isIdentStart(c) || isDigit(c) || c === DOLLAR;
const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d || c === 0x0c;

/** The shape of `sql`, or undefined when it has no plain literal or cannot be shaped exactly. */
export function sqlShape(sql: string): Shape | undefined {
  const n = sql.length;
  if (n > MAX_SHAPED_LENGTH || REFUSED.test(sql)) return undefined;
  const spans: number[] = [];
  let key = '';
  let last = 0;
  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (isIdentStart(c)) {
      const next = i + 1 < n ? sql.charCodeAt(i + 1) : 0;
      const lower = c | 0x20;
      if (next === QUOTE && (lower === 0x65 || lower === 0x62 || lower === 0x78 || lower === 0x6e)) {
        // E'...' (backslash escapes), B'...', X'...', N'...': kept verbatim, only skipped
        const end = lower === 0x65 ? skipEString(sql, i + 2) : lower === 0x6e ? skipString(sql, i + 2) : skipBitString(sql, i + 2);
        if (end < 0 || continuesString(sql, end)) return undefined;
        i = end;
        continue;
      }
      if (lower === 0x75 && next === 0x26) {
        const q = i + 2 < n ? sql.charCodeAt(i + 2) : 0;
        if (q === QUOTE || q === DQUOTE) return undefined; // U&'...' / U&"..."
      }
      i++;
      while (i < n && isIdentCont(sql.charCodeAt(i))) i++;
      continue;
    }
    if (isDigit(c) || (c === DOT && i + 1 < n && isDigit(sql.charCodeAt(i + 1)))) {
      const r = scanNumber(sql, i);
      if (r < 0) return undefined;
      if (r > 0) {
        const end = r >> 2;
        key += sql.slice(last, i) + '\0' + CLASS[r & 3];
        spans.push(i, end);
        last = end;
        i = end;
      } else {
        i = skipPrefixedInteger(sql, i);
        if (i < 0) return undefined;
      }
      continue;
    }
    switch (c) {
      case QUOTE: {
        const end = skipString(sql, i + 1);
        if (end < 0 || continuesString(sql, end)) return undefined;
        key += sql.slice(last, i) + '\0s';
        spans.push(i, end);
        last = end;
        i = end;
        continue;
      }
      case DQUOTE: {
        const end = skipQuotedIdentifier(sql, i + 1);
        if (end < 0) return undefined;
        i = end;
        continue;
      }
      case DOLLAR: {
        const end = skipDollar(sql, i);
        if (end < 0) return undefined;
        i = end;
        continue;
      }
      case MINUS:
        if (i + 1 < n && sql.charCodeAt(i + 1) === MINUS) {
          i += 2;
          while (i < n && sql.charCodeAt(i) !== 0x0a && sql.charCodeAt(i) !== 0x0d) i++;
        } else i++;
        continue;
      case SLASH:
        if (i + 1 < n && sql.charCodeAt(i + 1) === STAR) {
          i = skipBlockComment(sql, i + 2);
          if (i < 0) return undefined;
        } else i++;
        continue;
      case COLON: {
        const q = i + 1 < n ? sql.charCodeAt(i + 1) : 0;
        if (q === QUOTE || q === DQUOTE) return undefined; // psql :'var' / :"var"
        i++;
        continue;
      }
      case BACKSLASH:
        return undefined;
      default:
        i++;
    }
  }
  if (spans.length === 0) return undefined;
  return { key: key + sql.slice(last), spans };
}

const CLASS = ['', 'i', 'f', 'd'] as const;

/**
 * A number starting at `i` (a digit, or a dot before a digit). Returns -1 for what the
 * scanner rejects or what is not modelled, 0 for a 0x/0o/0b integer (kept verbatim), else
 * (end << 2) | class with class 1 = ICONST, 2 = FCONST, 3 = FCONST starting with a dot.
 * scan.l: decinteger {decdigit}(_?{decdigit})*, numeric (decinteger\.decinteger?)|(\.decinteger),
 * real (decinteger|numeric)[Ee][-+]?decinteger, and *_junk / *fail rules that are errors.
 */
function scanNumber(sql: string, i: number): number {
  const n = sql.length;
  const c = sql.charCodeAt(i);
  let cls = 1;
  let j = i;
  if (c === DOT) {
    j = scanDecimal(sql, i + 1);
    cls = 3;
  } else {
    if (c === 0x30 && i + 1 < n) {
      const p = sql.charCodeAt(i + 1) | 0x20;
      if (p === 0x78 || p === 0x6f || p === 0x62) return 0;
    }
    j = scanDecimal(sql, i);
    if (j < n && sql.charCodeAt(j) === DOT) {
      if (j + 1 < n && sql.charCodeAt(j + 1) === DOT) return -1; // 1..2 (numericfail)
      j++;
      if (j < n && isDigit(sql.charCodeAt(j))) j = scanDecimal(sql, j);
      cls = 2;
    }
  }
  if (j < n && (sql.charCodeAt(j) | 0x20) === 0x65) {
    let k = j + 1;
    if (k < n && (sql.charCodeAt(k) === 0x2b || sql.charCodeAt(k) === MINUS)) k++;
    if (k >= n || !isDigit(sql.charCodeAt(k))) return -1; // realfail or trailing junk
    j = scanDecimal(sql, k);
    if (cls === 1) cls = 2;
  }
  if (j < n) {
    const d = sql.charCodeAt(j);
    if (isIdentCont(d) || d === DOT) return -1; // trailing junk (or a second dot: not modelled)
  }
  if (cls === 1 && !fitsInt32(sql, i, j)) cls = 2;
  return (j << 2) | cls;
}

/** decinteger from `i` (a digit): digits, single underscores between digits. */
function scanDecimal(sql: string, i: number): number {
  const n = sql.length;
  let j = i;
  while (j < n) {
    const d = sql.charCodeAt(j);
    if (isDigit(d)) j++;
    else if (d === UNDERSCORE && j + 1 < n && isDigit(sql.charCodeAt(j + 1))) j += 2;
    else break;
  }
  return j;
}

// process_integer_literal: ICONST when pg_strtoint32 accepts it, else FCONST.
function fitsInt32(sql: string, i: number, j: number): boolean {
  if (j - i <= 9) return true;
  let s = sql.slice(i, j);
  if (s.includes('_')) s = s.replaceAll('_', '');
  return Number(s) <= 2147483647;
}

/** A 0x / 0o / 0b integer starting at `i`: its end, or -1 when the scanner rejects it. */
function skipPrefixedInteger(sql: string, i: number): number {
  const n = sql.length;
  const p = sql.charCodeAt(i + 1) | 0x20;
  const ok = p === 0x78 ? (d: number) => isDigit(d) || ((d | 0x20) >= 0x61 && (d | 0x20) <= 0x66) : p === 0x6f ? (d: number) => d >= 0x30 && d <= 0x37 : (d: number) => d === 0x30 || d === 0x31;
  let j = i + 2;
  let digits = 0;
  while (j < n) {
    const d = sql.charCodeAt(j);
    if (ok(d)) {
      j++;
      digits++;
    } else if (d === UNDERSCORE && j + 1 < n && ok(sql.charCodeAt(j + 1))) j++;
    else break;
  }
  if (digits === 0) return -1;
  if (j < n && (isIdentCont(sql.charCodeAt(j)) || sql.charCodeAt(j) === DOT)) return -1;
  return j;
}

/** A standard '...' string from just after its opening quote: '' is a quote; a backslash is refused. */
function skipString(sql: string, i: number): number {
  const n = sql.length;
  for (let j = i; j < n; j++) {
    const c = sql.charCodeAt(j);
    if (c === BACKSLASH) return -1;
    if (c === QUOTE) {
      if (j + 1 < n && sql.charCodeAt(j + 1) === QUOTE) j++;
      else return j + 1;
    }
  }
  return -1;
}

/** E'...': a backslash escapes the next character, '' is a quote. */
function skipEString(sql: string, i: number): number {
  const n = sql.length;
  for (let j = i; j < n; j++) {
    const c = sql.charCodeAt(j);
    if (c === BACKSLASH) j++;
    else if (c === QUOTE) {
      if (j + 1 < n && sql.charCodeAt(j + 1) === QUOTE) j++;
      else return j + 1;
    }
  }
  return -1;
}

/** B'...' / X'...': no escapes, the first quote ends it. */
function skipBitString(sql: string, i: number): number {
  const end = sql.indexOf("'", i);
  return end < 0 ? -1 : end + 1;
}

function skipQuotedIdentifier(sql: string, i: number): number {
  const n = sql.length;
  for (let j = i; j < n; j++) {
    if (sql.charCodeAt(j) === DQUOTE) {
      if (j + 1 < n && sql.charCodeAt(j + 1) === DQUOTE) j++;
      else return j + 1;
    }
  }
  return -1;
}

/** `$n` parameter or `$tag$...$tag$` dollar quote at `i`; -1 for anything else. */
function skipDollar(sql: string, i: number): number {
  const n = sql.length;
  const c = i + 1 < n ? sql.charCodeAt(i + 1) : 0;
  if (isDigit(c)) {
    const j = scanDecimal(sql, i + 1);
    if (j < n && (isIdentCont(sql.charCodeAt(j)) || sql.charCodeAt(j) === DOT)) return -1;
    return j;
  }
  // dolqdelim \$({dolq_start}{dolq_cont}*)?\$ ; dolq_cont has no `$`
  let j = i + 1;
  if (c !== DOLLAR) {
    if (!isIdentStart(c)) return -1;
    while (j < n && isIdentCont(sql.charCodeAt(j)) && sql.charCodeAt(j) !== DOLLAR) j++;
    if (j >= n || sql.charCodeAt(j) !== DOLLAR) return -1; // dolqfailed
  }
  const tag = sql.slice(i, j + 1);
  const end = sql.indexOf(tag, j + 1);
  return end < 0 ? -1 : end + tag.length;
}

/** A /* comment from just after its opening; they nest. */
function skipBlockComment(sql: string, i: number): number {
  const n = sql.length;
  let depth = 1;
  let j = i;
  while (j < n) {
    const c = sql.charCodeAt(j);
    if (c === SLASH && j + 1 < n && sql.charCodeAt(j + 1) === STAR) {
      depth++;
      j += 2;
    } else if (c === STAR && j + 1 < n && sql.charCodeAt(j + 1) === SLASH) {
      j += 2;
      if (--depth === 0) return j;
    } else j++;
  }
  return -1;
}

/**
 * Whether a quote follows a string literal across only whitespace and comments. PostgreSQL
 * joins 'a'<newline>'b' into one literal; rather than model when, such texts get no shape.
 */
function continuesString(sql: string, i: number): boolean {
  const n = sql.length;
  let j = i;
  while (j < n) {
    const c = sql.charCodeAt(j);
    if (isSpace(c)) j++;
    else if (c === MINUS && j + 1 < n && sql.charCodeAt(j + 1) === MINUS) {
      while (j < n && sql.charCodeAt(j) !== 0x0a && sql.charCodeAt(j) !== 0x0d) j++;
    } else if (c === SLASH && j + 1 < n && sql.charCodeAt(j + 1) === STAR) {
      j = skipBlockComment(sql, j + 2);
      if (j < 0) return true;
    } else return c === QUOTE;
  }
  return false;
}
