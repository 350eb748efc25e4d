/**
 * Which output columns of a query carry a value derived from a masked column, whatever the
 * aliases, functions, casts, CASEs, subqueries or derived tables in between. Masking uses it
 * so `select reverse(email) as x` is masked although no column is called email.
 *
 * Names are resolved through the query's scopes: a column of a subquery in FROM or of a CTE
 * is masked when the expression behind it is; a column of a base table is masked when its
 * name matches. Subqueries inside an expression are conservative: the expression is masked
 * when anything inside the subquery (any clause) refers to a masked column. Whole-row
 * references to a base table (`row_to_json(c)`, `c.*` inside an expression) are masked,
 * because the table's columns are not known here.
 *
 * Views. Given the database's views (`Relations`, from the engine's catalog), a view named in
 * FROM is a source with known columns, like a CTE: each column is masked when the view's own
 * definition (`pg_get_viewdef`) derives it from a masked column, analysed the same way and
 * recursively for views on views (`viewColumnsMasked`). A view that cannot be analysed masks
 * every reference to it (fail closed).
 */
import { sqlShape } from './lexer.ts';
import { parseSql, type PgNode } from './parser.ts';
import { Lru } from './lru.ts';
import { shapeEntry } from './shape.ts';

export type Derivation = 'masked' | 'plain' | 'unknown';

interface Col {
  name?: string;
  /** 'unknown' = a star over a base table: zero or more columns, under their own names */
  m: Derivation;
}
interface Derived {
  cols: Col[];
  /** whether any column reference anywhere in the query resolves to a masked column */
  anyMasked: boolean;
}
interface Source {
  alias: string;
  base: boolean;
  /** undefined: shape unknown (base table, function, opaque derived table) */
  cols?: Col[];
  anyMasked: boolean;
}
interface Scope {
  sources: Source[];
  usingJoin: boolean;
  parent?: Scope;
  ctes: Map<string, Derived>;
}

type IsMasked = (column: string) => boolean;

/** A view or materialized view of the database, as the engine's catalog read it. */
export interface ViewDef {
  readonly oid: number;
  readonly schema: string;
  readonly name: string;
  /** its SELECT (`pg_get_viewdef`); null when not read (yet) or unreadable: its columns are masked */
  readonly sql: string | null;
  /** column names in attnum order */
  readonly columns: readonly string[];
  /** the relations its definition depends on (pg_depend of its rewrite rule) */
  readonly deps: readonly number[];
  /** a table, partitioned or foreign table has the same name in another schema */
  readonly shadowed: boolean;
}

/** The views of one database: an immutable snapshot (a new object whenever anything changes). */
export interface Relations {
  readonly byOid: ReadonlyMap<number, ViewDef>;
  /** by relname, lower-cased */
  readonly byName: ReadonlyMap<string, readonly ViewDef[]>;
  /** the views could not be listed: any relation may be one (every reference is masked) */
  readonly unknown: boolean;
}

/** views nest at most this deep; deeper ones are not analysed (masked) */
const MAX_VIEW_DEPTH = 16;

/** what a view contributes to a query's FROM */
interface ViewSource { cols?: Col[]; anyMasked: boolean }
type ViewLookup = (schema: string | undefined, name: string) => ViewSource | undefined;

interface Caches {
  /** by text */
  texts: Lru<string, Derivation[] | null>;
  /** by shape (lexer.ts), for texts that differ only in literal values */
  shapes: Lru<string, Derivation[] | null>;
}

const caches = new WeakMap<IsMasked, WeakMap<Relations | typeof NO_VIEWS, Caches>>();
const NO_VIEWS = {};
/** per rules and view snapshot: each view's columns, masked or not (null: masked, not analysable) */
const viewCaches = new WeakMap<IsMasked, WeakMap<ViewDef, readonly boolean[] | null>>();

/**
 * Derivation of the output columns of the last statement in `sql` (see README.md):
 * - null when there is no derivation: the SQL does not parse, or its last statement is not a
 *   SELECT/VALUES/TABLE or an INSERT/UPDATE/DELETE/MERGE with RETURNING (EXECUTE, FETCH,
 *   SHOW, EXPLAIN, CALL... and statements returning no rows). Judge columns by name then.
 * - otherwise one entry per output column, in order, where a `*` or `t.*` over base tables
 *   is a single 'unknown' entry standing for the zero or more columns it expands to (judge
 *   those by their RowDescription names; columns before the first 'unknown' map from the
 *   start, columns after the last from the end). Stars over subqueries and CTEs whose
 *   columns are known are expanded in place, so their derived columns are exact.
 * With `relations`, views named in the statement are expanded (see the file comment); an
 * unqualified name matching views in several schemas is masked where any of them is.
 * Cached per `isMaskedName` function, `relations` snapshot and text: pass the same function
 * each time. Texts that differ only in literal values share one entry: the derivation never
 * reads a literal's value, and shape.ts checks that such texts parse to the same tree but for
 * those values.
 */
