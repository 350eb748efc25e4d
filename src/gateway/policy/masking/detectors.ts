/**
 * Content detectors: each finds one kind of sensitive value inside arbitrary text and masks
 * only the matched characters, keeping the text's length and separators where it can.
 * Every function returns the *same string instance* when it changed nothing, so callers can
 * test identity. What each one deliberately does not match is listed in README.md.
 *
 * Rules shared by all of them:
 * - boundaries are digit-based (`(?<!\d)`), not word-based, so a value right after a JSON or
 *   COPY escape such as `\n4111...` is still seen;
 * - masks only ever write `*` over letters and digits, never over quotes, backslashes, tabs or
 *   commas, so JSON strings, COPY fields and CSV fields stay well-formed;
 * - every regex is linear: bounded repetitions, anchors that stop a scan from restarting
 *   inside a run (checked by the pathological-input tests).
 */

export interface MaskCounter { masked: number }

/**
 * Replaces each match for which `fn` returns a string; same instance back when none did.
 * With `retry`, a rejected match is searched again from its second character: the regexes
 * leave their left-boundary check to `fn` (a lookbehind evaluated at every position costs
 * several times more), so a rejected match may hide a valid one that starts inside it.
 */
function replaceMatches(s: string, re: RegExp, fn: (m: RegExpExecArray) => string | null, counter: MaskCounter | undefined, retry = false): string {
  re.lastIndex = 0;
  let m = re.exec(s);
  if (m === null) return s;
  let out = '';
  let last = 0;
  let n = 0;
  while (m !== null) {
    const rep = fn(m);
    if (rep !== null && rep !== m[0]) {
      out += s.slice(last, m.index) + rep;
      last = m.index + m[0].length;
      n++;
    } else if (retry && rep === null) re.lastIndex = m.index + 1;
    if (m[0].length === 0) re.lastIndex++;
    m = re.exec(s);
  }
  if (n === 0) return s;
  if (counter) counter.masked += n;
  return out + s.slice(last);
}

function isDigit(c: number): boolean { return c >= 48 && c <= 57; }
function isAsciiAlnum(c: number): boolean { return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122); }

