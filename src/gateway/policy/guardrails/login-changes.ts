/**
 * The login changes a parse-tree node makes, for the credential floor (credential-floor.ts).
 * Kept apart from the floor so the analysis walk (analyze.ts) can collect them without an
 * import cycle.
 */
import type { PgNode } from './parser.ts';

/** a role the statement changes: the session user under any name, every role, or a named one */
export type LoginTarget = { kind: 'current' } | { kind: 'all' } | { kind: 'name'; name: string };
export interface LoginChange { target: LoginTarget; what: string }

const AUTH_CATALOGS = new Set(['pg_authid', 'pg_auth_members']);

function roleSpec(r: PgNode | undefined): LoginTarget {
  const s = r?.RoleSpec ?? r;
  switch (s?.roletype) {
    case 'ROLESPEC_CSTRING': return { kind: 'name', name: String(s.rolename) };
    case 'ROLESPEC_PUBLIC': return { kind: 'name', name: 'public' };
    // CURRENT_USER, SESSION_USER, CURRENT_ROLE (and anything new): the session user
    default: return { kind: 'current' };
  }
}

function members(options: PgNode[] | undefined, what: string, out: LoginChange[]): void {
  for (const o of options ?? []) {
    const d = o.DefElem;
    if (d?.defname !== 'rolemembers' && d?.defname !== 'adminmembers') continue;
    for (const m of (d.arg?.List?.items ?? []) as PgNode[]) out.push({ target: roleSpec(m), what });
  }
}

/** The login changes one parse-tree node makes (called by the analysis walk for every node). */
export function loginChanges(type: string, n: PgNode, out: LoginChange[]): void {
  switch (type) {
    case 'AlterRoleStmt': {
      const opts = (n.options ?? []) as PgNode[];
      if (opts.some((o) => o.DefElem?.defname === 'rolemembers')) members(opts, 'ALTER GROUP ... ADD/DROP USER', out);
      else out.push({ target: roleSpec(n.role), what: `ALTER ROLE${opts.length ? ` ... ${opts.map((o) => String(o.DefElem?.defname ?? '').toUpperCase()).join(', ')}` : ''}` });
      return;
    }
    case 'AlterRoleSetStmt':
      out.push({ target: n.role ? roleSpec(n.role) : { kind: 'all' }, what: 'ALTER ROLE ... SET/RESET' });
      return;
    case 'RenameStmt':
      if (n.renameType === 'OBJECT_ROLE') out.push({ target: { kind: 'name', name: String(n.subname) }, what: 'ALTER ROLE ... RENAME' });
      return;
    case 'GrantRoleStmt':
      for (const g of (n.grantee_roles ?? []) as PgNode[]) out.push({ target: roleSpec(g), what: `${n.is_grant ? 'GRANT' : 'REVOKE'} of a role membership` });
      return;
    case 'CreateRoleStmt':
      members(n.options, 'CREATE ROLE ... ROLE/ADMIN', out);
      return;
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      if (AUTH_CATALOGS.has(String(n.relation?.relname ?? ''))) out.push({ target: { kind: 'all' }, what: `a write to ${n.relation.relname}` });
  }
}