export function outputDerivation(sql: string, isMaskedName: IsMasked, relations?: Relations | null): Derivation[] | null {
  let perRel = caches.get(isMaskedName);
  if (!perRel) { perRel = new WeakMap(); caches.set(isMaskedName, perRel); }
  let cache = perRel.get(relations ?? NO_VIEWS);
  if (!cache) {
    cache = { texts: new Lru(2000), shapes: new Lru(2000) };
    perRel.set(relations ?? NO_VIEWS, cache);
  }
  let hit = cache.texts.get(sql);
  if (hit !== undefined) return hit === null ? null : [...hit];
  const shape = sqlShape(sql);
  if (shape) {
    hit = cache.shapes.get(shape.key);
    if (hit !== undefined) return hit === null ? null : [...hit];
  }
  const out = computeDerivation(sql, isMaskedName, relations);
  cache.texts.set(sql, out);
  if (shape && shapeEntry(sql, shape).sameTree) cache.shapes.set(shape.key, out);
  return out === null ? null : [...out];
}

/** outputDerivation without any cache (exported for the tests' reference). */
export function computeDerivation(sql: string, isMasked: IsMasked, relations?: Relations | null): Derivation[] | null {
  const parsed = parseSql(sql);
  if (!parsed.ok || parsed.stmts.length === 0) return null;
  const stmt = parsed.stmts[parsed.stmts.length - 1].stmt;
  if (stmt.SelectStmt?.intoClause) return null;
  const isDml = stmt.InsertStmt ?? stmt.UpdateStmt ?? stmt.DeleteStmt ?? stmt.MergeStmt;
  if (isDml && !isDml.returningClause) return null;
  const views: ViewLookup | undefined = relations
    ? (schema, name) => viewSource(relations, byName(relations, schema, name), isMasked, 0)
    : undefined;
  const d = new Deriver(isMasked, views).stmt(stmt, undefined, new Map());
  if (!d) return null;
  const out: Derivation[] = [];
  for (const c of d.cols) if (!(c.m === 'unknown' && out[out.length - 1] === 'unknown')) out.push(c.m);
  return out;
}

/**
 * Per column of `view`: true when it derives from a masked column (its definition analysed
 * against the base tables, views inside it expanded in turn). Null when the definition is
 * missing, does not parse, does not line up with the view's columns, or nests deeper than
 * MAX_VIEW_DEPTH: mask all its columns. Cached per rules function and ViewDef object.
 */
export function viewColumnsMasked(view: ViewDef, isMasked: IsMasked, relations: Relations): readonly boolean[] | null {
  return analyseView(view, isMasked, relations, 0);
}

function analyseView(view: ViewDef, isMasked: IsMasked, relations: Relations, depth: number): readonly boolean[] | null {
  let cache = viewCaches.get(isMasked);
  if (!cache) { cache = new WeakMap(); viewCaches.set(isMasked, cache); }
  const hit = cache.get(view);
  if (hit !== undefined) return hit;
  if (depth > MAX_VIEW_DEPTH) return null; // not cached: a shallower path may succeed
  // null while in progress: a cycle of views (CREATE OR REPLACE can make one) is masked
  cache.set(view, null);
  if (view.sql === null) return null;
  const parsed = parseSql(view.sql);
  let out: boolean[] | null = null;
  if (parsed.ok && parsed.stmts.length === 1) {
    // names inside the definition are resolved among the relations PostgreSQL recorded it
    // depends on, so another schema's view of the same name is not confused with them
    const deps = view.deps.map((o) => relations.byOid.get(o)).filter((v): v is ViewDef => v !== undefined);
    const lookup: ViewLookup = (schema, name) => viewSource(relations, deps.filter((v) => matches(v, schema, name)), isMasked, depth + 1);
    const d = new Deriver(isMasked, lookup).stmt(parsed.stmts[0].stmt, undefined, new Map());
    if (d && d.cols.length === view.columns.length && d.cols.every((c) => c.m !== 'unknown')) {
      out = d.cols.map((c, i) => c.m === 'masked' || isMasked(view.columns[i]));
    }
  }
  cache.set(view, out);
  return out;
}