/** Keeps the last `keep` digits, masks the other digits, leaves separators. */
function maskDigits(s: string, keep: number): string {
  let digits = 0;
  for (let i = 0; i < s.length; i++) if (isDigit(s.charCodeAt(i))) digits++;
  let toMask = digits - keep;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (toMask > 0 && isDigit(c)) { out += '*'; toMask--; } else out += s[i];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// email: hand-written scanner anchored on '@' (a regex over arbitrary text would restart at
// every character of a long word and go quadratic; this is one pass left and right of each '@').

function isNonAsciiWordChar(c: number): boolean {
  // non-ASCII letters (IDN / UTF-8 local parts); excludes general punctuation, no-break and
  // ideographic spaces, BOM, lone surrogates (emoji are not valid in practice and would split)
  return c >= 0xc0 && c !== 0xd7 && c !== 0xf7 && !(c >= 0x2000 && c <= 0x206f) && c !== 0x3000 && c !== 0xfeff && !(c >= 0xd800 && c <= 0xdfff);
}
function isLocalChar(c: number): boolean {
  // letters, digits and . _ % + - ' ; not the rarer RFC atext characters, so `key=alice@...`
  // and `(alice@...)` stop at the punctuation
  return isAsciiAlnum(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45 || c === 39 || isNonAsciiWordChar(c);
}
function isDomainChar(c: number): boolean {
  return isAsciiAlnum(c) || c === 45 || c === 46 || isNonAsciiWordChar(c);
}
const TLD = /^(?:[A-Za-z\u00c0-\uffff]{2,63}|xn--[A-Za-z0-9-]{2,59})$/;

function validDomain(d: string): boolean {
  const lastDot = d.lastIndexOf('.');
  if (lastDot <= 0) return false;
  if (d.includes('..')) return false;
  return TLD.test(d.slice(lastDot + 1));
}

/**
 * Length of the longest prefix of `d` that is a valid domain whose TLD is the leading letters
 * of one of its labels (`example.com1` → `example.com`), 0 when there is none.
 */
function validDomainPrefix(d: string): number {
  let dot = d.lastIndexOf('.');
  while (dot > 0) {
    let e = dot + 1;
    while (e < d.length && isAsciiLetter(d.charCodeAt(e))) e++;
    if (e - dot - 1 >= 2 && validDomain(d.slice(0, e))) return e;
    dot = d.lastIndexOf('.', dot - 1);
  }
  return 0;
}
function isAsciiLetter(c: number): boolean { return (c >= 65 && c <= 90) || (c >= 97 && c <= 122); }

/** `alice@example.com` → `a****@example.com`: first character of the local part kept, the domain kept. */
export function maskEmails(s: string, counter?: MaskCounter): string {
  let at = s.indexOf('@');
  if (at < 0) return s;
  let out = '';
  let last = 0;
  let n = 0;
  while (at >= 0) {
    let l = at;
    while (l > last && isLocalChar(s.charCodeAt(l - 1))) l--;
    let r = at + 1;
    while (r < s.length && isDomainChar(s.charCodeAt(r))) r++;
    // a sentence may end right after the address
    while (r > at + 1 && (s.charCodeAt(r - 1) === 46 || s.charCodeAt(r - 1) === 45)) r--;
    // `alice@example.com1`, `alice@example.com.42`: the address is the longest prefix of the
    // domain that ends in a valid TLD (issue 10: a value followed by other characters)
    if (l < at && !validDomain(s.slice(at + 1, r))) r = at + 1 + validDomainPrefix(s.slice(at + 1, r));
    if (l < at && r > at + 1 && validDomain(s.slice(at + 1, r))) {
      const masked = at - l === 1 ? '*' : s[l] + '*'.repeat(at - l - 1);
      if (masked !== s.slice(l, at)) {
        out += s.slice(last, l) + masked;
        last = at;
        n++;
      }
      at = s.indexOf('@', r);
    } else {
      at = s.indexOf('@', at + 1);
    }
  }
  if (n === 0) return s;
  if (counter) counter.masked += n;
  return out + s.slice(last);
}

// ---------------------------------------------------------------------------------------------
// credit_card: digit groups separated by single spaces or dashes; within such a run, any
// stretch of whole groups holding 13-19 digits that starts with a card-network digit (2-6) and
// passes the Luhn check is masked, all digits but the last 4.

export function luhnValid(digits: string): boolean {
  let sum = 0;
  let dbl = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (dbl) { d *= 2; if (d > 9) d -= 9; }
    sum += d;
    dbl = !dbl;
  }
  return sum % 10 === 0;
}

export function isCardNumber(digits: string): boolean {
  if (digits.length < 13 || digits.length > 19) return false;
  const first = digits.charCodeAt(0);
  // ISO/IEC 7812 major industry identifiers used by card networks: 2 (Mastercard 2-series, Mir),
  // 3 (Amex, JCB, Diners), 4 (Visa), 5 (Mastercard, Maestro), 6 (Discover, UnionPay, RuPay).
  // Excluding 0/1/7/8/9 keeps 19-digit snowflake ids and most bigint keys from being masked.
  if (first < 50 || first > 54) return false;
  return luhnValid(digits);
}

/** A card group separator: space and dash as written, `. / _` as separators are replaced (`replace(card, ' ', '.')`). */
function isCardSep(c: number): boolean { return c === 32 || c === 45 || c === 46 || c === 47 || c === 95; }

/**
 * Card windows inside a longer digit string `d` (a card with digits appended or prepended,
 * `card || '1'`): every 13-19-digit window that starts with 2-6 and passes Luhn. Scanned per
 * window end, extending left one digit at a time with the Luhn sum kept incrementally, so the
 * cost is 19 steps per digit (linear). Greedy: for each end, the longest valid window; windows
 * do not overlap. Returns [start, end) pairs.
 */
function cardWindows(d: string): number[] {
  const out: number[] = [];
  let from = 0;
  for (let e = 13; e <= d.length; e++) {
    let sum = 0;
    let best = -1;
    for (let k = 0; k < 19 && e - 1 - k >= from; k++) {
      let v = d.charCodeAt(e - 1 - k) - 48;
      if (k & 1) { v *= 2; if (v > 9) v -= 9; }
      sum += v;
      const first = d.charCodeAt(e - 1 - k);
      if (k >= 12 && sum % 10 === 0 && first >= 50 && first <= 54) best = e - 1 - k;
    }
    if (best >= 0) { out.push(best, e); from = e; e += 12; }
  }
  return out;
}

function maskCardRun(run: string, windows: boolean): string | null {
  // groups as [start, end) offsets into run
  const starts: number[] = [];
  const ends: number[] = [];
  let i = 0;
  while (i < run.length) {
    const st = i;
    while (i < run.length && isDigit(run.charCodeAt(i))) i++;
    starts.push(st);
    ends.push(i);
    i++; // separator
  }
  const k = starts.length;
  let out: string | null = null;
  let g = 0;
  while (g < k) {
    let best = -1;
    let digits = '';
    for (let j = g; j < k; j++) {
      const len = ends[j] - starts[j];
      if (j > g) {
        // a card is written with one kind of separator and groups of at most 8 digits
        if (run[starts[j] - 1] !== run[starts[g + 1] - 1]) break;
        if (len > 8 || (j === g + 1 && ends[g] - starts[g] > 8)) break;
      }
      digits += run.slice(starts[j], ends[j]);
      if (digits.length > 19) break;
      // `. / _` join groups only in 3 or more of them (a decimal `1234567.891234` is not a card)
      const sep = j > g ? run.charCodeAt(starts[g + 1] - 1) : 32;
      if (digits.length >= 13 && (sep === 32 || sep === 45 || j - g >= 2) && isCardNumber(digits)) best = j;
    }
    if (best < 0) { g++; continue; }
    const seg = run.slice(starts[g], ends[best]);
    out = (out ?? run).slice(0, starts[g]) + maskDigits(seg, 4) + (out ?? run).slice(ends[best]);
    g = best + 1;
  }
  if (out !== null || !windows) return out;
  // no card as written: a card with digits appended or prepended, in one group of 14+ digits or
  // in a chain of 4-digit groups whose end groups hold 1-6 digits (`14111 1111 1111 11112`)
  // ranges to mask, built into one string at the end (a long run may hold many windows)
  const ranges: number[] = [];
  g = 0;
  while (g < k) {
    let j = g;
    if (ends[g] - starts[g] < 14) {
      const sep = run.charCodeAt(ends[g]);
      while (j + 1 < k && run.charCodeAt(ends[j]) === sep && ends[j + 1] - starts[j + 1] <= 6 && (j === g || ends[j] - starts[j] === 4)) j++;
      if (j - g < 2 || ends[g] - starts[g] > 6) { g = Math.max(g + 1, j); continue; }
    }
    let d = '';
    const pos: number[] = [];
    for (let x = g; x <= j; x++) for (let p = starts[x]; p < ends[x]; p++) { d += run[p]; pos.push(p); }
    const w = cardWindows(d);
    for (let x = 0; x < w.length; x += 2) ranges.push(pos[w[x]], pos[w[x + 1] - 1] + 1);
    g = j + 1;
  }
  if (ranges.length === 0) return null;
  let built = '';
  let last = 0;
  for (let x = 0; x < ranges.length; x += 2) {
    built += run.slice(last, ranges[x]) + maskDigits(run.slice(ranges[x], ranges[x + 1]), 4);
    last = ranges[x + 1];
  }
  return built + run.slice(last);
}

/** `4111 1111 1111 1111` → `**** **** **** 1111`; `windows`: also cards inside longer digit runs */
export function maskCards(s: string, counter?: MaskCounter, windows = true): string {
  // hand-written run scanner: digit groups joined by single separators, no match object per run
  let out = '';
  let last = 0;
  let n = 0;
  let i = 0;
  const len = s.length;
  while (i < len) {
    if (!isDigit(s.charCodeAt(i))) { i++; continue; }
    const start = i;
    let digits = 0;
    for (;;) {
      const gs = i;
      while (i < len && isDigit(s.charCodeAt(i))) i++;
      digits += i - gs;
      const c = s.charCodeAt(i);
      if (isCardSep(c) && i + 1 < len && isDigit(s.charCodeAt(i + 1))) { i++; continue; }
      break;
    }
    if (digits < 13) continue;
    const masked = maskCardRun(s.slice(start, i), windows);
    if (masked !== null) {
      out += s.slice(last, start) + masked;
      last = i;
      n++;
    }
  }
  if (n === 0) return s;
  if (counter) counter.masked += n;
  return out + s.slice(last);
}

// ---------------------------------------------------------------------------------------------
// ssn: only the dashed form ddd-dd-dddd, not inside a longer dash/digit chain.

/** True when the text before `at` ends in a digit, or in a digit and a dash. */
function afterDigit(s: string, at: number, joiner: number): boolean {
  const p = s.charCodeAt(at - 1);
  return isDigit(p) || (p === joiner && isDigit(s.charCodeAt(at - 2)));
}

function digitsAt(s: string, from: number, count: number): boolean {
  for (let i = from; i < from + count; i++) if (!isDigit(s.charCodeAt(i))) return false;
  return true;
}

/** An SSN separator: the dash as written, or what `replace(ssn, '-', ...)` put in its place. */
function isSsnSep(c: number): boolean { return c === 45 || c === 32 || c === 46 || c === 47 || c === 95; }

/**
 * `123-45-6789` → `***-**-6789`. The dashed form is found anywhere, also with digits appended
 * or prepended (`ssn || '1'`, issue 10); the same shape with one other separator used twice
 * (`123 45 6789`, `123.45.6789`, `123/45/6789`, `123_45_6789`) when not inside a longer digit
 * run. With `bare` (free text: errors, notices, notifications), a run of exactly 9 digits is
 * masked too (`replace(ssn, '-', '')`); in result values it is not (ids, amounts, zip+4).
 */
export function maskSsns(s: string, counter?: MaskCounter, bare = false): string {
  let out = '';
  let last = 0;
  let n = 0;
  const len = s.length;
  let i = 0;
  while (i + 9 <= len) {
    if (!isDigit(s.charCodeAt(i))) { i++; continue; }
    const sep = s.charCodeAt(i + 3);
    if (isSsnSep(sep) && s.charCodeAt(i + 6) === sep && digitsAt(s, i, 3) && digitsAt(s, i + 4, 2) && digitsAt(s, i + 7, 4)
      && (sep === 45 || (!afterDigit(s, i, sep) && !isDigit(s.charCodeAt(i + 11))))) {
      out += `${s.slice(last, i)}***${s[i + 3]}**${s[i + 6]}${s.slice(i + 7, i + 11)}`;
      last = i + 11;
      n++;
      i += 11;
      continue;
    }
    if (bare && !isDigit(s.charCodeAt(i - 1))) {
      let e = i;
      while (e < len && isDigit(s.charCodeAt(e))) e++;
      if (e - i === 9 && !isDigit(s.charCodeAt(i - 1))) {
        out += `${s.slice(last, i)}*****${s.slice(i + 5, e)}`;
        last = e;
        n++;
        i = e;
        continue;
      }
    }
    i++;
  }
  if (n === 0) return s;
  if (counter) counter.masked += n;
  return out + s.slice(last);
}

// ---------------------------------------------------------------------------------------------
// phone: three shapes (see README): international `+` numbers with 8-20 digits, North American
// `(555) 123-4567` / `555-123-4567`, and national numbers with a trunk `0` in consistently
// separated groups (`020 7946 0958`, `06 12 34 56 78`). Bare digit runs are never phones.

// left boundaries are checked in phoneCandidate: not after a digit ('+' numbers: nor after
// '+'); trunk-0 numbers check theirs inline: not after a digit, ':' or '.' (a time or decimal)
const PHONE_INTL = /\+\d[\d ().-]{5,30}\d/g;
const PHONE_NANP = /(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\d)/g;
// the lookbehind sits after the '0' so it runs only at zeros; the lookahead skips dates/times fast
const PHONE_TRUNK0 = /0(?<![\d:.]0)(?=[\d ./-]{9})\d{1,4}([ ./-])\d{2,8}(?:\1\d{2,8}){0,4}(?![\d:]|[./-]\d)/g;
const DOUBLE_SEP = /[ .-]{2}|\(\)|[ .-]\)/;

