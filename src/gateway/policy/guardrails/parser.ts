/**
 * The one place that talks to libpg-query (the PostgreSQL 18 parser compiled to WASM).
 * Everything else works on the JSON parse tree it returns, walked generically: nodes are
 * `{ TypeName: { ...fields } }`, lists are arrays.
 */
import { loadModule, parseSync, parsePlPgSQLSync, scanSync } from 'libpg-query';
import { Lru } from './lru.ts';

// The parse tree is plain JSON from the WASM parser; the walkers read it generically, so a
// loose record type is the honest description (the @pgsql/types union would need a cast at
// every step of a generic walk).
export type PgNode = Record<string, any>;

/**
 * Walks a libpg-query tree (arrays and nodes): calls `onNode(key, child)` for every object-valued
 * field; when it returns true the child counts as handled and is not descended into.
 */
export function walkTree(v: unknown, onNode: (key: string, child: PgNode) => boolean): void {
  if (Array.isArray(v)) {
    for (const x of v) walkTree(x, onNode);
    return;
  }
  if (v === null || typeof v !== 'object') return;
  const o = v as PgNode;
  for (const key in o) {
    const child = o[key];
    if (child === null || typeof child !== 'object') continue;
    if (!onNode(key, child)) walkTree(child, onNode);
  }
}

export interface RawStmt {
  stmt: PgNode;
  /** the statement's own source text (one statement of a multi-statement string) */
  text: string;
}

export type ParseOutcome = { ok: true; stmts: RawStmt[] } | { ok: false; error: string };

let loaded: Promise<void> | undefined;
let ready = false;

/** Loads the WASM parser once; later calls return the same promise. */
export function initParser(): Promise<void> {
  loaded ??= loadModule().then(() => {
    ready = true;
  });
  return loaded;
}

function assertReady(): void {
  if (!ready) throw new Error('guardrails: call `await initGuardrails()` once before judging SQL');
}

const parseCache = new Lru<string, ParseOutcome>(2000);

/** Parses `sql` into its statements, each with its own source text. Cached by text. */
export function parseSql(sql: string): ParseOutcome {
  const hit = parseCache.get(sql);
  if (hit) return hit;
  assertReady();
  // An empty Query is legal (the server answers EmptyQueryResponse); libpg-query rejects ''.
  if (sql === '') return { ok: true, stmts: [] };
  let out: ParseOutcome;
  try {
    const tree = parseSync(sql) as unknown as { stmts?: Array<{ stmt: PgNode; stmt_location?: number; stmt_len?: number }> };
    const stmts = tree.stmts ?? [];
    out = { ok: true, stmts: stmts.map((s) => ({ stmt: s.stmt, text: sliceStatement(sql, s.stmt_location ?? 0, s.stmt_len ?? 0) })) };
  } catch (err) {
    out = { ok: false, error: errorText(err) };
  }
  parseCache.set(sql, out);
  return out;
}

