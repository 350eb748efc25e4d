/**
 * Resolves result columns to the real table columns they come from, so `select email as x from
 * customers` is masked like `select email`: RowDescription carries each column's table OID and
 * attribute number, and pg_attribute names the column.
 *
 * One catalog per target (host, port, database, role, TLS), shared by every session of the
 * process, over one side connection (node-postgres, same credentials; TLS when the main
 * connection uses it) opened on the first lookup and closed after CATALOG_IDLE_MS unused. A
 * session's own connection cannot be used: the lookup is needed while it streams the very
 * result being masked. While a lookup runs, the engine holds the target's messages (framer
 * paused), so no row passes before its columns are known. Sharing saves a second login to the
 * target per session (a SCRAM exchange and a backend process) and a query per session.
 *
 * Freshness. Entries are kept until the whole catalog is reloaded, which happens in the
 * background (never blocking rows, never making a known table unknown: that would mask every
 * column of long-lived prepared statements) when:
 * - a session saw a DDL statement (ALTER/DROP/CREATE, DO, CALL) go through it and then
 *   went idle outside a transaction (`invalidate()`: the change is committed, so the side
 *   connection sees it);
 * - entries are older than CATALOG_TTL_MS (`refreshIfOld()`), which bounds how long a change
 *   made outside the gateway (another client, a migration tool) goes unseen.
 * `generation` changes whenever the data does; the engine rebuilds mask plans built on an
 * older generation.
 *
 * Can stale data unmask? Attribute numbers are never reused (a dropped column keeps its number)
 * and a re-created table gets a new OID, so the only stale case is a column renamed outside the
 * gateway: `contact` renamed to `email` (a masked name) with the cache still saying `contact`.
 * A query must then name it `email` (current name) or use `*`: the RowDescription name is
 * `email` and matches the rule by name, and an alias (`select email as c`) makes the output
 * name differ from the cached real name, in which case the engine also asks the statement's
 * output derivation (which reads the SQL: `email` is masked). What stays exposed for at most
 * CATALOG_TTL_MS: a view over the renamed column, a view replaced outside the gateway (its
 * definition is read once per reload), and a view created outside the gateway whose columns
 * the statement uses only inside expressions (`reverse(x)`: the view list is read once per
 * reload). Changes through the gateway invalidate at once (view definitions synchronously).
 *
 * Views. RowDescription names a view's own OID and attnum, so a renaming view (`select ssn as
 * x`) would hide its source. The catalog lists the database's views and materialized views
 * (name, columns, the relations pg_depend says their definitions use; no definitions: reading
 * one locks the relations it uses) once, then reads a view's definition (`pg_get_viewdef`)
 * the first time a result uses it: as a result column's table, or named in the statement text
 * when the statement's derivation is needed. `relations` is the immutable snapshot the
 * derivation expands views with (policy/guardrails/derivation.ts). A definition that cannot be
 * read (lock_timeout while a table it uses is locked for ALTER/REFRESH, an error) leaves the
 * view's columns masked until the next reload. Views of pg_catalog and information_schema are
 * not listed: their columns are judged by their own names.
 *
 * COPY. `describe()` asks the side connection for the columns a COPY's query returns (Parse +
 * Describe of the unnamed statement: nothing runs), since CopyOutResponse carries only a
 * column count.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { Field } from 'pg-protocol/dist/messages.js';
import type { TargetConfig } from '../../config/schema.ts';
import type { Relations, ViewDef } from './policy.ts';

/** entries older than this are reloaded in the background on next use */
export const CATALOG_TTL_MS = 60_000;
/** the shared side connection closes after this long without a lookup */
const CATALOG_IDLE_MS = 60_000;
/**
 * Side-connection lock wait. Reading a view definition or describing a COPY query takes
 * AccessShareLock on the tables used; behind an ALTER's AccessExclusiveLock it would hold every
 * session's lookup (and the COPY that waits for it may be what the ALTER waits for). Giving up
 * masks instead.
 */
