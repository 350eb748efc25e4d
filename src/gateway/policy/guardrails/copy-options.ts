/**
 * The output options of the one `COPY ... TO STDOUT` in a query text, read from the parse tree
 * (not the text: a regex cannot tell `header` the option from a column or an alias named so).
 */
import { parseSql, type PgNode } from './parser.ts';

export interface CopyOutOptions {
  /** the first row is the column names (csv, or text since PostgreSQL 15) */
  header: boolean;
}

const TRUE_WORDS = new Set(['true', 'on', '1']);

/** Null unless `sql` parses and holds exactly one COPY to STDOUT. */
export function copyOutOptions(sql: string): CopyOutOptions | null {
  const parsed = parseSql(sql);
  if (!parsed.ok) return null;
  const copies = parsed.stmts.map((s) => s.stmt.CopyStmt as PgNode | undefined).filter((c): c is PgNode => !!c && !c.is_from && !c.filename);
  if (copies.length !== 1) return null;
  let header = false;
  for (const o of (copies[0].options ?? []) as PgNode[]) {
    const d = o.DefElem as PgNode | undefined;
    if (d?.defname !== 'header') continue;
    const arg = d.arg as PgNode | undefined;
    // `header` alone, header true/on/1, header 1 (an Integer node)
    header = !arg || arg.Boolean?.boolval === true || (arg.String && TRUE_WORDS.has(String(arg.String.sval).toLowerCase())) || arg.Integer?.ival === 1;
  }
  return { header };
}
