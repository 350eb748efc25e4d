/**
 * Turns SQL text into an Analysis: which guardrail rules every part of it triggers, what could
 * not be analysed, and the PREPARE/EXECUTE steps whose meaning depends on the session.
 * The analysis does not depend on the configuration, so it is cached by text for all sessions.
 *
 * Code hidden inside other code is followed, each to its own text:
 * - DO blocks and CREATE FUNCTION/PROCEDURE bodies in plpgsql (libpg-query's PL/pgSQL parser)
 *   and in sql (the SQL parser); bodies in any other language cannot be analysed.
 * - PL/pgSQL `EXECUTE`, `FOR ... IN EXECUTE`, `OPEN ... FOR EXECUTE`, `RETURN QUERY EXECUTE`
 *   when the string is a constant; a string built at run time cannot be analysed.
 * - string arguments of functions that run SQL (query_to_xml, dblink_exec, ts_stat, ...).
 * - PREPARE bodies become a separate Analysis that EXECUTE is judged by.
 */
import type { GuardrailRule } from '../../config/schema.ts';
import { constantString, isConstant, literalReads } from './constant.ts';
import { Lru } from './lru.ts';
import { parsePlpgsql, parseSql, walkTree, type PgNode } from './parser.ts';
import { checkFor, lastName, type RuleContext } from './rules.ts';
import { loginChanges, type LoginChange } from './login-changes.ts';

export type Step =
  | { op: 'prepare'; name: string; body: Analysis }
  | { op: 'execute'; name: string; where: string };

export interface Analysis {
  /** the parser's error when the text itself is not valid SQL */
  readonly unparseable?: string;
  /** first match of each rule, in source order: rule -> what matched */
  readonly hits: ReadonlyMap<GuardrailRule, string>;
  /** the first piece of contained code that could not be analysed (fail closed) */
  readonly unanalysable?: string;
  /** every SQL text that was analysed (the text itself and code found inside it), for deny_patterns */
  readonly texts: readonly string[];
  readonly steps: readonly Step[];
  /** statements changing a role's login (password, membership, ...): the credential floor's input */
  readonly logins: readonly LoginChange[];
  /**
   * Whether the result may depend on the values of the text's literals: constant folding read
   * one (`WHERE 1 = 1`, `set_config('role', ...)`), code was found inside a string or body
   * (DO, function bodies, query_to_xml('...')), or the text does not parse (the error names a
   * token). Only an analysis without any may be shared by texts of the same shape (shape.ts).
   */
  readonly literalsRead: boolean;
  /** every function the text calls (lowercased name, schema dropped) -> where, for deny_functions */
  readonly calls: ReadonlyMap<string, string>;
  /** DELETE / UPDATE / MERGE statements, for max_rows (see Writes) */
  readonly writes: Writes;
}

/**
 * What max_rows needs: a DELETE, UPDATE or MERGE that is a statement of its own (top level of
 * the text, or of a PREPARE body) reports its row count in its command tag, so the gateway can
 * count it. One anywhere else (a data-modifying WITH, COPY (DELETE ... RETURNING), EXPLAIN
 * ANALYZE, a DO block or function body, a rule action) runs without a tag of its own.
 */
export interface Writes {
  readonly top: ReadonlySet<WriteKind>;
  /** the kinds found where no command tag counts them -> what and where (first of each) */
  readonly hidden: ReadonlyMap<WriteKind, string>;
  /** a statement of the text begins, ends or rolls back a transaction or savepoint */
  readonly txControl: boolean;
}
export type WriteKind = 'delete' | 'update';

/** How deep code may hide inside code (a DO block running a string that holds a DO block...). */
const MAX_DEPTH = 8;

/** Functions that run a SQL string they are given, with the name they are called by. */
const SQL_RUNNING_FUNCTIONS = new Set([
  'query_to_xml', 'query_to_xml_and_xmlschema', 'query_to_xmlschema', 'dblink', 'dblink_exec', 'dblink_send_query',
  'dblink_open', 'ts_stat', 'ts_rewrite', 'pg_background_launch',
]);

