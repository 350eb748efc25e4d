/**
 * Folding of constant SQL expressions, for two questions the rules ask:
 * - is a WHERE clause true for every row (`WHERE true`, `WHERE 1=1`, `WHERE 'yes'`, `WHERE a = a`)?
 *   Then `delete_without_where` / `update_without_where` treat the statement as having none.
 * - is an argument a constant string (`'drop table x'`, `'drop ' || 'table x'`, `'...'::text`)?
 *   Then a SQL-executing function's argument or a PL/pgSQL `EXECUTE` string can be judged.
 * Anything not folded is "unknown", and the callers treat unknown conservatively.
 *
 * Every read of a literal's value is counted (`literalReads`): a verdict may be shared
 * between texts that differ only in literal values (shape.ts) only when its analysis read
 * none. So the folding avoids reads that cannot change its answer: `id = 5` is unknown
 * because of `id`, without looking at 5.
 */
import type { PgNode } from './parser.ts';

type Value = { t: 'bool'; v: boolean } | { t: 'num'; v: number } | { t: 'str'; v: string } | { t: 'null' };

const TRUE_WORDS = new Set(['t', 'tr', 'tru', 'true', 'y', 'ye', 'yes', 'on', '1']);
const FALSE_WORDS = new Set(['f', 'fa', 'fal', 'fals', 'false', 'n', 'no', 'of', 'off', '0']);

function strToBool(s: string): boolean | undefined {
  const w = s.trim().toLowerCase();
  return TRUE_WORDS.has(w) ? true : FALSE_WORDS.has(w) ? false : undefined;
}

let reads = 0;

/** How many times a literal's value has been read so far (compare before and after an analysis). */
export function literalReads(): number {
  return reads;
}

// evalConst folds these node types; any other node is unknown whatever its literals hold.
const FOLDABLE = new Set(['A_Const', 'TypeCast', 'BoolExpr', 'A_Expr', 'NullTest', 'BooleanTest']);

function foldable(node: PgNode | undefined): boolean {
  if (!node) return false;
  for (const k in node) return FOLDABLE.has(k);
  return false;
}

function lastName(names: PgNode[] | undefined): string {
  const n = names?.[names.length - 1];
  return (n?.String?.sval as string | undefined)?.toLowerCase() ?? '';
}

/**
 * Compares two parse trees ignoring source locations. When they differ in more than literal
 * values the answer does not depend on any value; otherwise the comparison reads them.
 */
export function sameExpr(a: PgNode, b: PgNode): boolean {
  let literals = false;
  const shape = (k: string, v: unknown) => {
    if (k === 'location') return undefined;
    if (k === 'A_Const') {
      literals = true;
      return 0;
    }
    return v;
  };
  if (JSON.stringify(a, shape) !== JSON.stringify(b, shape)) return false;
  if (!literals) return true;
  reads++;
  const strip = (k: string, v: unknown) => (k === 'location' ? undefined : v);
  return JSON.stringify(a, strip) === JSON.stringify(b, strip);
}

