/**
 * Sharing work between texts that differ only in literal values (`... WHERE aid = 48213`,
 * `... WHERE aid = 7`): the verdict, the deny_patterns normalization and the output
 * derivation of one text serve every text of the same shape (lexer.ts), when that is exact.
 *
 * Why it is exact, in three steps:
 * 1. Same tree. The first text seen with a shape is parsed anyway. Every literal the lexer
 *    cut out must be, in its parse tree, an A_Const at that literal's location (or at the
 *    location of a `-` just before it: the grammar folds `-5` into one constant placed at the
 *    sign), of the lexer's class (ICONST, FCONST, SCONST). The grammar builds A_Const from
 *    those tokens without looking at their values, and the tokens of another text of the shape
 *    have the same classes in the same places, so it parses to the same tree but for the
 *    values inside those A_Consts. A literal used anywhere else (a type modifier like
 *    `float(5)`, which the grammar validates; `EXPLAIN (ANALYZE 0)`; a function body or DO
 *    string; `FETCH 5`) is not an A_Const there, and the shape shares nothing.
 * 2. Same analysis. The analysis walks the tree deterministically and only looks inside an
 *    A_Const in constant folding, which counts every such read; code inside strings and bodies
 *    is flagged too (analyze.ts `literalsRead`). An analysis of the first text that read no
 *    value would have run identically on any tree that differs only in those values.
 *    Analyses with PREPARE/EXECUTE steps are not shared (they go through session state).
 * 3. Same patterns input. deny_patterns still run on each actual text: the raw text as is,
 *    and its normalized forms rebuilt from a template (the first text's normalized forms cut
 *    at the literal tokens, checked to be exactly one scanner token each) with this text's
 *    literal tokens put back, lowercased. Lowercasing piece by piece equals lowercasing the
 *    whole except for a capital sigma, which the lexer refuses.
 * Output derivation never reads A_Const values at all, so step 1 suffices for it.
 */
import { analyzeSql, type Analysis } from './analyze.ts';
import type { Shape } from './lexer.ts';
import { Lru } from './lru.ts';
import { normalizeForPatterns, parseSql, patternTemplate, walkTree } from './parser.ts';

interface Template {
  spaced: string[];
  compact: string[];
}

export interface ShapeEntry {
  /** the first text seen with this shape, whose parse tree was checked */
  readonly text: string;
  readonly spans: readonly number[];
  /** every text of this shape parses to the same tree but for the values of its literals */
  readonly sameTree: boolean;
  /** the analysis all texts of the shape share (null: none), computed on first use */
  analysis: Analysis | null | undefined;
  template: Template | null | undefined;
}

const entries = new Lru<string, ShapeEntry>(2000);

/** The entry of `shape`, created (and checked against the parse of `sql`) on first sight. */
export function shapeEntry(sql: string, shape: Shape): ShapeEntry {
  let e = entries.get(shape.key);
  if (!e) {
    e = { text: sql, spans: shape.spans, sameTree: sameTree(sql, shape), analysis: undefined, template: undefined };
    entries.set(shape.key, e);
  }
  return e;
}

/** The analysis every text of this shape may use, or null when it depends on literal values. */
export function sharedAnalysis(e: ShapeEntry): Analysis | null {
  if (e.analysis === undefined) {
    const a = e.sameTree ? analyzeSql(e.text) : undefined;
    e.analysis = a && a.unparseable === undefined && !a.literalsRead && a.steps.length === 0 && a.texts.length === 1 ? a : null;
  }
  return e.analysis;
}

/**
 * normalizeForPatterns(sql) for a text of this entry's shape, without scanning it; undefined
 * when the template cannot be built (then run the full path).
 */
export function patternForms(e: ShapeEntry, sql: string, shape: Shape): [spaced: string, compact: string] | undefined {
  if (e.template === undefined) e.template = buildTemplate(e) ?? null;
  const t = e.template;
  if (!t) return undefined;
  return fill(t, sql, shape.spans);
}

function fill(t: Template, sql: string, spans: readonly number[]): [string, string] {
  let spaced = t.spaced[0];
  let compact = t.compact[0];
  for (let k = 0; k < spans.length; k += 2) {
    const lit = sql.slice(spans[k], spans[k + 1]).toLowerCase();
    spaced += lit + t.spaced[(k >> 1) + 1];
    compact += lit + t.compact[(k >> 1) + 1];
  }
  return [spaced, compact];
}

function buildTemplate(e: ShapeEntry): Template | undefined {
  const t = patternTemplate(e.text, byteSpans(e.text, e.spans));
  if (!t) return undefined;
  // the template must give back the first text's own forms exactly
  const [spaced, compact] = normalizeForPatterns(e.text);
  const [s2, c2] = fill(t, e.text, e.spans);
  return s2 === spaced && c2 === compact ? t : undefined;
}

// libpg_query reports locations as UTF-8 byte offsets.
function byteSpans(sql: string, spans: readonly number[]): number[] {
  if (/^[\x00-\x7f]*$/.test(sql)) return [...spans];
  return spans.map((i) => Buffer.byteLength(sql.slice(0, i), 'utf8'));
}

const CLASS_OF: Record<string, string> = { i: 'i', f: 'f', d: 'f', s: 's' };

/** Step 1 of the header comment, on the parse tree of `sql`. */
function sameTree(sql: string, shape: Shape): boolean {
  const parsed = parseSql(sql);
  if (!parsed.ok) return false;
  const consts = new Map<number, string>();
  for (const s of parsed.stmts) collectConsts(s.stmt, consts);
  const classes: string[] = [];
  for (let k = shape.key.indexOf('\0'); k >= 0; k = shape.key.indexOf('\0', k + 1)) classes.push(CLASS_OF[shape.key[k + 1]]);
  const spans = shape.spans;
  if (classes.length * 2 !== spans.length) return false;
  const starts = byteSpans(sql, spans);
  for (let k = 0; k < spans.length; k += 2) {
    const want = classes[k >> 1];
    let at = consts.get(starts[k]);
    if (at === undefined) {
      // only ASCII whitespace lies between the sign and the literal
      const minus = minusBefore(sql, spans[k]);
      if (minus >= 0) at = consts.get(starts[k] - (spans[k] - minus));
    }
    if (at !== want) return false;
  }
  return true;
}

/** Where the `-` just before `i` (across whitespace only) is, or -1. */
function minusBefore(sql: string, i: number): number {
  let j = i - 1;
  while (j >= 0 && ' \t\n\r\f'.includes(sql[j])) j--;
  return j >= 0 && sql[j] === '-' ? j : -1;
}

/** Locations of the A_Const nodes of a tree: i (ICONST), f (FCONST), s (SCONST), x (other). */
function collectConsts(v: unknown, out: Map<number, string>): void {
  walkTree(v, (key, child) => {
    if (key !== 'A_Const') return false;
    const kind = child.ival ? 'i' : child.fval ? 'f' : child.sval ? 's' : 'x';
    const loc = Number(child.location ?? 0);
    const seen = out.get(loc);
    out.set(loc, seen === undefined || seen === kind ? kind : 'x');
    return true;
  });
}