const SIDE_LOCK_TIMEOUT_MS = 2_000;
const SIDE_STATEMENT_TIMEOUT_MS = 10_000;
/** views on views are read this deep (derivation.ts masks deeper ones) */
const MAX_VIEW_DEPTH = 16;

/** before the view list is read: any relation may be a view (derivation masks all references) */
const UNKNOWN_VIEWS: Relations = { byOid: new Map(), byName: new Map(), unknown: true };

const VIEW_LIST = `
select c.oid::int8::text as oid, n.nspname as schema, c.relname as name,
  array(select a.attname::text from pg_catalog.pg_attribute a
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum) as columns,
  array(select distinct d.refobjid::int8::text from pg_catalog.pg_rewrite r
        join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_rewrite'::regclass and d.objid = r.oid
        where r.ev_class = c.oid and d.refclassid = 'pg_catalog.pg_class'::regclass and d.refobjid <> c.oid) as deps,
  exists(select 1 from pg_catalog.pg_class o where o.relname = c.relname and o.relkind in ('r', 'p', 'f')) as shadowed
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('v', 'm') and n.nspname not in ('pg_catalog', 'information_schema')`;

/**
 * Relations of a described result that have a namesake elsewhere (another schema, a temporary
 * table) with other columns, or that are or have a view namesake: the client's session, with
 * its own search_path and temporary tables, may read the namesake.
 */
const AMBIGUOUS = `
select c.oid::int8::text as rel from pg_catalog.pg_class c where c.oid = any($1::oid[]) and exists (
  select 1 from pg_catalog.pg_class o where o.relname = c.relname and o.oid <> c.oid and o.relkind in ('r', 'p', 'v', 'm', 'f')
    and (o.relkind in ('v', 'm') or c.relkind in ('v', 'm')
         or array(select attname from pg_catalog.pg_attribute where attrelid = o.oid and attnum > 0 and not attisdropped order by attnum)
            is distinct from array(select attname from pg_catalog.pg_attribute where attrelid = c.oid and attnum > 0 and not attisdropped order by attnum)))`;

export interface CatalogOptions {
  target: TargetConfig;
  user: string;
  password: string | undefined;
  database: string;
  /** the main connection negotiated TLS: the side connection does too */
  tls: boolean;
}

const catalogs = new Map<string, Catalog>();

/**
 * Statements that can rename, add or drop columns of existing tables (DO blocks and procedures
 * may run such DDL). A function called from a SELECT may too: the TTL covers that.
 */
const DDL = /^\s*(?:alter|drop|create|do|call|import)\b/i;

/** True when a statement text may change the catalog (cheap keyword check on its first word). */
export function mayChangeCatalog(sql: string): boolean {
  // a text of several statements: any of them (semicolon-separated; strings may contain one,
  // which only makes this say yes more often)
  if (DDL.test(sql)) return true;
  const semi = sql.indexOf(';');
  return semi >= 0 && semi < sql.length - 1 && sql.slice(semi + 1).split(';').some((s) => DDL.test(s));
}

export class Catalog {
  /** the shared catalog of this target */
  static for(opts: CatalogOptions): Catalog {
    const t = opts.target;
    const key = [t.host, t.port, opts.database, opts.user, opts.tls ? 'tls' : '', t.sslmode, t.ca_file ?? '', opts.password ?? ''].join('\0');
    let c = catalogs.get(key);
    if (!c) { c = new Catalog(opts); catalogs.set(key, c); }
    return c;
  }

  private readonly opts: CatalogOptions;
  private client: pg.Client | null = null;
  private connecting: Promise<pg.Client> | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  /**
   * Lookups of every session share the side connection, one at a time: node-postgres queues
   * concurrent client.query() calls itself but deprecates it (pg@9 drops it), so we queue.
   */
  private turn: Promise<unknown> = Promise.resolve();
  /** table OID → attnum → column name */
  private tables = new Map<number, Map<number, string>>();
  private loadedAt = performance.now();
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;
  /** the views (definitions read or not) */
  private views: Relations = UNKNOWN_VIEWS;
  private viewsListed = false;
  /** listed views whose definitions have not been read yet */
  private pendingViews = new Set<number>();
  /** bumped by each invalidation and reload: definitions read before it may be of a replaced view */
  private viewEpoch = 0;
  /** views whose definitions were read before an invalidation: the reload reads them again */
  private readonly rereadViews = new Set<number>();
  /** changes whenever the data does (mask plans built on an older one are rebuilt) */
  generation = 0;