function matches(v: ViewDef, schema: string | undefined, name: string): boolean {
  return v.name === name && (schema === undefined || v.schema === schema);
}

/** Views a name in a user's statement may mean: unqualified, any schema's (the session's search_path is not known here). */
function byName(relations: Relations, schema: string | undefined, name: string): readonly ViewDef[] | 'unknown' {
  if (relations.unknown) return 'unknown';
  return (relations.byName.get(name.toLowerCase()) ?? []).filter((v) => matches(v, schema, name));
}

/**
 * The source a relation name stands for: undefined for a base table; columns known when every
 * candidate view has the same column names (masked where any candidate masks); otherwise only
 * whether anything is masked (every reference to it is then masked when anything is).
 */
function viewSource(relations: Relations, cands: readonly ViewDef[] | 'unknown', isMasked: IsMasked, depth: number): ViewSource | undefined {
  if (cands === 'unknown') return { anyMasked: true };
  if (cands.length === 0) return undefined;
  const masks = cands.map((v) => analyseView(v, isMasked, relations, depth));
  if (masks.some((m) => m === null)) return { anyMasked: true };
  const ms = masks as Array<readonly boolean[]>;
  const anyMasked = ms.some((m) => m.includes(true));
  const first = cands[0].columns;
  const sameColumns = cands.every((v) => v.columns.length === first.length && v.columns.every((c, i) => c === first[i]));
  // a table of the same name elsewhere may be what the statement means: its columns are not the view's
  if (!sameColumns || cands.some((v) => v.shadowed)) return { anyMasked };
  return { cols: first.map((name, i) => ({ name, m: ms.some((m) => m[i]) ? 'masked' : 'plain' })), anyMasked };
}

class Deriver {
  readonly #isMasked: IsMasked;
  readonly #views: ViewLookup | undefined;
  #budget = 10_000; // bounds work on pathological nesting

  constructor(isMasked: IsMasked, views?: ViewLookup) {
    this.#isMasked = isMasked;
    this.#views = views;
  }

  /** A wrapped statement node ({ SelectStmt: ... }). */
  stmt(node: PgNode | undefined, parent: Scope | undefined, ctes: Map<string, Derived>): Derived | undefined {
    if (!node) return undefined;
    if (node.SelectStmt) return this.select(node.SelectStmt, parent, ctes);
    const dml = node.InsertStmt ?? node.UpdateStmt ?? node.DeleteStmt ?? node.MergeStmt;
    if (!dml) return undefined;
    const scope = this.#scope(parent, this.#ctes(dml.withClause, parent, ctes));
    this.#addBase(scope, dml.relation);
    this.#from(scope, dml.fromClause ?? dml.usingClause ?? (dml.sourceRelation ? [dml.sourceRelation] : []));
    const cols = this.#targets(dml.returningClause?.exprs ?? [], scope);
    const anyMasked = cols.some((c) => c.m === 'masked') || this.refsMasked(dml.selectStmt, scope) || this.refsMasked(dml.whereClause, scope);
    return { cols, anyMasked };
  }

  select(s: PgNode, parent: Scope | undefined, ctesIn: Map<string, Derived>): Derived | undefined {
    if (--this.#budget < 0) return undefined;
    const ctes = this.#ctes(s.withClause, parent, ctesIn);
    if (s.op && s.op !== 'SETOP_NONE') {
      const l = this.select(s.larg, parent, ctes);
      const r = this.select(s.rarg, parent, ctes);
      return l && r ? combine(l, r) : undefined;
    }
    const scope = this.#scope(parent, ctes);
    if (s.valuesLists) {
      const cols: Col[] = [];
      for (const row of s.valuesLists as PgNode[]) {
        (row.List?.items ?? []).forEach((v: PgNode, i: number) => {
          const m = this.refsMasked(v, scope);
          cols[i] = { name: `column${i + 1}`, m: m || cols[i]?.m === 'masked' ? 'masked' : 'plain' };
        });
      }
      return { cols, anyMasked: cols.some((c) => c.m === 'masked') };
    }
    this.#from(scope, s.fromClause ?? []);
    const cols = this.#targets(s.targetList ?? [], scope);
    let anyMasked = cols.some((c) => c.m === 'masked') || scope.sources.some((x) => x.anyMasked);
    for (const k of ['whereClause', 'havingClause', 'groupClause', 'sortClause', 'distinctClause', 'windowClause', 'limitCount', 'limitOffset']) {
      if (anyMasked) break;
      anyMasked = this.refsMasked(s[k], scope);
    }
    return { cols, anyMasked };
  }

  #scope(parent: Scope | undefined, ctes: Map<string, Derived>): Scope {
    return { sources: [], usingJoin: false, parent, ctes };
  }

