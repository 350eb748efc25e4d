/**
 * Statement lineage for the side channels of a statement (issue 10 §1): whether a text touches a
 * masked column anywhere, and whether it moves a value derived from one into a side channel.
 *
 * A result column is masked by its derivation (derivation.ts); but a statement also answers with
 * ErrorResponse/NoticeResponse texts, NotificationResponse payloads and ParameterStatus values,
 * which carry values without naming a column. When the statement touches a masked column, the
 * engine masks those messages as strongly as a column rule masks a value.
 *
 * "Touches" is a fail-closed over-approximation, taken over the text and every piece of code the
 * guardrails' analysis found inside it (DO blocks, function bodies, constant dynamic SQL, SQL
 * passed to query_to_xml & co):
 * - a column reference whose name matches a column rule (`email`, `c.email`, `(c).email`);
 * - a `*` or `t.*` (it may expand to masked columns: the base tables' columns are not known here);
 * - a whole-row reference (`row_to_json(c)`, `c::text`: a bare name that is a FROM item's name);
 * - a view whose definition derives any column from a masked one, or whose definition is unknown;
 * - the catalog statistics relations (`pg_stats`, `pg_statistic`, `pg_stats_ext(_exprs)`);
 * - code that cannot be parsed or analysed.
 *
 * Side channels: functions whose purpose is to move a value out of the statement's result
 * (SIDE_CHANNEL_FUNCTIONS) are refused when an argument touches a masked column as above, and
 * when any argument is not a constant in a text that touches a masked column anywhere: a value
 * travels under other names (a subquery's alias, a PL/pgSQL variable) that this walk does not
 * follow, so it fails closed (`select pg_notify('c', id::text) from customers where email = $1`
 * is refused too; a constant payload is not).
 */
import { isConstant } from './constant.ts';
import { analyzeSql } from './analyze.ts';
import { Lru } from './lru.ts';
import { sqlShape } from './lexer.ts';
import { shapeEntry, sharedAnalysis } from './shape.ts';
import { parseSql, walkTree, type PgNode } from './parser.ts';
import { lastName } from './rules.ts';
import { viewColumnsMasked, type Relations } from './derivation.ts';

/**
 * Functions that carry a value out of the statement's rows: to other sessions or the client
 * outside the result (pg_notify, set_config → ParameterStatus / current_setting), to the WAL
 * (pg_logical_emit_message), to a sequence, large object or file read back later without
 * lineage (setval, lo_*, pg_file_write), or to another server (dblink*).
 */
export const SIDE_CHANNEL_FUNCTIONS: ReadonlySet<string> = new Set([
  'pg_notify', 'set_config', 'pg_logical_emit_message', 'setval', 'lo_from_bytea', 'lo_put', 'lowrite', 'lo_import',
  'pg_file_write', 'pg_create_restore_point', 'dblink', 'dblink_exec', 'dblink_send_query', 'dblink_open',
]);

/** relations whose columns hold sample values of every column (most_common_vals, histogram_bounds, stavaluesN) */
export const STATS_RELATIONS: ReadonlySet<string> = new Set(['pg_stats', 'pg_statistic', 'pg_stats_ext', 'pg_stats_ext_exprs', 'pg_statistic_ext_data']);

/**
 * Their columns that hold the sample values: on a connection with column rules they are masked
 * like a column-rule column wherever they appear (a row, an expression, a view), since which
 * table column a row describes is row data, not lineage.
 */
export const STATS_VALUE_COLUMNS: ReadonlySet<string> = new Set([
  'most_common_vals', 'histogram_bounds', 'most_common_elems', 'stavalues1', 'stavalues2', 'stavalues3', 'stavalues4', 'stavalues5',
  'stxdmcv', 'stxdexpr',
]);

export interface Lineage {
  /** the text touches a masked column (see above) */
  readonly touches: boolean;
  /** a side-channel function called with a value derived from a masked column: refuse the text */
  readonly sideChannel?: string;
}

type IsMasked = (name: string) => boolean;

/** What a text's lineage is, before views: relation names are judged per catalog snapshot. */
interface TextFacts {
  touchesByColumns: boolean;
  relations: string[];
  sideChannel?: string;
}

const caches = new WeakMap<IsMasked, Lru<string, TextFacts>>();