function phoneCandidate(s: string, m: RegExpExecArray): string | null {
  const span = m[0];
  const before = s.charCodeAt(m.index - 1);
  if (isDigit(before)) return null;
  if (span.charCodeAt(0) === 43 && before === 43) return null;
  let cand = span;
  if (span.charCodeAt(0) === 43) {
    // international: cut at junk such as `--`, then end on a digit again
    const cut = cand.search(DOUBLE_SEP);
    if (cut > 0) cand = cand.slice(0, cut);
    let e = cand.length;
    while (e > 0 && !isDigit(cand.charCodeAt(e - 1))) e--;
    cand = cand.slice(0, e);
    let open = 0;
    for (let i = 0; i < cand.length; i++) {
      if (cand[i] === '(') open++;
      else if (cand[i] === ')') { if (--open < 0) return null; }
    }
    if (open !== 0) return null;
  }
  let digits = 0;
  for (let i = 0; i < cand.length; i++) if (isDigit(cand.charCodeAt(i))) digits++;
  if (span.charCodeAt(0) === 43 ? digits < 8 || digits > 20 : digits < 9 || digits > 15) return null;
  return maskDigits(cand, 2) + span.slice(cand.length);
}

/** `+1 (555) 123-4567` → `+* (***) ***-**67`: every digit but the last two. */
export function maskPhones(s: string, counter?: MaskCounter): string {
  let out = s;
  if (s.includes('+')) out = replaceMatches(out, PHONE_INTL, (m) => phoneCandidate(out, m), counter, true);
  out = replaceMatches(out, PHONE_NANP, (m) => phoneCandidate(out, m), counter, true);
  return replaceMatches(out, PHONE_TRUNK0, (m) => phoneCandidate(out, m), counter, true);
}

