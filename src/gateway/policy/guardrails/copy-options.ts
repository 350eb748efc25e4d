/**
 * The output options of the one `COPY ... TO STDOUT` in a query text, read from the parse tree:
 * a regex over the text cannot tell `header` or `csv` the option from a column or an alias named
 * so, nor decode `E'\t'`.
 */
import { parseSql, type PgNode } from './parser.ts';

export interface CopyOutOptions {
  csv: boolean;
  delimiter?: string;
  null?: string;
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
  const out: CopyOutOptions = { csv: false, header: false };
  for (const o of (copies[0].options ?? []) as PgNode[]) {
    const d = o.DefElem as PgNode | undefined;
    if (!d) continue;
    const arg = d.arg as PgNode | undefined;
    const word = arg?.String ? String(arg.String.sval) : undefined;
    switch (d.defname) {
      case 'format': out.csv = word?.toLowerCase() === 'csv'; break;
      case 'delimiter': out.delimiter = word; break;
      case 'null': out.null = word; break;
      // `header` alone, header true/on/1, header 1 (an Integer node)
      case 'header': out.header = !arg || arg.Boolean?.boolval === true || (word !== undefined && TRUE_WORDS.has(word.toLowerCase())) || arg.Integer?.ival === 1; break;
    }
  }
  return out;
}
