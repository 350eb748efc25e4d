/**
 * The credential floor (issue 10 §2): statements that change the gateway's own target login are
 * refused on every PostgreSQL connection, whatever its guardrails say (none configured too).
 * `ALTER ROLE CURRENT_USER PASSWORD 'x'` (psql's `\password` sends `ALTER USER <name> PASSWORD`)
 * gave a user the password of the gateway's role, and so a raw connection around the policy.
 *
 * Refused, for the session user (CURRENT_USER, SESSION_USER, CURRENT_ROLE, or the configured
 * `target.user`, quoted or not) and for ALL roles:
 * - ALTER ROLE / USER / GROUP of it: password, VALID UNTIL, any attribute, RENAME;
 * - ALTER ROLE ... [IN DATABASE ...] SET / RESET (also ALTER ROLE ALL SET);
 * - role membership of it: GRANT/REVOKE <role> TO/FROM it, ALTER GROUP g ADD/DROP USER it,
 *   CREATE ROLE r ROLE it / ADMIN it;
 * - writes to pg_authid / pg_auth_members (a superuser login could UPDATE its password there);
 * wherever they appear: top level, DO blocks, function bodies, constant dynamic SQL. Code that
 * cannot be analysed (dynamic SQL built at run time, other languages) in a text that passes the
 * pre-check fails closed, as does a text that does not parse.
 *
 * Cost: `mayChangeLogin` is a cheap test on the raw text that is true for every text the floor
 * refuses (each such statement or code container needs one of its keywords as a token, and
 * keywords cannot be quoted or split), so most statements are never parsed for the floor.
 */
import { analyzeSql } from './analyze.ts';

// alter/grant/revoke/create: the statements themselves; do/function/procedure/execute and the
// SQL-running functions: code containers whose content is analysed; pg_auth: the catalogs
const PRECHECK = /alter|grant|revoke|create|\bdo\b|function|procedure|execute|dblink|query_to|ts_stat|ts_rewrite|pg_background|pg_auth/i;

/** False when `sql` cannot change the login: no need to parse it. */
export function mayChangeLogin(sql: string): boolean {
  return PRECHECK.test(sql);
}

/**
 * The floor's verdict on `sql` for a connection logging in as `user`: a message when refused,
 * null when allowed. Call only when `mayChangeLogin(sql)`.
 */
export function credentialFloor(sql: string, user: string): string | null {
  const a = analyzeSql(sql);
  if (a.unparseable !== undefined) return `the SQL could not be parsed (${a.unparseable}), and it may change the gateway's own login`;
  for (const c of a.logins) {
    const t = c.target;
    if (t.kind === 'current' || t.kind === 'all' || t.name === user) {
      return `${c.what} would change the gateway's own database login; the gateway's credential cannot be changed through it`;
    }
  }
  if (a.unanalysable !== undefined) return `${a.unanalysable}, so it cannot be shown not to change the gateway's own database login`;
  return null;
}