// ---------------------------------------------------------------------------------------------
// ipv4: four dotted octets 0-255, not part of a longer dotted number (versions like 1.2.3.4.5).

const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4 = new RegExp(`${OCTET}(?:\\.${OCTET}){3}(?!\\.?\\d)`, 'g');

/** `10.1.2.3` → `10.*.*.*` */
export function maskIpv4s(s: string, counter?: MaskCounter): string {
  return replaceMatches(s, IPV4, (m) => (afterDigit(s, m.index, 46) ? null : `${m[0].slice(0, m[0].indexOf('.'))}.*.*.*`), counter, true);
}

// ---------------------------------------------------------------------------------------------
// iban: country code, 2 check digits, 11-30 alphanumerics, compact or in groups of 4, and a
// valid ISO 7064 mod-97 checksum.

const IBAN = /[A-Za-z]{2}\d{2}(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,3})?)(?![A-Za-z0-9])/g;

export function ibanValid(compact: string): boolean {
  if (compact.length < 15 || compact.length > 34) return false;
  const s = compact.toUpperCase();
  const re = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (let i = 0; i < re.length; i++) {
    const c = re.charCodeAt(i);
    if (c >= 48 && c <= 57) rem = (rem * 10 + (c - 48)) % 97;
    else if (c >= 65 && c <= 90) rem = (rem * 100 + (c - 55)) % 97;
    else return false;
  }
  return rem === 1;
}