class Collector implements RuleContext {
  readonly hits = new Map<GuardrailRule, string>();
  readonly texts: string[] = [];
  readonly steps: Step[] = [];
  readonly logins: LoginChange[] = [];
  unanalysable: string | undefined;
  /** code inside a string or a body was analysed: its text is a literal's value */
  nested = false;
  /** the source text of the statement being walked (DO and CREATE FUNCTION re-parse it) */
  stmtText = '';
  readonly labels: string[] = [];
  depth = 0;
  readonly calls = new Map<string, string>();
  readonly top = new Set<WriteKind>();
  readonly hidden = new Map<WriteKind, string>();
  /** the node of the statement being walked whose command tag the client gets (null inside bodies) */
  root: PgNode | null = null;
  txControl = false;

  call(name: string): void {
    const n = name.toLowerCase();
    if (n && !this.calls.has(n)) this.calls.set(n, this.where());
  }

  write(kind: WriteKind, node: PgNode, what: string): void {
    if (node === this.root) this.top.add(kind);
    else if (!this.hidden.has(kind)) this.hidden.set(kind, `a ${what} inside another statement${this.where()}`);
  }

  hit(rule: GuardrailRule, what: string): void {
    if (!this.hits.has(rule)) this.hits.set(rule, what + this.where());
  }

  fail(message: string): void {
    this.unanalysable ??= message + this.where();
  }

  where(): string {
    return this.labels.length === 0 ? '' : ` (in ${this.labels.join(', in ')})`;
  }

  within<T>(label: string, fn: () => T): T {
    this.labels.push(label);
    try {
      return fn();
    } finally {
      this.labels.pop();
    }
  }

  toAnalysis(literalsRead = this.nested): Analysis {
    return { hits: this.hits, unanalysable: this.unanalysable, texts: this.texts, steps: this.steps, logins: this.logins, literalsRead, calls: this.calls, writes: { top: this.top, hidden: this.hidden, txControl: this.txControl } };
  }
}

const cache = new Lru<string, Analysis>(2000);
const NO_WRITES: Writes = { top: new Set(), hidden: new Map(), txControl: false };

/** the node inside a statement wrapper (`{ DeleteStmt: {...} }` -> the DeleteStmt) */
function rootOf(stmt: PgNode | undefined): PgNode | null {
  if (!stmt) return null;
  for (const k in stmt) return stmt[k] as PgNode;
  return null;
}

/** The analysis of `sql` (one or more statements), cached by text. */
export function analyzeSql(sql: string): Analysis {
  const hit = cache.get(sql);
  if (hit) return hit;
  const parsed = parseSql(sql);
  let out: Analysis;
  if (!parsed.ok) {
    out = { unparseable: parsed.error, hits: new Map(), texts: [sql], steps: [], logins: [], literalsRead: true, calls: new Map(), writes: NO_WRITES };
  } else {
    const c = new Collector();
    c.texts.push(sql);
    const reads = literalReads();
    for (const s of parsed.stmts) {
      c.stmtText = s.text;
      c.root = rootOf(s.stmt);
      visit(s.stmt, c);
    }
    c.root = null;
    out = c.toAnalysis(c.nested || literalReads() !== reads);
  }
  cache.set(sql, out);
  return out;
}

/** Analyses SQL found inside other code into the same collector. */
function analyzeNested(sql: string, c: Collector, label: string): void {
  c.nested = true;
  c.within(label, () => {
    if (c.depth >= MAX_DEPTH) return c.fail(`code nested more than ${MAX_DEPTH} levels deep cannot be analysed`);
    c.texts.push(sql);
    const parsed = parseSql(sql);
    if (!parsed.ok) return c.fail(`could not parse ${JSON.stringify(clip(sql))}: ${parsed.error}`);
    const saved = c.stmtText;
    const savedRoot = c.root;
    c.root = null; // nested code has no command tag of its own
    c.depth++;
    try {
      for (const s of parsed.stmts) {
        c.stmtText = s.text;
        visit(s.stmt, c);
      }
    } finally {
      c.depth--;
      c.stmtText = saved;
      c.root = savedRoot;
    }
  });
}

function clip(s: string): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > 60 ? one.slice(0, 57) + '...' : one;
}