function evalConst(node: PgNode | undefined, depth = 0): Value | undefined {
  if (!node || depth > 32) return undefined;
  const c = node.A_Const;
  if (c) {
    // NULL is a keyword, never a literal whose value varies
    if (c.isnull) return { t: 'null' };
    reads++;
    if (c.boolval) return { t: 'bool', v: c.boolval.boolval === true };
    if (c.ival) return { t: 'num', v: c.ival.ival ?? 0 };
    if (c.fval) return { t: 'num', v: Number(c.fval.fval) };
    if (c.sval) return { t: 'str', v: c.sval.sval ?? '' };
    return undefined;
  }
  const tc = node.TypeCast;
  if (tc) {
    const v = evalConst(tc.arg, depth + 1);
    if (!v || v.t === 'null') return v;
    const ty = lastName(tc.typeName?.names);
    if (ty === 'bool' || ty === 'boolean') {
      if (v.t === 'bool') return v;
      if (v.t === 'num') return { t: 'bool', v: v.v !== 0 };
      const b = strToBool(v.v);
      return b === undefined ? undefined : { t: 'bool', v: b };
    }
    if (['text', 'varchar', 'bpchar', 'name', 'unknown'].includes(ty)) return v.t === 'str' ? v : { t: 'str', v: String(v.v) };
    if (['int2', 'int4', 'int8', 'numeric', 'float4', 'float8', 'int', 'integer', 'bigint', 'smallint'].includes(ty)) {
      const n = v.t === 'str' ? Number(v.v) : v.t === 'num' ? v.v : undefined;
      return n === undefined || Number.isNaN(n) ? undefined : { t: 'num', v: n };
    }
    return undefined;
  }
  const be = node.BoolExpr;
  if (be) {
    const args = (be.args as PgNode[] | undefined ?? []).map((a) => evalBool(a, depth + 1));
    if (be.boolop === 'NOT_EXPR') {
      const a = args[0];
      return a === undefined ? undefined : a === null ? { t: 'null' } : { t: 'bool', v: !a };
    }
    const isAnd = be.boolop === 'AND_EXPR';
    if (!isAnd && orIsNullTautology(be.args as PgNode[] | undefined ?? [])) return { t: 'bool', v: true };
    // three-valued logic: AND is false if any is false, OR is true if any is true
    if (args.includes(!isAnd)) return { t: 'bool', v: !isAnd };
    if (args.includes(undefined)) return undefined;
    if (args.includes(null)) return { t: 'null' };
    return { t: 'bool', v: isAnd };
  }
  const ae = node.A_Expr;
  if (ae) {
    const op = lastName(ae.name);
    if (ae.lexpr?.ColumnRef && ae.rexpr && sameExpr(ae.lexpr, ae.rexpr)) {
      // `a = a` is true for every row where a is not null: a tautology for our purpose
      if (ae.kind === 'AEXPR_NOT_DISTINCT' || (ae.kind === 'AEXPR_OP' && ['=', '<=', '>='].includes(op))) return { t: 'bool', v: true };
      if (ae.kind === 'AEXPR_DISTINCT') return { t: 'bool', v: false };
    }
    if (ae.kind !== 'AEXPR_OP' && ae.kind !== 'AEXPR_DISTINCT' && ae.kind !== 'AEXPR_NOT_DISTINCT') return undefined;
    if (!foldable(ae.lexpr) || !foldable(ae.rexpr)) return undefined;
    const l = evalConst(ae.lexpr, depth + 1);
    if (!l) return undefined;
    const r = evalConst(ae.rexpr, depth + 1);
    if (!r) return undefined;
    if (op === '||' && ae.kind === 'AEXPR_OP') {
      if (l.t === 'null' || r.t === 'null') return { t: 'null' };
      return { t: 'str', v: String(l.v) + String(r.v) };
    }
    if (ae.kind !== 'AEXPR_OP') {
      const eq = l.t === 'null' || r.t === 'null' ? l.t === r.t : compare(l, r) === 0;
      return { t: 'bool', v: ae.kind === 'AEXPR_NOT_DISTINCT' ? eq : !eq };
    }
    if (l.t === 'null' || r.t === 'null') return { t: 'null' };
    const cmp = compare(l, r);
    if (cmp === undefined) return undefined;
    switch (op) {
      case '=': return { t: 'bool', v: cmp === 0 };
      case '<>': case '!=': return { t: 'bool', v: cmp !== 0 };
      case '<': return { t: 'bool', v: cmp < 0 };
      case '>': return { t: 'bool', v: cmp > 0 };
      case '<=': return { t: 'bool', v: cmp <= 0 };
      case '>=': return { t: 'bool', v: cmp >= 0 };
      default: return undefined;
    }
  }
  const nt = node.NullTest;
  if (nt) {
    const v = evalConst(nt.arg, depth + 1);
    if (!v) return undefined;
    return { t: 'bool', v: nt.nulltesttype === 'IS_NULL' ? v.t === 'null' : v.t !== 'null' };
  }
  const bt = node.BooleanTest;
  if (bt) {
    const b = evalBool(bt.arg, depth + 1);
    if (b === undefined) return undefined;
    switch (bt.booltesttype) {
      case 'IS_TRUE': return { t: 'bool', v: b === true };
      case 'IS_NOT_TRUE': return { t: 'bool', v: b !== true };
      case 'IS_FALSE': return { t: 'bool', v: b === false };
      case 'IS_NOT_FALSE': return { t: 'bool', v: b !== false };
      case 'IS_UNKNOWN': return { t: 'bool', v: b === null };
      case 'IS_NOT_UNKNOWN': return { t: 'bool', v: b !== null };
      default: return undefined;
    }
  }
  return undefined;
}

// `x IS NULL OR x IS NOT NULL` holds for every row
function orIsNullTautology(args: PgNode[]): boolean {
  const tests = args.map((a) => a.NullTest).filter(Boolean) as PgNode[];
  return tests.some((a) => a.nulltesttype === 'IS_NULL' && tests.some((b) => b.nulltesttype === 'IS_NOT_NULL' && sameExpr(a.arg, b.arg)));
}

function compare(l: Value, r: Value): number | undefined {
  const num = (v: Value) => (v.t === 'num' ? v.v : v.t === 'str' && v.v.trim() !== '' && !Number.isNaN(Number(v.v)) ? Number(v.v) : v.t === 'bool' ? Number(v.v) : undefined);
  if (l.t === 'str' && r.t === 'str') return l.v < r.v ? -1 : l.v > r.v ? 1 : 0;
  if ((l.t === 'bool' || r.t === 'bool') && (l.t === 'str' || r.t === 'str')) {
    const lb = l.t === 'bool' ? l.v : l.t === 'str' ? strToBool(l.v) : undefined;
    const rb = r.t === 'bool' ? r.v : r.t === 'str' ? strToBool(r.v) : undefined;
    return lb === undefined || rb === undefined ? undefined : Number(lb) - Number(rb);
  }
  const a = num(l);
  const b = num(r);
  return a === undefined || b === undefined ? undefined : a - b;
}

/** true / false / null (SQL NULL) when `node` folds to a boolean constant, undefined when it does not. */
function evalBool(node: PgNode | undefined, depth = 0): boolean | null | undefined {
  const v = evalConst(node, depth);
  if (!v) return undefined;
  if (v.t === 'null') return null;
  if (v.t === 'bool') return v.v;
  if (v.t === 'str') return strToBool(v.v);
  return undefined;
}

/** Whether a WHERE clause (or MERGE join condition) holds for every row; a missing one does. */
export function alwaysTrue(where: PgNode | undefined): boolean {
  return where === undefined || evalBool(where) === true;
}

/** Whether a condition folds to a constant at all (true, false or null). */
export function isConstantCondition(where: PgNode | undefined): boolean {
  return where === undefined || evalBool(where) !== undefined;
}

/** The value of a constant string expression, or undefined when it is built at run time. */
export function constantString(node: PgNode | undefined): string | undefined {
  const v = evalConst(node);
  return v?.t === 'str' ? v.v : undefined;
}

/** Whether an expression is a constant of any type (literal, cast literal, folded operator). */
export function isConstant(node: PgNode | undefined): boolean {
  return evalConst(node) !== undefined;
}