function maskIban(iban: string): string {
  // keep the country code and the last 4 characters
  let alnumTotal = 0;
  for (let i = 0; i < iban.length; i++) if (iban[i] !== ' ') alnumTotal++;
  let seen = 0;
  let out = '';
  for (let i = 0; i < iban.length; i++) {
    if (iban[i] === ' ') { out += ' '; continue; }
    out += seen < 2 || seen >= alnumTotal - 4 ? iban[i] : '*';
    seen++;
  }
  return out;
}

/** `DE89 3704 0044 0532 0130 00` → `DE** **** **** **** **30 00` */
export function maskIbans(s: string, counter?: MaskCounter): string {
  IBAN.lastIndex = 0;
  let m = IBAN.exec(s);
  if (m === null) return s;
  let out = '';
  let last = 0;
  let n = 0;
  while (m !== null) {
    // left boundary: not inside a longer word, except right after a `\n`-style escape
    const b = m.index;
    if (b > 0 && isAsciiAlnum(s.charCodeAt(b - 1)) && !(s.charCodeAt(b - 2) === 92 && b >= 2)) {
      IBAN.lastIndex = b + 1;
      m = IBAN.exec(s);
      continue;
    }
    let cand = m[0];
    // a spaced IBAN may have swallowed a following 4-letter word: drop trailing groups
    while (!ibanValid(cand.replaceAll(' ', ''))) {
      const sp = cand.lastIndexOf(' ');
      if (sp < 0) { cand = ''; break; }
      cand = cand.slice(0, sp);
    }
    if (cand.length >= 15) {
      out += s.slice(last, m.index) + maskIban(cand);
      last = m.index + cand.length;
      IBAN.lastIndex = last;
      n++;
    } else IBAN.lastIndex = b + 1;
    m = IBAN.exec(s);
  }
  if (n === 0) return s;
  if (counter) counter.masked += n;
  return out + s.slice(last);
}