/** Node types whose children need more than the generic walk; true = children handled. */
const special: Record<string, (n: PgNode, c: Collector) => boolean> = {
  PrepareStmt(n, c) {
    const body = new Collector();
    body.depth = c.depth;
    body.stmtText = c.stmtText;
    body.labels.push(...c.labels, `prepared statement ${n.name}`);
    // EXECUTE of it reports the body's own command tag: its top-level DELETE is countable
    body.root = c.root === n ? rootOf(n.query) : null;
    visit(n.query, body);
    if (body.nested) c.nested = true;
    for (const [k, v] of body.calls) if (!c.calls.has(k)) c.calls.set(k, v);
    c.logins.push(...body.logins);
    c.steps.push({ op: 'prepare', name: n.name, body: body.toAnalysis() });
    return true;
  },
  ExecuteStmt(n, c) {
    c.steps.push({ op: 'execute', name: n.name, where: c.where() });
    return false;
  },
  DoStmt(n, c) {
    c.nested = true;
    let language = 'plpgsql';
    for (const a of (n.args ?? []) as PgNode[]) if (a.DefElem?.defname === 'language') language = String(a.DefElem.arg?.String?.sval ?? '').toLowerCase();
    c.within('DO block', () => {
      if (language !== 'plpgsql') return c.fail(`a DO block in language ${language} cannot be analysed`);
      plpgsqlBody(c);
    });
    return true;
  },
  CreateFunctionStmt(n, c) {
    c.nested = true;
    let language = '';
    let body: PgNode[] | undefined;
    for (const o of (n.options ?? []) as PgNode[]) {
      if (o.DefElem?.defname === 'language') language = String(o.DefElem.arg?.String?.sval ?? '').toLowerCase();
      if (o.DefElem?.defname === 'as') body = o.DefElem.arg?.List?.items;
    }
    const label = `body of ${n.is_procedure ? 'procedure' : 'function'} ${lastName(n.funcname)}`;
    if (n.sql_body) c.within(label, () => visit(n.sql_body, c));
    if (!body) return true;
    const src = body.length === 1 ? body[0]?.String?.sval : undefined;
    if (language === 'plpgsql') c.within(label, () => plpgsqlBody(c));
    else if (language === 'sql' && typeof src === 'string') analyzeNested(src, c, label);
    else c.within(label, () => c.fail(`a function body in language ${language || 'unknown'} cannot be analysed`));
    return true;
  },
  FuncCall(n, c) {
    const name = lastName(n.funcname);
    c.call(name);
    if (!SQL_RUNNING_FUNCTIONS.has(name)) return false;
    for (const a of (n.args ?? []) as PgNode[]) {
      const s = constantString(a);
      if (s !== undefined) {
        // Connection names and strings of dblink are not SQL; only what parses is SQL to judge.
        if (parseSql(s).ok) analyzeNested(s, c, `${name}() argument`);
      } else if (!isConstant(a)) {
        c.within(`${name}()`, () => c.fail(`SQL passed to ${name}() is built at run time and cannot be analysed`));
      }
    }
    return false;
  },
};

/**
 * Nodes that name a function the statement makes callable or runs other than by a FuncCall:
 * triggers, event triggers, casts, operators and aggregates (CREATE OPERATOR ... FUNCTION =
 * pg_sleep would make `1 === 2` call it).
 */
const namedFunctions: Record<string, (n: PgNode, c: Collector) => void> = {
  CreateTrigStmt: (n, c) => c.call(lastName(n.funcname)),
  CreateEventTrigStmt: (n, c) => c.call(lastName(n.funcname)),
  CreateCastStmt: (n, c) => c.call(lastName(n.func?.objname)),
  DefineStmt: (n, c) => {
    for (const d of (n.definition ?? []) as PgNode[]) {
      const arg = d.DefElem?.arg;
      const names = arg?.TypeName?.names ?? arg?.List?.items;
      if (Array.isArray(names)) c.call(lastName(names));
    }
  },
};

const WRITES: Record<string, WriteKind> = { DeleteStmt: 'delete', UpdateStmt: 'update' };

