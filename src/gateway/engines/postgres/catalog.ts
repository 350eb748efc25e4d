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
 * CATALOG_TTL_MS: a view over the renamed column (its output name is the view's, and views are
 * not expanded by the derivation). Renames through the gateway invalidate at once.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { TargetConfig } from '../../config/schema.ts';

/** entries older than this are reloaded in the background on next use */
export const CATALOG_TTL_MS = 60_000;
/** the shared side connection closes after this long without a lookup */
const CATALOG_IDLE_MS = 60_000;

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
  /** table OID → attnum → column name */
  private tables = new Map<number, Map<number, string>>();
  private loadedAt = performance.now();
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;
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

  /** Loads the columns of the given tables (already known ones are skipped). */
  async load(tableOids: Iterable<number>): Promise<void> {
    const missing = [...new Set(tableOids)].filter((o) => o !== 0 && !this.tables.has(o));
    if (missing.length === 0) return;
    // no new generation: no mask plan was built on a table before it was loaded
    const loaded = await this.fetch(missing);
    for (const [oid, cols] of loaded) this.tables.set(oid, cols);
  }

  /** Column names of a relation in attribute order (for `COPY table TO STDOUT`), or null if unknown. */
  async relationColumns(relation: string, columns: string[] | null): Promise<string[] | null> {
    if (columns && columns.length > 0) return columns;
    const res = await this.query<{ attname: string }>(
      'select attname from pg_catalog.pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped order by attnum',
      [relation],
    );
    return res.rows.map((r) => r.attname);
  }

  /** A statement that may have changed tables was committed: reload everything known. */
  invalidate(): void {
    void this.reload();
  }

  /** Reloads in the background when the entries are older than CATALOG_TTL_MS. */
  refreshIfOld(now: number): void {
    if (now - this.loadedAt > CATALOG_TTL_MS && this.tables.size > 0 && !this.reloading) void this.reload();
  }

  private reload(): Promise<void> {
    if (this.reloading) { this.reloadAgain = true; return this.reloading; }
    this.loadedAt = performance.now();
    this.reloading = (async () => {
      do {
        this.reloadAgain = false;
        const oids = [...this.tables.keys()];
        if (oids.length === 0) break;
        try {
          const fresh = await this.fetch(oids);
          // tables that are gone stay known with no columns (their OID will not come back)
          for (const o of oids) if (!fresh.has(o)) fresh.set(o, new Map());
          for (const [o, cols] of this.tables) if (!fresh.has(o)) fresh.set(o, cols); // loaded meanwhile
          this.tables = fresh;
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

  private async fetch(oids: number[]): Promise<Map<number, Map<number, string>>> {
    const res = await this.query<{ rel: string; attnum: number; attname: string }>(
      'select attrelid::int8::text as rel, attnum, attname from pg_catalog.pg_attribute where attrelid = any($1::oid[]) and attnum > 0',
      [oids],
    );
    const out = new Map<number, Map<number, string>>();
    for (const o of oids) out.set(o, new Map());
    for (const r of res.rows) out.get(Number(r.rel))?.set(r.attnum, r.attname);
    return out;
  }

  private async query<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    const client = await this.connect();
    this.touch();
    return client.query<R>(sql, params);
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

/** Closes every shared side connection (tests, shutdown). */
export async function closeCatalogs(): Promise<void> {
  await Promise.all([...catalogs.values()].map((c) => c.close()));
}