/** Parses the PL/pgSQL of one `DO` or `CREATE FUNCTION ... LANGUAGE plpgsql` statement. */
export function parsePlpgsql(stmtText: string): { ok: true; funcs: PgNode[] } | { ok: false; error: string } {
  assertReady();
  try {
    const r = parsePlPgSQLSync(stmtText) as unknown as { plpgsql_funcs?: PgNode[] };
    return { ok: true, funcs: r.plpgsql_funcs ?? [] };
  } catch (err) {
    return { ok: false, error: errorText(err) };
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// libpg_query reports locations as UTF-8 byte offsets, JavaScript slices UTF-16 units.
function sliceStatement(sql: string, loc: number, len: number): string {
  if (/^[\x00-\x7f]*$/.test(sql)) return len > 0 ? sql.slice(loc, loc + len) : sql.slice(loc);
  const buf = Buffer.from(sql, 'utf8');
  return buf.subarray(loc, len > 0 ? loc + len : buf.length).toString('utf8');
}

/**
 * The texts deny_patterns are matched against, built from PostgreSQL's own scanner so tokens
 * split exactly as the server splits them: comments removed, quoted identifiers decoded (so
 * `"pg_read_file"` and `U&"pg\005fread_file"` read as pg_read_file), lowercased, and
 * - spaced: every gap between two tokens (whitespace, comments) is one space
 *   (`select * from t where a = 1`);
 * - compact: the space is kept only between two words (`select*from t where a=1`,
 *   `pg_read_file('x')`), so patterns need not guess the spacing around punctuation.
 * Scanner offsets are UTF-8 byte offsets, so the text is sliced as bytes.
 */
export function normalizeForPatterns(sql: string): [spaced: string, compact: string] {
  const forms = normalizedPieces(sql, NO_SLOTS);
  if (!forms) {
    const s = sql.replace(/\s+/g, ' ').trim().toLowerCase();
    return [s, s];
  }
  return [forms.spaced[0].toLowerCase(), forms.compact[0].toLowerCase()];
}

/**
 * normalizeForPatterns as a template: the normalized forms of `sql` cut at the given tokens
 * (flattened [start, end) UTF-8 byte spans, in order), lowercased, so that
 * `pieces[0] + lower(token0) + pieces[1] + ...` is the normalized form of any text that
 * differs from `sql` only in those tokens (see shape.ts). Undefined when a span is not exactly
 * one scanner token or the text does not scan.
 */
export function patternTemplate(sql: string, byteSpans: readonly number[]): { spaced: string[]; compact: string[] } | undefined {
  const forms = normalizedPieces(sql, byteSpans);
  if (!forms) return undefined;
  return { spaced: forms.spaced.map((s) => s.toLowerCase()), compact: forms.compact.map((s) => s.toLowerCase()) };
}

const NO_SLOTS: readonly number[] = [];

function normalizedPieces(sql: string, slots: readonly number[]): { spaced: string[]; compact: string[] } | undefined {
  assertReady();
  let tokens;
  try {
    tokens = scanSync(sql).tokens;
  } catch {
    return undefined;
  }
  const buf = Buffer.from(sql, 'utf8');
  const spaced: string[] = [];
  const compact: string[] = [];
  const spacedOut: string[] = [];
  const compactOut: string[] = [];
  let slot = 0;
  let prevEnd = -1;
  let prevWordy = false;
  for (const t of tokens) {
    if (t.tokenName === 'SQL_COMMENT' || t.tokenName === 'C_COMMENT') continue;
    const text = buf.subarray(t.start, t.end).toString('utf8');
    const wordy = WORDY.test(text);
    if (prevEnd >= 0 && t.start > prevEnd) {
      spaced.push(' ');
      if (wordy && prevWordy) compact.push(' ');
    }
    if (slot < slots.length && t.end > slots[slot]) {
      if (t.start !== slots[slot] || t.end !== slots[slot + 1]) return undefined;
      spacedOut.push(spaced.join(''));
      compactOut.push(compact.join(''));
      spaced.length = 0;
      compact.length = 0;
      slot += 2;
    } else {
      const decoded = decodeIdentifier(text);
      spaced.push(decoded);
      compact.push(decoded);
    }
    prevEnd = t.end;
    prevWordy = wordy;
  }
  if (slot !== slots.length) return undefined;
  spacedOut.push(spaced.join(''));
  compactOut.push(compact.join(''));
  return { spaced: spacedOut, compact: compactOut };
}

const WORDY = /^[\p{L}\p{N}_$'"]/u;

function decodeIdentifier(tok: string): string {
  if (tok.startsWith('"') && tok.endsWith('"') && tok.length >= 2) return tok.slice(1, -1).replace(/""/g, '"');
  if (/^u&"/i.test(tok) && tok.endsWith('"')) {
    return tok.slice(3, -1).replace(/""/g, '"').replace(/\\(\\|\+[0-9a-fA-F]{6}|[0-9a-fA-F]{4})/g, (_m, code: string) => {
      if (code === '\\') return '\\';
      const cp = parseInt(code.startsWith('+') ? code.slice(1) : code, 16);
      return cp <= 0x10ffff ? String.fromCodePoint(cp) : '';
    });
  }
  return tok;
}