const LOGIN_NODES = new Set(['AlterRoleStmt', 'AlterRoleSetStmt', 'RenameStmt', 'GrantRoleStmt', 'CreateRoleStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** The generic walk: every node of the tree, checks by node type. */
function visit(v: unknown, c: Collector): void {
  walkTree(v, (key, child) => {
    const first = key.charCodeAt(0);
    if (first < 65 || first > 90) return false;
    checkFor(key)?.(child, c);
    const w = WRITES[key];
    if (w) c.write(w, child, key === 'DeleteStmt' ? 'DELETE' : 'UPDATE');
    else if (key === 'MergeStmt') mergeWrites(child, c);
    else if (key === 'TransactionStmt') c.txControl = true;
    else namedFunctions[key]?.(child, c);
    if (LOGIN_NODES.has(key)) loginChanges(key, child, c.logins);
    return Boolean(special[key]?.(child, c));
  });
}

/** MERGE's tag counts the rows of all its actions together: each DELETE/UPDATE action is bounded by that count. */
function mergeWrites(n: PgNode, c: Collector): void {
  for (const w of (n.mergeWhenClauses ?? []) as PgNode[]) {
    const t = w.MergeWhenClause?.commandType;
    if (t === 'CMD_DELETE') c.write('delete', n, 'MERGE ... THEN DELETE');
    else if (t === 'CMD_UPDATE') c.write('update', n, 'MERGE ... THEN UPDATE');
  }
}

// --- PL/pgSQL ----------------------------------------------------------------------------

function plpgsqlBody(c: Collector): void {
  c.nested = true;
  if (c.depth >= MAX_DEPTH) return c.fail(`code nested more than ${MAX_DEPTH} levels deep cannot be analysed`);
  const parsed = parsePlpgsql(c.stmtText);
  if (!parsed.ok) return c.fail(`the PL/pgSQL body could not be parsed: ${parsed.error}`);
  c.depth++;
  try {
    plWalk(parsed.funcs, c);
  } finally {
    c.depth--;
  }
}

/** Statement types whose field holds a SQL string to run rather than SQL. */
const DYNAMIC_FIELDS: Record<string, string> = {
  PLpgSQL_stmt_dynexecute: 'query',
  PLpgSQL_stmt_dynfors: 'query',
  PLpgSQL_stmt_open: 'dynquery',
  PLpgSQL_stmt_return_query: 'dynquery',
};

function plWalk(v: unknown, c: Collector): void {
  const onNode = (key: string, child: PgNode): boolean => {
    if (key === 'PLpgSQL_expr') {
      plExpr(child, c);
      return true;
    }
    const dyn = DYNAMIC_FIELDS[key];
    if (dyn && child[dyn]?.PLpgSQL_expr) {
      plDynamic(child[dyn].PLpgSQL_expr, c);
      for (const k in child) if (k !== dyn) walkTree(child[k], onNode);
      return true;
    }
    return false;
  };
  walkTree(v, onNode);
}

/** A SQL statement or expression embedded in PL/pgSQL (parseMode as in PostgreSQL's RawParseMode). */
function plExpr(e: PgNode, c: Collector): void {
  const query = String(e.query ?? '');
  const mode = Number(e.parseMode ?? 0);
  if (mode === 0) analyzeNested(query, c, 'PL/pgSQL');
  else if (mode >= 3 && mode <= 5) analyzeNested('SELECT ' + assignedValue(query), c, 'PL/pgSQL');
  else analyzeNested('SELECT ' + query, c, 'PL/pgSQL');
}

/** `EXECUTE <expr>` and friends: judge the string when it is a constant, fail closed otherwise. */
function plDynamic(e: PgNode, c: Collector): void {
  const query = String(e.query ?? '');
  plExpr({ query, parseMode: 2 }, c);
  const parsed = parseSql('SELECT ' + query);
  const target = parsed.ok && parsed.stmts.length === 1 ? parsed.stmts[0].stmt.SelectStmt?.targetList : undefined;
  const sql = target?.length === 1 ? constantString(target[0].ResTarget?.val) : undefined;
  if (sql === undefined) c.within('PL/pgSQL EXECUTE', () => c.fail(`dynamic SQL built at run time (EXECUTE ${clip(query)}) cannot be analysed`));
  else analyzeNested(sql, c, 'PL/pgSQL EXECUTE');
}

/** The expression of a PL/pgSQL assignment `target[sub].field := expr` (or `=`). */
function assignedValue(text: string): string {
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') quoted = !quoted;
    if (quoted) continue;
    if (ch === '[' || ch === '(') depth++;
    else if (ch === ']' || ch === ')') depth--;
    else if (depth === 0 && ch === ':' && text[i + 1] === '=') return text.slice(i + 2);
    else if (depth === 0 && ch === '=') return text.slice(i + 1);
  }
  return text;
}
