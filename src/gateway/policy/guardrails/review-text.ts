/**
 * What a reviewer sees of a held statement: the statement with the literal values that the
 * connection's column rules would mask in results masked too (PRODUCT.md: masking never lets a
 * raw sensitive value through; a review is one more channel). Detectors run over the whole text
 * afterwards, in the caller.
 *
 * A literal (string, number, bit/hex string, or a `$n` parameter's bound value) counts as a
 * value of a masked column when the nearest column reference it is compared with, assigned to or
 * inserted into matches a column rule:
 *   `ssn = '123'`, `'123' = ssn`, `lower(email) = 'a@b'`, `ssn in ('1', '2')`,
 *   `ssn like '12%'`, `ssn between '1' and '2'`, `set ssn = lpad('12', 9)`,
 *   `insert into t (id, ssn) values (1, '123')` (by position).
 * Function names and punctuation in between are looked through; any other word (AND, OR,
 * WHERE, a plain column) ends the search. A text the scanner cannot read has every literal
 * masked (fail closed). This is a lexical approximation on purpose: the reviewer needs the
 * rest of the statement verbatim (which rows, which table), and the statement itself runs
 * unchanged once approved.
 */
import { scanSync } from 'libpg-query';

interface Tok { name: string; text: string; start: number; end: number; kw: number }

const LITERAL = new Set(['SCONST', 'ICONST', 'FCONST', 'BCONST', 'XCONST', 'USCONST', 'PARAM']);
/** keywords looked through between a column and its value */
const GLUE_WORDS = new Set(['in', 'like', 'ilike', 'not', 'similar', 'to', 'between', 'any', 'some', 'all', 'array', 'is', 'distinct', 'from', 'escape', 'collate', 'row']);
/** keyword kinds (libpg-query): 1 unreserved and 2 column-name keywords may be column names */
const COLUMN_NAME_KW = new Set([0, 1, 2]);

function isWord(t: Tok): boolean {
  return t.name === 'IDENT' || (t.kw > 0 && COLUMN_NAME_KW.has(t.kw));
}

function unquote(t: Tok): string {
  return t.text.startsWith('"') ? t.text.slice(1, -1).replaceAll('""', '"') : t.text.toLowerCase();
}

