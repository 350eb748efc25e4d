/**
 * The rule table: for each parse-tree node type, which guardrail rules it triggers.
 * Every node of every statement is visited (CTEs, subqueries, rule actions, EXPLAIN targets,
 * PREPARE bodies, DO and function bodies, literal dynamic SQL), so a statement is judged by
 * everything it contains, never by its first keyword. README.md documents each rule.
 */
import type { GuardrailRule } from '../../config/schema.ts';
import { alwaysTrue, constantString, isConstantCondition } from './constant.ts';
import type { PgNode } from './parser.ts';

export interface RuleContext {
  /** records that `rule` matched; `what` names the construct, e.g. "DROP TABLE" */
  hit(rule: GuardrailRule, what: string): void;
}

type Check = (node: PgNode, ctx: RuleContext) => void;

const words = (s: string | undefined) => (s ?? '').replace(/^[A-Z]+_/, '').replace(/_/g, ' ');
const objType = (t: string | undefined) => words(t).toUpperCase();

const deleteCheck: Check = (n, ctx) => {
  ctx.hit('delete', 'DELETE');
  if (alwaysTrue(n.whereClause)) ctx.hit('delete_without_where', n.whereClause ? 'DELETE with an always-true WHERE' : 'DELETE without WHERE');
};

const updateCheck: Check = (n, ctx) => {
  ctx.hit('update', 'UPDATE');
  if (alwaysTrue(n.whereClause)) ctx.hit('update_without_where', n.whereClause ? 'UPDATE with an always-true WHERE' : 'UPDATE without WHERE');
};

const mergeCheck: Check = (n, ctx) => {
  // A constant join condition makes MATCHED (ON true) or NOT MATCHED BY SOURCE (ON false)
  // cover every target row: the MERGE analogue of a missing WHERE.
  const everyRow = isConstantCondition(n.joinCondition);
  for (const w of (n.mergeWhenClauses ?? []) as PgNode[]) {
    const c = w.MergeWhenClause ?? {};
    const all = everyRow && alwaysTrue(c.condition);
    if (c.commandType === 'CMD_DELETE') {
      ctx.hit('delete', 'MERGE ... THEN DELETE');
      if (all) ctx.hit('delete_without_where', 'MERGE ... THEN DELETE on a constant join condition');
    } else if (c.commandType === 'CMD_UPDATE') {
      ctx.hit('update', 'MERGE ... THEN UPDATE');
      if (all) ctx.hit('update_without_where', 'MERGE ... THEN UPDATE on a constant join condition');
    } else if (c.commandType === 'CMD_INSERT') {
      ctx.hit('insert', 'MERGE ... THEN INSERT');
    }
  }
};

const grantCheck: Check = (n, ctx) => {
  if (n.is_grant) ctx.hit('grant', 'GRANT');
  else ctx.hit('revoke', 'REVOKE');
};

const functionOptions: Check = (n, ctx) => {
  for (const o of [...(n.options ?? []), ...(n.actions ?? [])] as PgNode[]) {
    const d = o.DefElem;
    if (d?.defname === 'security' && d.arg?.Boolean?.boolval === true) ctx.hit('security_definer', 'SECURITY DEFINER function');
  }
};

const ROLE_SETTINGS = new Set(['role', 'session_authorization']);

/** Function calls that change state the way a statement would. */
const funcCallCheck: Check = (n, ctx) => {
  const name = lastName(n.funcname);
  if (name === 'set_config') {
    ctx.hit('set', 'set_config()');
    const setting = constantString(n.args?.[0])?.toLowerCase();
    if (setting === undefined || ROLE_SETTINGS.has(setting)) ctx.hit('set_role', `set_config(${setting === undefined ? 'a run-time name' : `'${setting}'`})`);
  } else if (name === 'pg_notify') {
    ctx.hit('notify', 'pg_notify()');
  }
};