  private constructor(opts: CatalogOptions) {
    this.opts = opts;
  }

  has(tableOid: number): boolean {
    return this.tables.has(tableOid);
  }

  columnName(tableOid: number, attnum: number): string | undefined {
    return this.tables.get(tableOid)?.get(attnum);
  }

  /** The views as the derivation sees them (a new object whenever they change). */
  get relations(): Relations {
    return this.views;
  }

  /** The view or materialized view with this OID, if it is one. */
  view(oid: number): ViewDef | undefined {
    return this.views.byOid.get(oid);
  }

  /**
   * What must be read before a result with these columns can be masked: the view list (once),
   * the columns of tables not seen before, and the definitions of views among them or (when
   * the statement's derivation will be asked: an expression or aliased column) named in
   * `sql` (`derives`: it will be asked whatever the columns). Null when everything is known;
   * else a promise the engine holds the target's messages for. It rejects when the side
   * connection fails (columns stay masked).
   */
  prepare(fields: readonly Field[], sql: string | null, derives = false): Promise<void> | null {
    const missing = fields.filter((f) => f.tableID !== 0 && !this.tables.has(f.tableID)).map((f) => f.tableID);
    if (this.viewsListed && missing.length === 0 && (this.pendingViews.size === 0 || this.wantedViews(fields, sql, derives).size === 0)) return null;
    return (async () => {
      if (!this.viewsListed) await this.listViews();
      if (missing.length > 0) {
        const kinds = await this.load(missing);
        // a view created since the list was read (outside the gateway): read the list again
        if ([...kinds].some(([oid, kind]) => (kind === 'v' || kind === 'm') && !this.views.byOid.has(oid))) await this.listViews();
      }
      await this.readDefinitions(this.wantedViews(fields, sql, derives));
    })();
  }

