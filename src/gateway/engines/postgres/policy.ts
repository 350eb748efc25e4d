/**
 * Binds the pure policy modules (guardrails, masking) to one connection's config. Compiled once
 * per connection config and shared by all its sessions; masking is imported only when a
 * connection uses it. The SQL parser is loaded for every postgres connection since the
 * credential floor (issue 10 §2) applies to all of them; a plain relay still parses only texts
 * that pass the floor's keyword pre-check.
 */
import { Lru } from '../../policy/guardrails/lru.ts';
import type { ConnectionConfig } from '../../config/schema.ts';
import type { Relations, ViewDef } from '../../policy/guardrails/index.ts';

export type { Relations, ViewDef };

/** `guard`: run it so that it can be undone (guardrails.max_rows), see the engine's README */
export type Verdict = { action: 'allow'; guard?: boolean } | { action: 'deny' | 'review'; rule: string; message: string; guard?: boolean };
export type Derivation = Array<'masked' | 'plain' | 'unknown'>;
/** judges a simple Query text or a Parse (with its statement name: SQL EXECUTE can run it) */
export type Judge = (sql: string, statementName?: string) => Verdict;

/** Counts masked values (added to the session's stats). */
export interface MaskCounter { masked: number }

/** Masking bound to one connection's rules. */
export interface MaskFns {
  /** there are column rules (not only detectors) */
  readonly columnRules: boolean;
  /** there are content detectors */
  readonly detectors: boolean;
  columnMatches(name: string): boolean;
  /** replacement for a whole masked value; null = send SQL NULL (types no mask parses as) */
  wholeValue(value: string, typeOid: number): string | null;
  /** detectors on one text-format value of type `typeOid`; same instance when unchanged, null = NULL */
  value(value: string, typeOid: number, counter: MaskCounter): string | null;
  /** a pre-check for one stream of values (one per session): see ByteScreen */
  newScreen(): Screen;
  /** detectors on free text (also masks values quoted in error details); same instance when unchanged */
  text(text: string, counter?: MaskCounter): string;
  /** free text answering a statement that touched a masked column (whole: the user's own text) */
  taintedText(text: string, whole: boolean, counter?: MaskCounter): string;
  /** a ParameterStatus value (protocol-critical ones pass); same instance when unchanged */
  parameterStatus(name: string, value: string, tainted: boolean, counter?: MaskCounter): string;
  /** one COPY TO STDOUT row */
  copyLine(line: string, columnsMasked: boolean[] | null, format: CopyFormat, counter: MaskCounter): string;
  /** per column of a view: derived from a column-rule column; null = mask them all (see derivation.ts) */
  viewColumns(view: ViewDef, relations: Relations): readonly boolean[] | null;
}

/** false when no detector can match the UTF-8 text buf[start, end) (escapes answer true) */
export interface Screen { mayMatch(buf: Buffer, start: number, end: number): boolean }

export interface CopyFormat { csv: boolean; delimiter?: string; null?: string }

/** what the statement's lineage says about its side channels (lineage.ts) */
export interface Lineage { touches: boolean; sideChannel?: string }

export interface Policy {
  /** one judge per client connection (the guardrail session keeps its own cache) */
  newJudge(): Judge | null;
  /**
   * The credential floor (every connection, no config turns it off): a refusal message when
   * the text changes the gateway's own target login `user`, else null. Parses only texts
   * that pass a cheap keyword pre-check.
   */
  floor(sql: string, user: string): string | null;
  /** null without column rules (nothing to follow); else whether the text touches a masked column */
  lineage(sql: string, relations?: Relations | null): Lineage | null;
  mask: MaskFns | null;
  /** per output column of the statement's last result: derived from a masked column or not (views expanded with `relations`) */
  derive(sql: string, relations?: Relations | null): Derivation | null;
  /** the statement's COPY TO STDOUT options from its parse tree; null when the parser is not loaded or cannot tell */
  copyOptions(sql: string): (CopyFormat & { header: boolean }) | null;
  /**
   * What a reviewer sees of a held statement (and its bound parameters): literals of column-rule
   * columns starred (review-text.ts), then the detectors over all of it.
   */
  reviewText(sql: string, params?: ReadonlyArray<string | null> | null): string;
  /** the same masking for a statement's recording and audit: its text and its parameters */
  recordText(sql: string, params?: ReadonlyArray<string | null> | null): { text: string; params: Array<string | null> | null };
}

