/**
 * Which startup parameters of the client reach the target (issue 10 §8). Clients set GUCs in
 * the startup packet (`statement_timeout`, `search_path`, `options=-c name=value`, ...) and
 * expect them to hold, so every GUC is forwarded except a deny-list of what would bypass the
 * gateway's policy:
 *
 * - `replication`: a replication connection speaks another protocol the engine does not parse;
 * - `role`, `session_authorization`: another identity than the gateway's target login;
 * - `standard_conforming_strings`, `backslash_quote`, and a `client_encoding` other than UTF-8:
 *   they change how the server reads the SQL text (string escapes, multi-byte encodings whose
 *   trailing bytes can be a quote or a backslash) while the gateway parses it as UTF-8 with
 *   standard strings, so the two would disagree on what a statement is;
 * - `local_preload_libraries`, `session_preload_libraries`, `session_replication_role`: load
 *   code or switch triggers and rules off;
 * - `hoop.*`: the gateway's own parameters (`hoop.detach_reviews`, `hoop.review`), consumed here.
 *
 * `options` is split into its settings (`-c name=value`, `--name=value`, backslash escapes
 * spaces, as the server reads it); denied ones are dropped, any other switch in it too (the
 * server accepts only those two from a client), and the rest is forwarded as one `options`.
 * Names are matched as the server does: case-insensitive, `-` and `_` alike.
 */

const DENIED = new Set([
  'replication', 'role', 'session_authorization', 'standard_conforming_strings', 'backslash_quote',
  'local_preload_libraries', 'session_preload_libraries', 'session_replication_role',
]);
const UTF8 = new Set(['utf8', 'utf-8', 'unicode']);

export interface StartupParams {
  /** forwarded to the target, in the client's order */
  params: Array<[string, string]>;
  /** `_pq_.` protocol options: answered with NegotiateProtocolVersion */
  unrecognized: string[];
  database: string | undefined;
  /** the gateway's own parameters */
  hoop: Map<string, string>;
  /** names dropped by the deny-list (logged) */
  dropped: string[];
}

const norm = (name: string) => name.toLowerCase().replace(/-/g, '_');

/** why a setting may not reach the target, or null */
function denied(name: string, value: string): boolean {
  const n = norm(name);
  if (DENIED.has(n) || n.startsWith('hoop.')) return true;
  return n === 'client_encoding' && !UTF8.has(value.trim().toLowerCase().replace(/^'|'$/g, ''));
}

export function startupParams(client: ReadonlyMap<string, string>): StartupParams {
  const out: StartupParams = { params: [], unrecognized: [], database: undefined, hoop: new Map(), dropped: [] };
  for (const [k, v] of client) {
    const n = norm(k);
    if (n === 'database') out.database = v;
    else if (n === 'user') continue; // the lease is the login: the target user is the gateway's
    else if (k.startsWith('_pq_.')) out.unrecognized.push(k);
    else if (n.startsWith('hoop.')) out.hoop.set(n, v);
    else if (n === 'options') {
      const kept = filterOptions(v, out.dropped);
      if (kept) out.params.push([k, kept]);
    } else if (denied(k, v)) out.dropped.push(k);
    else out.params.push([k, v]);
  }
  return out;
}

/** The `-c name=value` / `--name=value` settings of an options string that may go on, re-escaped. */
function filterOptions(options: string, dropped: string[]): string {
  const words = splitOptions(options);
  const kept: string[] = [];
  for (let i = 0; i < words.length; i++) {
    let setting: string | undefined;
    const w = words[i];
    if (w === '-c') setting = words[++i];
    else if (w.startsWith('-c')) setting = w.slice(2);
    else if (w.startsWith('--')) setting = w.slice(2);
    if (setting === undefined) { dropped.push(`options ${w}`); continue; }
    const eq = setting.indexOf('=');
    if (eq <= 0) { dropped.push(`options ${setting}`); continue; }
    const name = setting.slice(0, eq);
    if (denied(name, setting.slice(eq + 1))) { dropped.push(name); continue; }
    kept.push('-c', setting);
  }
  return kept.map((w) => w.replace(/[\\ ]/g, (c) => '\\' + c)).join(' ');
}

/** The server's pg_split_opts: words split on whitespace, a backslash takes the next character as is. */
function splitOptions(s: string): string[] {
  const words: string[] = [];
  let cur = '';
  let has = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === '\\' && i + 1 < s.length) { cur += s[++i]; has = true; }
    else if (/\s/.test(ch)) { if (has) words.push(cur); cur = ''; has = false; }
    else { cur += ch; has = true; }
  }
  if (has) words.push(cur);
  return words;
}