// ---------------------------------------------------------------------------------------------
// secret: well-known token formats (prefix kept, rest masked), private key blocks, passwords in
// URLs, and values after key/token/secret/password-like keys.

/** Shannon entropy in bits per character. */
function entropy(v: string): number {
  const freq = new Map<number, number>();
  for (let i = 0; i < v.length; i++) { const c = v.charCodeAt(i); freq.set(c, (freq.get(c) ?? 0) + 1); }
  let h = 0;
  for (const f of freq.values()) { const p = f / v.length; h -= p * Math.log2(p); }
  return h;
}

/** Long, mixes letters and digits, and not repetitive: a generated credential, not a word. */
export function looksRandom(v: string): boolean {
  if (v.length < 16) return false;
  let digits = 0;
  let letters = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (isDigit(c)) digits++;
    else if ((c >= 65 && c <= 90) || (c >= 97 && c <= 122)) letters++;
  }
  return digits > 0 && letters > 0 && entropy(v) >= 3;
}

const prefixMask = (v: string): string => `${v.slice(0, 4)}****`;

// one case-sensitive pass for token formats whose prefix identifies them
const TOKENS = new RegExp([
  String.raw`(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}`, // Stripe secret / restricted keys
  String.raw`whsec_[A-Za-z0-9+/]{20,}`, // webhook signing secrets
  String.raw`gh[pousr]_[A-Za-z0-9]{30,}`, // GitHub tokens
  String.raw`github_pat_[A-Za-z0-9_]{30,}`,
  String.raw`glpat-[A-Za-z0-9_-]{20,}`, // GitLab
  String.raw`xox[abposr]-[A-Za-z0-9-]{10,}`, // Slack
  String.raw`(?:AKIA|ASIA)[0-9A-Z]{16}`, // AWS access key ids
  String.raw`AIza[0-9A-Za-z_-]{35}`, // Google API keys
  String.raw`npm_[A-Za-z0-9]{36}`,
  String.raw`(sk-(?:proj-|svcacct-|ant-[a-z0-9]{2,8}-)?)([A-Za-z0-9_-]{20,})`, // OpenAI / Anthropic style
].join('|'), 'g');