  /** Pending views the result uses as column sources, or that `sql` names (when its derivation matters). */
  private wantedViews(fields: readonly Field[], sql: string | null, derives: boolean): Set<number> {
    const want = new Set<number>();
    if (this.pendingViews.size === 0) return want;
    for (const f of fields) {
      if (this.pendingViews.has(f.tableID)) want.add(f.tableID);
      if (f.tableID === 0 || this.columnName(f.tableID, f.columnID) !== f.name) derives = true;
    }
    if (derives && sql) {
      // identifiers of the text: unquoted ones fold to lower case; a superset is harmless
      for (const m of sql.matchAll(/"((?:[^"]|"")+)"|([A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*)/g)) {
        const word = m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2];
        for (const v of this.views.byName.get(word.toLowerCase()) ?? []) if (this.pendingViews.has(v.oid)) want.add(v.oid);
      }
    }
    return want;
  }

  /** Reads the list of views (no definitions); definitions already read are kept for views still there. */
  private async listViews(): Promise<void> {
    const list = await this.fetchViewList();
    const keep = new Map<number, string | null>();
    for (const oid of list.keys()) {
      const old = this.views.byOid.get(oid);
      if (old && !this.pendingViews.has(oid)) keep.set(oid, old.sql);
    }
    this.installViews(list, keep);
  }

  private async fetchViewList(): Promise<Map<number, ViewDef>> {
    const res = await this.query<{ oid: string; schema: string; name: string; columns: string[]; deps: string[]; shadowed: boolean }>(VIEW_LIST, []);
    const out = new Map<number, ViewDef>();
    for (const r of res.rows) {
      out.set(Number(r.oid), { oid: Number(r.oid), schema: r.schema, name: r.name, sql: null, columns: r.columns, deps: r.deps.map(Number), shadowed: r.shadowed });
    }
    return out;
  }

  /**
   * A new snapshot: the listed views with the definitions in `defs` (a view absent from it is
   * pending). Every ViewDef is a new object, so analyses cached on the old ones (which may
   * have seen a pending dependency as masked) are not reused.
   */
  private installViews(list: ReadonlyMap<number, ViewDef>, defs: ReadonlyMap<number, string | null>): void {
    const byOid = new Map<number, ViewDef>();
    const byName = new Map<string, ViewDef[]>();
    const pending = new Set<number>();
    for (const [oid, v] of list) {
      const has = defs.has(oid);
      const def: ViewDef = { ...v, sql: has ? defs.get(oid)! : null };
      if (!has) pending.add(oid);
      byOid.set(oid, def);
      const key = v.name.toLowerCase();
      const same = byName.get(key);
      if (same) same.push(def); else byName.set(key, [def]);
    }
    this.views = { byOid, byName, unknown: false };
    this.pendingViews = pending;
    this.viewsListed = true;
    this.generation++;
  }

  /** Reads the definitions of these views and of the views they use (transitively, bounded). */
  private async readDefinitions(oids: Iterable<number>): Promise<void> {
    const asked = [...oids];
    // an invalidation or reload while reading may make what was read stale: read again (the
    // views stay pending, so masked, if that keeps happening)
    for (let attempt = 0; attempt < 3; attempt++) {
      const want = this.closure(asked).filter((o) => this.pendingViews.has(o));
      if (want.length === 0) return;
      const epoch = this.viewEpoch;
      let defs: Map<number, string | null>;
      try {
        defs = await this.fetchDefinitions(want);
      } catch (err) {
        // the connection failed: still pending, read when next used
        if (this.client === null) throw err;
        // lock timeout or an error of the server: masked until the next reload (not retried per
        // statement: each try may wait SIDE_LOCK_TIMEOUT_MS)
        defs = new Map(want.map((o) => [o, null]));
      }
      if (epoch !== this.viewEpoch) continue;
      const all = new Map<number, string | null>();
      for (const [oid, v] of this.views.byOid) if (!this.pendingViews.has(oid)) all.set(oid, v.sql);
      for (const [oid, d] of defs) if (this.views.byOid.has(oid)) all.set(oid, d);
      this.installViews(this.views.byOid, all);
      return;
    }
  }

  private closure(oids: Iterable<number>): number[] {
    const seen = new Set<number>();
    let level = [...oids];
    for (let depth = 0; depth <= MAX_VIEW_DEPTH && level.length > 0; depth++) {
      const next: number[] = [];
      for (const o of level) {
        const v = this.views.byOid.get(o);
        if (!v || seen.has(o)) continue;
        seen.add(o);
        next.push(...v.deps);
      }
      level = next;
    }
    return [...seen];
  }

  private async fetchDefinitions(oids: number[]): Promise<Map<number, string | null>> {
    const res = await this.query<{ oid: string; def: string | null }>(
      'select c.oid::int8::text as oid, pg_catalog.pg_get_viewdef(c.oid) as def from pg_catalog.pg_class c where c.oid = any($1::oid[])',
      [oids],
    );
    const out = new Map<number, string | null>(oids.map((o) => [o, null])); // gone meanwhile: masked
    for (const r of res.rows) out.set(Number(r.oid), r.def);
    return out;
  }

  /**
   * The columns `sql` (one SELECT/VALUES/DML-with-RETURNING) would return, from the side
   * connection: Parse + Describe of the unnamed statement, nothing executed. Empty for a
   * statement returning no rows. Null when the side connection cannot tell what the client's
   * session would see: the query does not parse there (it uses a temporary table, say), or a
   * relation of the result has a namesake the session's search_path or temporary tables could
   * mean instead (see AMBIGUOUS). Rejects when the side connection fails.
   */
  async describe(sql: string): Promise<Field[] | null> {
    const fields = await this.serial(async () => {
      const client = await this.connect();
      this.touch();
      const d = new DescribeOnly(sql);
      client.query(d);
      return d.done;
    });
    if (!fields) return null;
    const oids = [...new Set(fields.map((f) => f.tableID).filter((o) => o !== 0))];
    if (oids.length > 0) {
      const amb = await this.query<{ rel: string }>(AMBIGUOUS, [oids]);
      if (amb.rows.length > 0) return null;
    }
    return fields;
  }

  /** Loads the columns of the given tables (already known ones are skipped); returns their relkinds. */
  async load(tableOids: Iterable<number>): Promise<Map<number, string>> {
    const missing = [...new Set(tableOids)].filter((o) => o !== 0 && !this.tables.has(o));
    const kinds = new Map<number, string>();
    if (missing.length === 0) return kinds;
    // no new generation: no mask plan was built on a table before it was loaded
    const loaded = await this.fetch(missing, kinds);
    for (const [oid, cols] of loaded) this.tables.set(oid, cols);
    return kinds;
  }

  /**
   * The column list `COPY relation TO STDOUT` writes (quoted, comma-separated; generated
   * columns are not copied), or null when the relation is not found on the side connection.
   */
  async copyColumns(relation: string): Promise<string | null> {
    const res = await this.query<{ cols: string | null }>(
      `select string_agg(pg_catalog.quote_ident(attname), ', ' order by attnum) as cols from pg_catalog.pg_attribute
       where attrelid = pg_catalog.to_regclass($1) and attnum > 0 and not attisdropped and attgenerated = ''`,
      [relation],
    );
    return res.rows[0]?.cols ?? null;
  }

  /**
   * A statement that may have changed tables was committed: reload everything known. View
   * definitions are dropped at once, not when the reload is done: a view replaced through the
   * gateway (`create or replace view v as select ssn as x`) must not be judged by its old
   * definition by the very next statement; each is read again when next used (or by the reload).
   */
  invalidate(): void {
    if (this.viewsListed) {
      for (const oid of this.views.byOid.keys()) if (!this.pendingViews.has(oid)) this.rereadViews.add(oid);
      this.viewEpoch++; // reads started before now may return the old definitions
      this.installViews(this.views.byOid, new Map());
    }
    void this.reload();
  }

  /** Reloads in the background when the entries are older than CATALOG_TTL_MS. */
  refreshIfOld(now: number): void {
    if (now - this.loadedAt > CATALOG_TTL_MS && (this.tables.size > 0 || this.viewsListed) && !this.reloading) void this.reload();
  }

  private reload(): Promise<void> {
    if (this.reloading) { this.reloadAgain = true; return this.reloading; }
    this.loadedAt = performance.now();
    this.reloading = (async () => {
      do {
        this.reloadAgain = false;
        const oids = [...this.tables.keys()];
        if (oids.length === 0 && !this.viewsListed) break;
        try {
          const fresh = oids.length > 0 ? await this.fetch(oids) : new Map<number, Map<number, string>>();
          // views: the list and the definitions read before, all read again before the
          // snapshot changes, so no plan is rebuilt on a half-read state
          let views: Map<number, ViewDef> | null = null;
          let defs = new Map<number, string | null>();
          if (this.viewsListed) {
            views = await this.fetchViewList();
            const had = [...this.views.byOid.keys()].filter((o) => (!this.pendingViews.has(o) || this.rereadViews.has(o)) && views!.has(o));
            // unread (lock timeout, error): pending again, read when next used
            if (had.length > 0) defs = await this.fetchDefinitions(had).catch(() => new Map());
          }
          // tables that are gone stay known with no columns (their OID will not come back)
          for (const o of oids) if (!fresh.has(o)) fresh.set(o, new Map());
          for (const [o, cols] of this.tables) if (!fresh.has(o)) fresh.set(o, cols); // loaded meanwhile
          this.tables = fresh;
          if (views) { this.viewEpoch++; this.installViews(views, defs); this.rereadViews.clear(); }
          this.loadedAt = performance.now();
          this.generation++;
        } catch {
          // keep the old entries; the next use tries again after the TTL
          break;
        }
      } while (this.reloadAgain);
    })().finally(() => { this.reloading = null; });
    return this.reloading;
  }

  private async fetch(oids: number[], kinds?: Map<number, string>): Promise<Map<number, Map<number, string>>> {
    const res = await this.query<{ rel: string; attnum: number; attname: string; relkind: string }>(
      `select a.attrelid::int8::text as rel, a.attnum, a.attname, c.relkind::text as relkind
       from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid
       where a.attrelid = any($1::oid[]) and a.attnum > 0`,
      [oids],
    );
    const out = new Map<number, Map<number, string>>();
    for (const o of oids) out.set(o, new Map());
    for (const r of res.rows) {
      out.get(Number(r.rel))?.set(r.attnum, r.attname);
      kinds?.set(Number(r.rel), r.relkind);
    }
    return out;
  }

  private query<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    return this.serial(async () => {
      const client = await this.connect();
      this.touch();
      return client.query<R>(sql, params);
    });
  }

  /** runs `fn` after every earlier lookup on the side connection settled */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  private touch(): void {
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => { this.idleTimer = null; void this.close(); }, CATALOG_IDLE_MS);
      this.idleTimer.unref();
    }
  }

  private connect(): Promise<pg.Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      const { target } = this.opts;
      const ssl = !this.opts.tls ? false : target.sslmode === 'verify-full'
        ? { rejectUnauthorized: true, ca: target.ca_file ? readFileSync(target.ca_file) : undefined }
        : { rejectUnauthorized: false };
      const client = new pg.Client({
        host: target.host, port: target.port, user: this.opts.user, password: this.opts.password,
        database: this.opts.database, ssl, application_name: 'hoopctl-catalog', connectionTimeoutMillis: 10_000,
        lock_timeout: SIDE_LOCK_TIMEOUT_MS, statement_timeout: SIDE_STATEMENT_TIMEOUT_MS,
      });
      client.on('error', () => { if (this.client === client) { this.client = null; this.connecting = null; } });
      client.on('end', () => { if (this.client === client) { this.client = null; this.connecting = null; } });
      await client.connect();
      // an idle side connection must not keep the process alive
      (client as unknown as { connection?: { stream?: { unref?(): void } } }).connection?.stream?.unref?.();
      this.client = client;
      return client;
    })().catch((err) => { this.connecting = null; throw err; });
    return this.connecting;
  }

  /** Closes the side connection (the entries stay; the next lookup opens a new one). */
  async close(): Promise<void> {
    if (this.idleTimer) { clearTimeout(this.idleTimer); this.idleTimer = null; }
    const c = this.client ?? (this.connecting ? await this.connecting.catch(() => null) : null);
    this.client = null;
    this.connecting = null;
    await c?.end().catch(() => undefined);
  }
}

