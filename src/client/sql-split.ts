/**
 * Splits SQL input into statements the way psql does (issue 11), so that `hoopctl exec` runs,
 * reports and stops on each statement on its own, like `psql -v ON_ERROR_STOP=1 -f`:
 *
 * - a `;` ends a statement only outside quotes and comments and at parenthesis depth 0;
 * - quotes: '...' (with '' inside), E'...' (backslash escapes), "identifiers", $tag$ bodies $tag$
 *   (a `$1` parameter is not a dollar quote);
 * - comments: `-- to end of line`, nested block comments;
 * - the body of `CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END` (SQL-standard
 *   bodies, PostgreSQL 14+) keeps its semicolons, as psql's lexer counts BEGIN/CASE against END;
 * - input that is only whitespace and comments is not a statement (psql sends nothing either);
 *   comments before a statement are not part of its text;
 * - a psql meta-command (a line starting with a backslash between statements) is an error with
 *   the line number: exec speaks SQL only (wrap psql with `hoopctl exec <conn> -- psql -f ...`).
 *
 * Why split on the client instead of sending the input as one simple Query: PostgreSQL runs a
 * multi-statement Query as one implicit transaction and stops at the first error without saying
 * which statement failed, the gateway's guardrails refuse the whole Query when one statement is
 * blocked, and a held statement would hold all of them; split, each statement gets its own
 * result, command tag or error (SQLSTATE) in the output, `--continue-on-error` can go on after a
 * failure, and a review covers one statement.
 */

export interface SplitStatement {
  /** the statement's text, trimmed, without the terminating semicolon */
  text: string;
  /** 1-based line where it starts (for messages) */
  line: number;
}

export class SplitError extends Error {
  readonly line: number;
  constructor(message: string, line: number) {
    super(`line ${line}: ${message}`);
    this.line = line;
  }
}

const isIdentStart = (c: string) => /[A-Za-z_\u0080-\uffff]/.test(c);
const isIdentChar = (c: string) => /[A-Za-z0-9_$\u0080-\uffff]/.test(c);

export function splitSql(input: string): SplitStatement[] {
  const out: SplitStatement[] = [];
  const n = input.length;
  let i = 0;
  let line = 1;
  let start = 0;
  let startLine = 1;
  /** something other than whitespace and comments since `start` */
  let content = false;
  let depth = 0;
  // BEGIN ATOMIC bodies: words of the current statement, counted only for CREATE FUNCTION/PROCEDURE
  const words: string[] = [];
  let atomicDepth = 0;

  const finish = (end: number) => {
    if (content) out.push({ text: input.slice(start, end).trim(), line: startLine });
    content = false;
    depth = 0;
    atomicDepth = 0;
    words.length = 0;
  };
  const markContent = (at: number) => {
    if (!content) {
      content = true;
      start = at;
      startLine = line;
    }
  };
  const advanceTo = (j: number) => {
    for (let k = i; k < j && k < n; k++) if (input.charCodeAt(k) === 10) line++;
    i = j;
  };

  while (i < n) {
    const c = input[i];
    const next = input[i + 1];
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f') {
      i++;
      continue;
    }
    if (c === '-' && next === '-') {
      const nl = input.indexOf('\n', i);
      i = nl < 0 ? n : nl;
      continue;
    }
    if (c === '/' && next === '*') {
      let nest = 0;
      let j = i;
      const from = line;
      for (;;) {
        if (j >= n) throw new SplitError('unterminated /* comment', from);
        if (input[j] === '/' && input[j + 1] === '*') { nest++; j += 2; } else if (input[j] === '*' && input[j + 1] === '/') {
          nest--;
          j += 2;
          if (nest === 0) break;
        } else j++;
      }
      advanceTo(j);
      continue;
    }
    if (c === '\\' && !content) {
      const nl = input.indexOf('\n', i);
      const cmd = input.slice(i, nl < 0 ? n : nl).trim().split(/\s+/)[0];
      throw new SplitError(`psql meta-command ${cmd} is not supported by hoopctl exec (SQL only); run psql through the tunnel instead: hoopctl exec <conn> -- psql -f <file>`, line);
    }
    if (c === ';') {
      // an empty statement (`;;`, or `;` after comments only) is nothing, as in psql
      if (content && depth === 0 && atomicDepth === 0) finish(i);
      i++;
      continue;
    }
    markContent(i);
    if (c === '(') { depth++; i++; continue; }
    if (c === ')') { if (depth > 0) depth--; i++; continue; }
    if (c === "'") {
      // E'...' (escape string): the E directly before, not part of a longer identifier
      const prev = input[i - 1];
      const escape = (prev === 'E' || prev === 'e') && !(i >= 2 && isIdentChar(input[i - 2]));
      const from = line;
      let j = i + 1;
      for (;;) {
        if (j >= n) throw new SplitError('unterminated quoted string', from);
        const d = input[j];
        if (escape && d === '\\') { j += 2; continue; }
        if (d === "'") {
          if (input[j + 1] === "'") { j += 2; continue; }
          break;
        }
        j++;
      }
      advanceTo(j + 1);
      continue;
    }
    if (c === '"') {
      const end = input.indexOf('"', i + 1);
      if (end < 0) throw new SplitError('unterminated quoted identifier', line);
      // "" inside an identifier is an escaped quote: the scan simply continues past it
      let j = end;
      while (input[j + 1] === '"') {
        const k = input.indexOf('"', j + 2);
        if (k < 0) throw new SplitError('unterminated quoted identifier', line);
        j = k;
      }
      advanceTo(j + 1);
      continue;
    }
    if (c === '$') {
      const m = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(input.slice(i, i + 64));
      // `$1` (a parameter) or `a$b` (an identifier) are not dollar quotes
      if (m && !(i > 0 && isIdentChar(input[i - 1]))) {
        const tag = m[0];
        const end = input.indexOf(tag, i + tag.length);
        if (end < 0) throw new SplitError(`unterminated dollar-quoted string ${tag}`, line);
        advanceTo(end + tag.length);
        continue;
      }
      i++;
      continue;
    }
    if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentChar(input[j])) j++;
      const w = input.slice(i, j).toLowerCase();
      if (words.length < 8) words.push(w);
      if (isRoutineDefinition(words)) {
        if (w === 'begin' || w === 'case') atomicDepth++;
        else if (w === 'end' && atomicDepth > 0) atomicDepth--;
      }
      i = j;
      continue;
    }
    i++;
  }
  finish(n);
  return out;
}

/** CREATE [OR REPLACE] FUNCTION|PROCEDURE: the statements whose BEGIN ... END psql counts */
function isRoutineDefinition(w: string[]): boolean {
  if (w[0] !== 'create') return false;
  const k = w[1] === 'or' && w[2] === 'replace' ? w[3] : w[1];
  return k === 'function' || k === 'procedure';
}