  #ctes(withClause: PgNode | undefined, parent: Scope | undefined, ctesIn: Map<string, Derived>): Map<string, Derived> {
    if (!withClause?.ctes) return ctesIn;
    const ctes = new Map(ctesIn);
    for (const c of withClause.ctes as PgNode[]) {
      const cte = c.CommonTableExpr;
      if (!cte) continue;
      // A recursive CTE's self-reference only carries what its arms produce; while deriving
      // it, the self-reference is an opaque source that adds nothing.
      if (withClause.recursive) ctes.set(cte.ctename, { cols: [], anyMasked: false });
      const d = this.stmt(cte.ctequery, parent, ctes) ?? { cols: [], anyMasked: true };
      ctes.set(cte.ctename, rename(d, cte.aliascolnames));
    }
    return ctes;
  }

  #addBase(scope: Scope, rv: PgNode | undefined): void {
    if (!rv) return;
    const alias = rv.alias?.aliasname ?? rv.relname;
    const cte = rv.schemaname ? undefined : lookupCte(scope, rv.relname);
    if (cte) {
      const d = rename(cte, rv.alias?.colnames);
      scope.sources.push({ alias, base: false, cols: d.cols.some((c) => c.m === 'unknown') && rv.alias?.colnames ? undefined : d.cols, anyMasked: d.anyMasked });
    } else {
      const view = this.#views?.(rv.schemaname, rv.relname);
      if (!view) return void scope.sources.push({ alias, base: true, anyMasked: false });
      const cols = view.cols ? rename({ cols: view.cols, anyMasked: view.anyMasked }, rv.alias?.colnames).cols : undefined;
      scope.sources.push({ alias, base: false, cols, anyMasked: view.anyMasked });
    }
  }

  #from(scope: Scope, items: PgNode[]): void {
    for (const item of items) this.#fromItem(scope, item);
  }

  #fromItem(scope: Scope, item: PgNode): void {
    if (item.RangeVar) return this.#addBase(scope, item.RangeVar);
    if (item.JoinExpr) {
      const j = item.JoinExpr;
      const before = scope.sources.length;
      this.#fromItem(scope, j.larg);
      this.#fromItem(scope, j.rarg);
      if (j.usingClause || j.isNatural) scope.usingJoin = true;
      if (j.alias?.aliasname) {
        const inner = scope.sources.slice(before);
        scope.sources.push({ alias: j.alias.aliasname, base: inner.every((x) => x.base), anyMasked: inner.some((x) => x.anyMasked || !x.base) });
      }
      return;
    }
    if (item.RangeSubselect) {
      const r = item.RangeSubselect;
      const d = this.stmt(r.subquery, scope, scope.ctes);
      if (!d) return void scope.sources.push({ alias: r.alias?.aliasname ?? '', base: false, anyMasked: true });
      const renamed = rename(d, r.alias?.colnames);
      const shapeKnown = !(r.alias?.colnames && d.cols.some((c) => c.m === 'unknown'));
      scope.sources.push({ alias: r.alias?.aliasname ?? '', base: false, cols: shapeKnown ? renamed.cols : undefined, anyMasked: d.anyMasked });
      return;
    }
    const alias = Object.values(item)[0]?.alias?.aliasname ?? '';
    scope.sources.push({ alias, base: false, anyMasked: this.refsMasked(item, scope) });
  }

  #targets(targets: PgNode[], scope: Scope): Col[] {
    const cols: Col[] = [];
    for (const t of targets) {
      const rt = t.ResTarget;
      if (!rt) continue;
      const fields = rt.val?.ColumnRef?.fields as PgNode[] | undefined;
      if (fields && fields[fields.length - 1]?.A_Star) {
        cols.push(...this.#star(fields, scope));
        continue;
      }
      cols.push({ name: rt.name ?? inferName(rt.val), m: this.refsMasked(rt.val, scope) ? 'masked' : 'plain' });
    }
    return cols;
  }

  #star(fields: PgNode[], scope: Scope): Col[] {
    const expand = (s: Source): Col[] => (s.cols ? s.cols.map((c) => ({ ...c })) : [{ m: s.anyMasked ? 'masked' : 'unknown' }]);
    if (fields.length >= 2) {
      const alias = fields[fields.length - 2]?.String?.sval;
      const src = findSource(scope, alias);
      return src ? expand(src) : [{ m: 'unknown' }];
    }
    return scope.sources.flatMap(expand);
  }

  /** Whether anything under `node` refers to a masked column. */
  refsMasked(node: unknown, scope: Scope): boolean {
    if (node === null || typeof node !== 'object') return false;
    if (Array.isArray(node)) return node.some((x) => this.refsMasked(x, scope));
    const o = node as PgNode;
    for (const key in o) {
      const child = o[key];
      if (child === null || typeof child !== 'object') continue;
      if (key === 'ColumnRef') {
        if (this.#resolve(child.fields ?? [], scope)) return true;
      } else if (key === 'SelectStmt') {
        const d = this.select(child, scope, scope.ctes);
        if (!d || d.anyMasked || d.cols.some((c) => c.m !== 'plain')) return true;
      } else if (this.refsMasked(child, scope)) {
        return true;
      }
    }
    return false;
  }

  #resolve(fields: PgNode[], scope: Scope): boolean {
    const names = fields.map((f) => f.String?.sval as string | undefined);
    const last = names[names.length - 1];
    if (last === undefined) {
      // `t.*` inside an expression: the whole row
      const src = findSource(scope, names[names.length - 2]);
      return !src || src.base || src.anyMasked || (src.cols ?? []).some((c) => c.m !== 'plain');
    }
    if (this.#isMasked(last)) return true;
    if (names.length >= 2) {
      const src = findSource(scope, names[names.length - 2]);
      return src ? fromSource(src, last) : false;
    }
    for (let s: Scope | undefined = scope; s; s = s.parent) {
      for (const src of s.sources) {
        if (!src.base && fromSource(src, last)) return true;
        // a bare table name is a whole-row reference (`row_to_json(c)`)
        if (src.alias === last && (src.base || src.anyMasked)) return true;
      }
    }
    return false;
  }
}