export function lastName(names: PgNode[] | undefined): string {
  const n = names?.[names.length - 1];
  return (n?.String?.sval as string | undefined) ?? '';
}

const TWO_PHASE = new Set(['TRANS_STMT_PREPARE', 'TRANS_STMT_COMMIT_PREPARED', 'TRANS_STMT_ROLLBACK_PREPARED']);
const FALSE_OPTION = new Set(['false', 'off', '0', 'no']);

const checks: Record<string, Check> = {
  DropStmt: (n, ctx) => ctx.hit('drop', `DROP ${objType(n.removeType)}`),
  DropRoleStmt: (_n, ctx) => ctx.hit('drop', 'DROP ROLE'),
  DropdbStmt: (_n, ctx) => ctx.hit('drop', 'DROP DATABASE'),
  DropTableSpaceStmt: (_n, ctx) => ctx.hit('drop', 'DROP TABLESPACE'),
  DropOwnedStmt: (_n, ctx) => ctx.hit('drop', 'DROP OWNED'),
  DropSubscriptionStmt: (_n, ctx) => ctx.hit('drop', 'DROP SUBSCRIPTION'),
  DropUserMappingStmt: (_n, ctx) => ctx.hit('drop', 'DROP USER MAPPING'),
  AlterTableCmd: (n, ctx) => {
    if (n.subtype === 'AT_DropColumn') ctx.hit('drop', 'ALTER TABLE ... DROP COLUMN');
  },
  TruncateStmt: (_n, ctx) => ctx.hit('truncate', 'TRUNCATE'),
  DeleteStmt: deleteCheck,
  UpdateStmt: updateCheck,
  InsertStmt: (_n, ctx) => ctx.hit('insert', 'INSERT'),
  MergeStmt: mergeCheck,
  GrantStmt: grantCheck,
  AlterDefaultPrivilegesStmt: (n, ctx) => grantCheck(n.action ?? {}, ctx),
  GrantRoleStmt: grantCheck,
  CopyStmt: (n, ctx) => {
    ctx.hit('copy', n.is_from ? 'COPY FROM' : 'COPY TO');
    if (n.is_program) ctx.hit(n.is_from ? 'copy_from_program' : 'copy_to_program', n.is_from ? 'COPY FROM PROGRAM' : 'COPY TO PROGRAM');
  },
  CreateFunctionStmt: (n, ctx) => {
    ctx.hit('create_function', n.is_procedure ? 'CREATE PROCEDURE' : 'CREATE FUNCTION');
    functionOptions(n, ctx);
  },
  AlterFunctionStmt: functionOptions,
  DoStmt: (_n, ctx) => ctx.hit('do', 'DO block'),
  CallStmt: (_n, ctx) => ctx.hit('call', 'CALL'),
  VacuumStmt: (n, ctx) => {
    if (n.is_vacuumcmd) ctx.hit('vacuum', 'VACUUM');
  },
  VariableSetStmt: (n, ctx) => {
    const verb = n.kind === 'VAR_RESET' || n.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    ctx.hit('set', `${verb} ${n.name ?? 'ALL'}`.trim());
    if (ROLE_SETTINGS.has(String(n.name ?? '').toLowerCase())) ctx.hit('set_role', `${verb} ${n.name === 'role' ? 'ROLE' : 'SESSION AUTHORIZATION'}`);
  },
  LockStmt: (_n, ctx) => ctx.hit('lock', 'LOCK TABLE'),
  ListenStmt: (_n, ctx) => ctx.hit('listen', 'LISTEN'),
  NotifyStmt: (_n, ctx) => ctx.hit('notify', 'NOTIFY'),
  TransactionStmt: (n, ctx) => {
    if (TWO_PHASE.has(n.kind)) ctx.hit('prepare_transaction', words(n.kind).replace('STMT ', '').toUpperCase().replace(/^PREPARE$/, 'PREPARE TRANSACTION'));
  },
  RuleStmt: (_n, ctx) => ctx.hit('create_rule', 'CREATE RULE'),
  CreateExtensionStmt: (_n, ctx) => ctx.hit('create_extension', 'CREATE EXTENSION'),
  CommentStmt: (_n, ctx) => ctx.hit('comment', 'COMMENT ON'),
  ReindexStmt: (_n, ctx) => ctx.hit('reindex', 'REINDEX'),
  ClusterStmt: (_n, ctx) => ctx.hit('cluster', 'CLUSTER'),
  RefreshMatViewStmt: (_n, ctx) => ctx.hit('refresh', 'REFRESH MATERIALIZED VIEW'),
  CreateRoleStmt: (n, ctx) => ctx.hit('create_role', `CREATE ${n.stmt_type === 'ROLESTMT_USER' ? 'USER' : n.stmt_type === 'ROLESTMT_GROUP' ? 'GROUP' : 'ROLE'}`),
  AlterSystemStmt: (_n, ctx) => ctx.hit('alter_system', 'ALTER SYSTEM'),
  LoadStmt: (_n, ctx) => ctx.hit('load', 'LOAD'),
  ExplainStmt: (n, ctx) => {
    for (const o of (n.options ?? []) as PgNode[]) {
      const d = o.DefElem;
      if (d?.defname !== 'analyze') continue;
      const arg = d.arg?.String?.sval ?? d.arg?.Boolean?.boolval ?? d.arg?.Integer?.ival;
      if (arg === undefined || arg === true || (typeof arg === 'string' && !FALSE_OPTION.has(arg.toLowerCase())) || (typeof arg === 'number' && arg !== 0)) {
        ctx.hit('explain_analyze', 'EXPLAIN ANALYZE');
      }
    }
  },
  SelectStmt: (n, ctx) => {
    if (n.intoClause) ctx.hit('create', 'SELECT INTO');
  },
  FuncCall: funcCallCheck,
};