const PEM = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?(?:-----END \1PRIVATE KEY-----|$)/g;
const URL_PASSWORD = /\b([a-z][a-z0-9+.-]{1,20}:\/\/[^\s:/@"'<>]+:)([^\s@/"'<>]+)@/gi;
// groups: 1 key, 2 opening quote, 3 quoted value (to the closing quote), 4 auth scheme, 5 bare value
const KEY_VALUE = /(passw(?:or)?d|passphrase|pwd|key|token|secret|credentials?|auth(?:orization)?|signature)["']?\s*[:=]\s*(?:(["'])((?:(?!\2)[^\\\n]){1,4096})|((?:bearer|basic|token)\s+)?([^\s"'&,;<>\\]+))/gi;
const AUTH_SCHEME = /^(?:bearer|basic|token)\s+/i;
const BEARER = /\b(bearer\s+)([A-Za-z0-9._~+/-]{16,}=*)/gi;
const SECRET_TRIGGER = /eyJ|AKIA|ASIA|AIza|_live_|_test_|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|sk-|whsec_|npm_|PRIVATE KEY|:\/\/|key|token|secret|passw|passphrase|pwd|credential|auth|bearer|signature/i;

function isBase64UrlChar(c: number): boolean { return isAsciiAlnum(c) || c === 45 || c === 95; }

/**
 * JWT/JWS: `eyJ` + 8 or more base64url characters, `.`, 8 or more, `.`, any. Scanned by hand:
 * as a regex, each `eyJ` inside a long run without dots rescans the run (quadratic).
 */
function maskJwts(s: string, counter: MaskCounter | undefined): string {
  let i = s.indexOf('eyJ');
  if (i < 0) return s;
  const len = s.length;
  const runEnd = (from: number): number => { let e = from; while (e < len && isBase64UrlChar(s.charCodeAt(e))) e++; return e; };
  let out = '';
  let last = 0;
  let n = 0;
  while (i >= 0) {
    const e1 = runEnd(i + 3);
    if (e1 - i >= 11 && s.charCodeAt(e1) === 46) {
      const e2 = runEnd(e1 + 1);
      if (e2 - e1 - 1 >= 8 && s.charCodeAt(e2) === 46) {
        const e3 = runEnd(e2 + 1);
        out += s.slice(last, i) + prefixMask(s.slice(i, e3));
        last = e3;
        n++;
        i = s.indexOf('eyJ', e3);
        continue;
      }
    }
    // any eyJ inside the first run ends at the same place and fails the same way
    i = s.indexOf('eyJ', e1);
  }
  if (n === 0) return s;
  if (counter) counter.masked += n;
  return out + s.slice(last);
}

export function maskSecrets(s: string, counter?: MaskCounter): string {
  if (!SECRET_TRIGGER.test(s)) return s;
  let out = maskJwts(s, counter);
  out = replaceMatches(out, PEM, (m) => {
    const head = `-----BEGIN ${m[1]}PRIVATE KEY-----`;
    const tail = m[0].endsWith('PRIVATE KEY-----') && m[0].length > head.length ? `-----END ${m[1]}PRIVATE KEY-----` : '';
    return `${head}****${tail}`;
  }, counter);
  out = replaceMatches(out, TOKENS, (m) => {
    if (m[1] !== undefined) return looksRandom(m[2]) ? prefixMask(m[0]) : null;
    return prefixMask(m[0]);
  }, counter);
  out = replaceMatches(out, URL_PASSWORD, (m) => `${m[1]}****@`, counter);
  out = replaceMatches(out, BEARER, (m) => (looksRandom(m[2]) || m[2].length >= 24 ? m[1] + prefixMask(m[2]) : null), counter);
  out = replaceMatches(out, KEY_VALUE, (m) => {
    const key = m[1].toLowerCase();
    const value = m[3] ?? m[5];
    const lead = m[0].slice(0, m[0].length - value.length);
    const scheme = m[4] !== undefined || (m[3] !== undefined && AUTH_SCHEME.test(value));
    if (key.startsWith('pass') || key === 'pwd' || key.startsWith('credential') || (key.startsWith('auth') && scheme)) {
      return value === '****' ? null : `${lead}****`;
    }
    if (value.includes('****')) return null; // already masked by a pass above
    return looksRandom(value) ? lead + prefixMask(value) : null;
  }, counter);
  return out;
}