function fromSource(src: Source, column: string): boolean {
  if (src.base) return false;
  if (!src.cols) return src.anyMasked;
  const named = src.cols.find((c) => c.name === column);
  if (named) return named.m === 'masked';
  // not among the named columns: it comes through a star over base tables (name already checked)
  return false;
}

function findSource(scope: Scope, alias: string | undefined): Source | undefined {
  if (alias === undefined) return undefined;
  for (let s: Scope | undefined = scope; s; s = s.parent) {
    const src = s.sources.find((x) => x.alias === alias);
    if (src) return src;
  }
  return undefined;
}

function lookupCte(scope: Scope, name: string): Derived | undefined {
  return scope.ctes.get(name);
}

function rename(d: Derived, colnames: PgNode[] | undefined): Derived {
  if (!colnames) return d;
  const cols = d.cols.map((c, i) => (colnames[i]?.String?.sval !== undefined ? { ...c, name: colnames[i].String.sval as string } : c));
  return { cols, anyMasked: d.anyMasked };
}

function inferName(val: PgNode | undefined): string {
  if (!val) return '?column?';
  if (val.ColumnRef) return val.ColumnRef.fields?.[val.ColumnRef.fields.length - 1]?.String?.sval ?? '?column?';
  if (val.FuncCall) return val.FuncCall.funcname?.[val.FuncCall.funcname.length - 1]?.String?.sval ?? '?column?';
  if (val.TypeCast) return inferName(val.TypeCast.arg);
  return '?column?';
}

/**
 * UNION/INTERSECT/EXCEPT: a column is masked when it is masked in either arm. When stars
 * make the arms impossible to line up, every non-star column is masked if anything is.
 */
function combine(l: Derived, r: Derived): Derived {
  const anyMasked = l.anyMasked || r.anyMasked;
  const aligned = l.cols.length === r.cols.length && l.cols.every((c, i) => (c.m === 'unknown') === (r.cols[i].m === 'unknown'));
  if (aligned) {
    return { cols: l.cols.map((c, i) => (c.m === 'unknown' ? c : { ...c, m: c.m === 'masked' || r.cols[i].m === 'masked' ? 'masked' : 'plain' })), anyMasked };
  }
  const some = [...l.cols, ...r.cols].some((c) => c.m === 'masked');
  return { cols: l.cols.map((c) => (c.m === 'unknown' || !some ? c : { ...c, m: 'masked' })), anyMasked };
}