/** stars over a literal's characters, keeping quotes, prefixes and layout characters */
function star(text: string): string {
  const q = text.indexOf("'");
  if (q >= 0 && text.endsWith("'") && text.length > q + 1) return text.slice(0, q + 1) + text.slice(q + 1, -1).replace(/[^\s@.\-']/gu, '*') + "'";
  if (text.startsWith('$') && !/^\$\d+$/.test(text)) {
    const tag = /^\$[^$]*\$/.exec(text)?.[0] ?? '$$';
    return tag + text.slice(tag.length, text.length - tag.length).replace(/[^\s@.\-]/gu, '*') + tag;
  }
  return text.replace(/[^\s@.\-]/gu, '*');
}

/**
 * `sql` with the literals of masked columns starred, and which `$n` parameters belong to masked
 * columns. `columnMatches` is the connection's column-rule test.
 */
export function maskStatementLiterals(sql: string, columnMatches: (name: string) => boolean): { text: string; maskedParams: Set<number> } {
  let toks: Tok[];
  const buf = Buffer.from(sql, 'utf8');
  try {
    toks = scanSync(sql).tokens
      .filter((t) => t.tokenName !== 'SQL_COMMENT' && t.tokenName !== 'C_COMMENT')
      .map((t) => ({ name: t.tokenName, text: buf.subarray(t.start, t.end).toString('utf8'), start: t.start, end: t.end, kw: t.keywordKind }));
  } catch {
    // unreadable: every quoted or numeric run is starred
    return { text: sql.replace(/'(?:[^']|'')*'|\$[A-Za-z_]*\$[\s\S]*?\$[A-Za-z_]*\$|\b\d[\d.eE+-]*\b/g, (m) => star(m)), maskedParams: new Set() };
  }
  const masked = new Set<number>();
  const isMaskedColumn = (i: number) => isWord(toks[i]) && columnMatches(unquote(toks[i]));

  /** the first column word reached from literal `i` going `dir` (-1 back, +1 forward) */
  const column = (i: number, dir: -1 | 1): number | undefined => {
    let depth = 0;
    for (let j = i + dir, steps = 0; j >= 0 && j < toks.length && steps < 64; j += dir, steps++) {
      const t = toks[j];
      if (LITERAL.has(t.name) || t.name === 'TYPECAST') continue;
      if (t.name === 'ASCII_40' || t.name === 'ASCII_41') { depth += (t.name === 'ASCII_40') === (dir === -1) ? -1 : 1; continue; }
      if (t.name === 'ASCII_44') continue; // a list: in (...), a function's arguments
      if (t.name === 'ASCII_46') continue; // qualified names: c.ssn
      if (t.name === 'ASCII_91' || t.name === 'ASCII_93') continue;
      if (/^(ASCII_(60|61|62|43|45|42|47|37|94|124|126|33|35|38|63))$/.test(t.name) || ['NOT_EQUALS', 'LESS_EQUALS', 'GREATER_EQUALS', 'Op'].includes(t.name)) continue;
      if (t.kw > 0 && GLUE_WORDS.has(t.text.toLowerCase())) continue;
      if (t.text.toLowerCase() === 'and' && betweenBefore(j)) continue;
      // a type name after `::` (going forward: the next word; going back: the word before it)
      if (dir === 1 && toks[j - 1]?.name === 'TYPECAST') continue;
      if (dir === -1 && toks[j - 1]?.name === 'TYPECAST') { j--; continue; }
      if (isWord(t)) {
        // a function name: look through it to its arguments
        if (toks[j + 1]?.name === 'ASCII_40' && dir === -1) continue;
        if (toks[j + 1]?.name === 'ASCII_40' && dir === 1) continue;
        return j;
      }
      return undefined;
    }
    return undefined;
  };
  const betweenBefore = (j: number) => {
    for (let k = j - 1; k >= 0 && k > j - 6; k--) if (toks[k].text.toLowerCase() === 'between') return true;
    return false;
  };

  toks.forEach((t, i) => {
    if (!LITERAL.has(t.name)) return;
    const back = column(i, -1);
    const fwd = column(i, 1);
    if ((back !== undefined && isMaskedColumn(back)) || (fwd !== undefined && isMaskedColumn(fwd))) masked.add(i);
  });

  // INSERT INTO t (c1, c2, ...) VALUES (v1, v2, ...), (...): values by position
  for (let i = 0; i < toks.length; i++) {
    if (toks[i].text.toLowerCase() !== 'insert') continue;
    let j = i + 1;
    while (j < toks.length && toks[j].name !== 'ASCII_40' && toks[j].text.toLowerCase() !== 'values' && toks[j].name !== 'ASCII_59') j++;
    if (toks[j]?.name !== 'ASCII_40') continue;
    const cols: boolean[] = [];
    for (j++; j < toks.length && toks[j].name !== 'ASCII_41'; j++) if (isWord(toks[j])) cols.push(columnMatches(unquote(toks[j])));
    while (j < toks.length && toks[j].text.toLowerCase() !== 'values' && toks[j].name !== 'ASCII_59') j++;
    if (toks[j]?.text.toLowerCase() !== 'values') continue;
    let depth = 0;
    let pos = 0;
    for (j++; j < toks.length && toks[j].name !== 'ASCII_59'; j++) {
      const t = toks[j];
      if (t.name === 'ASCII_40') { if (depth++ === 0) pos = 0; continue; }
      if (t.name === 'ASCII_41') { depth--; continue; }
      if (depth === 0 && t.name !== 'ASCII_44') break; // ON CONFLICT, RETURNING
      if (depth === 1 && t.name === 'ASCII_44') { pos++; continue; }
      if (LITERAL.has(t.name) && cols[pos]) masked.add(j);
    }
  }

  let out = '';
  let last = 0;
  const maskedParams = new Set<number>();
  for (const i of [...masked].sort((a, b) => a - b)) {
    const t = toks[i];
    if (t.name === 'PARAM') { maskedParams.add(Number(t.text.slice(1))); continue; }
    out += buf.subarray(last, t.start).toString('utf8') + star(t.text);
    last = t.end;
  }
  return { text: out + buf.subarray(last).toString('utf8'), maskedParams };
}