// Every CREATE / ALTER statement type, including those whose node name does not say so.
const CREATE_LIKE: Record<string, string> = {
  ViewStmt: 'CREATE VIEW', IndexStmt: 'CREATE INDEX', RuleStmt: 'CREATE RULE', DefineStmt: 'CREATE AGGREGATE/OPERATOR/TYPE',
  CompositeTypeStmt: 'CREATE TYPE', ImportForeignSchemaStmt: 'IMPORT FOREIGN SCHEMA',
};
const ALTER_LIKE: Record<string, string> = { RenameStmt: 'ALTER ... RENAME', ReassignOwnedStmt: 'REASSIGN OWNED' };

/** The checks that apply to a node of type `type`, or undefined when none does. */
export function checkFor(type: string): Check | undefined {
  const cached = resolved.get(type);
  if (cached !== undefined) return cached ?? undefined;
  const parts: Check[] = [];
  const own = checks[type];
  if (own) parts.push(own);
  if (type.endsWith('Stmt')) {
    if (type.startsWith('Create') || CREATE_LIKE[type]) {
      const what = CREATE_LIKE[type] ?? `CREATE ${objType('X_' + type.slice(6, -4).replace(/([a-z])([A-Z])/g, '$1_$2'))}`;
      parts.push((_n, ctx) => ctx.hit('create', what));
    }
    if (type.startsWith('Alter') || ALTER_LIKE[type]) {
      const what = ALTER_LIKE[type] ?? `ALTER ${objType('X_' + type.slice(5, -4).replace(/([a-z])([A-Z])/g, '$1_$2'))}`;
      parts.push((_n, ctx) => ctx.hit('alter', what));
    }
  }
  const check: Check | null = parts.length === 0 ? null : parts.length === 1 ? parts[0] : (n, ctx) => parts.forEach((p) => p(n, ctx));
  resolved.set(type, check);
  return check ?? undefined;
}
const resolved = new Map<string, Check | null>();