/**
 * A node-postgres Submittable (the interface pg-cursor uses) sending Parse + Describe + Sync:
 * node-postgres has no describe-only query, and executing the statement is out of the question
 * (a COPY's query may modify data in a CTE). Resolves with the RowDescription's fields, [] for
 * NoData, null on an ErrorResponse; rejects when the connection fails.
 */
class DescribeOnly implements pg.Submittable {
  readonly done: Promise<Field[] | null>;
  private readonly sql: string;
  private fields: Field[] = [];
  private settle!: (f: Field[] | null) => void;
  private fail!: (err: Error) => void;

  constructor(sql: string) {
    this.sql = sql;
    this.done = new Promise((resolve, reject) => { this.settle = resolve; this.fail = reject; });
  }

  submit(con: pg.Connection): void {
    con.parse({ text: this.sql, name: '', types: [] }, true);
    con.describe({ type: 'S', name: '' }, true);
    con.sync();
  }

  handleRowDescription(msg: { fields: Field[] }): void { this.fields = msg.fields; }
  handleReadyForQuery(): void { this.settle(this.fields); }
  handleError(err: Error & { severity?: string }): void {
    // an ErrorResponse carries a severity; anything else is the connection failing
    if (err.severity) this.settle(null); else this.fail(err);
  }
  // never sent in answer to Parse/Describe; present because node-postgres may call them
  handleDataRow(): void {}
  handleCommandComplete(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(): void {}
  handleCopyData(): void {}
}