const NONE: ReadonlySet<number> = new Set();
const WORD = /[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/g;
const starParam = (p: string) => p.replace(/[^\s@.\-]/gu, '*');

const compiled = new WeakMap<ConnectionConfig, Promise<Policy>>();

export function loadPolicy(conn: ConnectionConfig): Promise<Policy> {
  let p = compiled.get(conn);
  if (!p) {
    p = compile(conn);
    compiled.set(conn, p);
    p.catch(() => compiled.delete(conn));
  }
  return p;
}

async function compile(conn: ConnectionConfig): Promise<Policy> {
  const g = conn.guardrails;
  const hasGuardrails = !!g && (g.deny.length > 0 || g.review.length > 0 || g.deny_patterns.length > 0 || g.deny_functions.length > 0
    || g.max_rows?.delete !== undefined || g.max_rows?.update !== undefined);
  const mcfg = conn.masking;
  const masking = mcfg && (mcfg.columns.length > 0 || mcfg.detectors.length > 0) ? await import('../../policy/masking/index.ts') : null;
  const m = masking && mcfg ? masking.compileMasking(mcfg) : null;
  const columnRules = !!m?.active && m.hasColumnRules;
  // the SQL parser: guardrails, column rules (they follow values through expressions and views)
  // and the credential floor, which every connection has (loaded once per process)
  const guardrails = await import('../../policy/guardrails/index.ts');
  await guardrails.initGuardrails();
  const floor: Policy['floor'] = (sql, user) => (guardrails.mayChangeLogin(sql) ? guardrails.credentialFloor(sql, user) : null);
  let mask: MaskFns | null = null;
  let derive: Policy['derive'] = () => null;
  let lineage: Policy['lineage'] = () => null;
  const copyOptions: Policy['copyOptions'] = (sql) => guardrails.copyOutOptions(sql);
  if (masking && m?.active) {
    // the catalog statistics' sample values are masked like column-rule columns (lineage.ts)
    const columnMatches = (name: string) => masking.columnMatches(m, name) || (columnRules && guardrails.STATS_VALUE_COLUMNS.has(name.toLowerCase()));
    mask = {
      columnRules,
      detectors: m.hasDetectors,
      columnMatches,
      wholeValue: (value, typeOid) => masking.maskWholeValue(value, typeOid),
      value: (value, typeOid, counter) => masking.maskValue(m, value, typeOid, counter),
      newScreen: () => new masking.ByteScreen(m),
      text: (text, counter) => masking.maskText(m, text, counter),
      taintedText: (text, whole, counter) => masking.maskTaintedText(m, text, whole, counter),
      parameterStatus: (name, value, tainted, counter) => masking.maskParameterStatus(m, name, value, tainted, counter),
      copyLine: (line, cols, f, counter) => f.csv
        ? masking.maskCsvLine(m, line, cols, { delimiter: f.delimiter, null: f.null }, counter)
        : masking.maskCopyLine(m, line, cols, { delimiter: f.delimiter, null: f.null }, counter),
      viewColumns: (view, relations) => guardrails.viewColumnsMasked(view, columnMatches, relations),
    };
    if (columnRules) {
      derive = (sql, relations) => guardrails.outputDerivation(sql, columnMatches, relations);
      lineage = (sql, relations) => guardrails.statementLineage(sql, columnMatches, relations);
    }
  }
  let newJudge: Policy['newJudge'] = () => null;
  if (hasGuardrails) {
    const rules = guardrails.compileGuardrails(g);
    newJudge = () => {
      const session = new guardrails.GuardrailSession(rules);
      return (sql, statementName) => session.judge(sql, statementName);
    };
  }
  // literals of column-rule columns (review-text.ts), cached by text; a text none of whose words
  // is a masked column name cannot hold one, and is not scanned (~1 µs instead of a WASM scan)
  const literals = new Lru<string, { text: string; maskedParams: ReadonlySet<number> }>(2000);
  const maskLiterals = (sql: string): { text: string; maskedParams: ReadonlySet<number> } => {
    if (!mask?.columnRules) return { text: sql, maskedParams: NONE };
    const hit = literals.get(sql);
    if (hit) return hit;
    const words = sql.match(WORD);
    const v = words?.some((w) => mask!.columnMatches(w.toLowerCase())) ? guardrails.maskStatementLiterals(sql, mask.columnMatches) : { text: sql, maskedParams: NONE };
    literals.set(sql, v);
    return v;
  };
  const reviewText: Policy['reviewText'] = (sql, params) => {
    const { text, maskedParams } = maskLiterals(sql);
    let out = text;
    if (params && params.length > 0) {
      const shown = params.map((p, i) => `$${i + 1} = ${p === null ? 'NULL' : maskedParams.has(i + 1) ? `'${starParam(p)}'` : `'${p.replaceAll("'", "''")}'`}`);
      out += `\n-- parameters: ${shown.join(', ')}`;
    }
    return mask ? mask.text(out) : out;
  };
  const recordText: Policy['recordText'] = (sql, params) => {
    if (!mask) return { text: sql, params: params ? [...params] : null };
    const { text, maskedParams } = maskLiterals(sql);
    return { text: mask.text(text), params: params ? params.map((p, i) => (p === null ? null : maskedParams.has(i + 1) ? starParam(p) : mask!.text(p))) : null };
  };
  return { newJudge, floor, lineage, mask, derive, copyOptions, reviewText, recordText };
}