export function statementLineage(sql: string, isMasked: IsMasked, relations?: Relations | null): Lineage {
  let cache = caches.get(isMasked);
  if (!cache) { cache = new Lru(2000); caches.set(isMasked, cache); }
  let f = cache.get(sql);
  if (!f) { f = sharedFacts(sql, isMasked, cache) ?? facts(sql, isMasked); cache.set(sql, f); }
  if (f.sideChannel) return { touches: true, sideChannel: f.sideChannel };
  if (f.touchesByColumns) return { touches: true };
  if (relations) {
    for (const name of f.relations) {
      if (relations.unknown) return { touches: true };
      for (const v of relations.byName.get(name) ?? []) {
        const m = viewColumnsMasked(v, isMasked, relations);
        if (m === null || m.includes(true)) return { touches: true };
      }
    }
  }
  return { touches: false };
}

/**
 * Texts that differ only in literal values (pgbench -M simple, inlined ORM values) share the
 * facts of the first text of their shape when the guardrails share its analysis (shape.ts: same
 * tree but for the constants, no code inside strings): the facts read names and whether
 * arguments are constants, never a constant's value. ~1 µs instead of a parse per new text.
 */
function sharedFacts(sql: string, isMasked: IsMasked, cache: Lru<string, TextFacts>): TextFacts | undefined {
  const shape = sqlShape(sql);
  if (!shape) return undefined;
  const e = shapeEntry(sql, shape);
  if (!sharedAnalysis(e)) return undefined;
  const key = `\0${shape.key}`;
  let f = cache.get(key);
  if (!f) { f = facts(e.text, isMasked); cache.set(key, f); }
  return f;
}

function facts(sql: string, isMasked: IsMasked): TextFacts {
  const a = analyzeSql(sql);
  if (a.unparseable !== undefined || a.unanalysable !== undefined) return { touchesByColumns: true, relations: [] };
  const out: TextFacts = { touchesByColumns: false, relations: [] };
  let nestedSide: string | undefined;
  a.texts.forEach((text) => {
    const parsed = parseSql(text);
    if (!parsed.ok) { out.touchesByColumns = true; return; }
    for (const s of parsed.stmts) {
      const w = walkStatement(s.stmt, isMasked);
      if (w.touches) out.touchesByColumns = true;
      out.relations.push(...w.relations);
      out.sideChannel ??= w.sideChannel;
      // an argument may carry a masked value under another name (a subquery's alias, a
      // PL/pgSQL variable): in a text that touches a masked column, any non-constant one counts
      nestedSide ??= w.nonConstantSideCall;
    }
  });
  if (!out.sideChannel && nestedSide && out.touchesByColumns) out.sideChannel = nestedSide;
  return out;
}

interface Walked { touches: boolean; relations: string[]; sideChannel?: string; nonConstantSideCall?: string }

function walkStatement(stmt: PgNode, isMasked: IsMasked): Walked {
  // FROM item names first: a bare column reference with one of these names is a whole row
  const names = new Set<string>();
  const relations: string[] = [];
  let stats = false;
  walkTree(stmt, (key, child) => {
    if (key === 'RangeVar') {
      const rel = String(child.relname ?? '');
      names.add(rel);
      relations.push(rel.toLowerCase());
      if (STATS_RELATIONS.has(rel)) stats = true;
      if (child.alias?.aliasname) names.add(child.alias.aliasname);
    } else if (key === 'RangeSubselect' || key === 'RangeFunction' || key === 'CommonTableExpr') {
      const n = child.alias?.aliasname ?? child.ctename;
      if (n) names.add(n);
    }
    return false;
  });
  const touching = (node: unknown): boolean => {
    let hit = false;
    walkTree(node, (key, child) => {
      if (hit) return true;
      if (key === 'ColumnRef') {
        const fields = (child.fields ?? []) as PgNode[];
        const last = fields[fields.length - 1];
        if (last?.A_Star) hit = true;
        else {
          const name = last?.String?.sval as string | undefined;
          if (name !== undefined && (isMasked(name) || (fields.length === 1 && names.has(name)))) hit = true;
        }
        return true;
      }
      return false;
    });
    return hit;
  };
  const out: Walked = { touches: stats || touching(stmt), relations };
  walkTree(stmt, (key, child) => {
    if (key !== 'FuncCall') return false;
    const name = lastName(child.funcname);
    if (!SIDE_CHANNEL_FUNCTIONS.has(name)) return false;
    const args = (child.args ?? []) as PgNode[];
    // a subquery argument may read anything: judge it by what it touches too
    if (args.some((x) => touching(x))) out.sideChannel ??= name;
    if (args.some((x) => !isConstant(x))) out.nonConstantSideCall ??= name;
    return false;
  });
  return out;
}
