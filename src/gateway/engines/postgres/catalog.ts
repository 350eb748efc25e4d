/**
 * Resolves result columns to the real table columns they come from, so `select email as x from
 * customers` is masked like `select email`: RowDescription carries each column's table OID and
 * attribute number, and pg_attribute names the column.
 *
 * Lookups go over a side connection (node-postgres, same credentials and database, TLS when the
 * main connection uses it), opened lazily on the first lookup and cached per client connection.
 * The main connection cannot be used: the lookup is needed while it is streaming the very
 * result being masked. While a lookup runs, the engine holds the target's messages (framer
 * paused), so no row passes before its columns are known.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { TargetConfig } from '../../config/schema.ts';

export interface CatalogOptions {
  target: TargetConfig;
  user: string;
  password: string | undefined;
  database: string;
  /** the main connection negotiated TLS: the side connection does too */
  tls: boolean;
}

export class Catalog {
  private readonly opts: CatalogOptions;
  private client: pg.Client | null = null;
  private connecting: Promise<pg.Client> | null = null;
  /** table OID → attnum → column name */
  private readonly tables = new Map<number, Map<number, string>>();

  constructor(opts: CatalogOptions) {
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
    const client = await this.connect();
    const res = await client.query<{ rel: string; attnum: number; attname: string }>(
      'select attrelid::int8::text as rel, attnum, attname from pg_catalog.pg_attribute where attrelid = any($1::oid[]) and attnum > 0',
      [missing],
    );
    for (const o of missing) this.tables.set(o, new Map());
    for (const r of res.rows) this.tables.get(Number(r.rel))?.set(r.attnum, r.attname);
  }

  /** Column names of a relation in attribute order (for `COPY table TO STDOUT`), or null if unknown. */
  async relationColumns(relation: string, columns: string[] | null): Promise<string[] | null> {
    if (columns && columns.length > 0) return columns;
    const client = await this.connect();
    const res = await client.query<{ attname: string }>(
      'select attname from pg_catalog.pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped order by attnum',
      [relation],
    );
    return res.rows.map((r) => r.attname);
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
      client.on('error', () => { this.client = null; this.connecting = null; });
      await client.connect();
      this.client = client;
      return client;
    })().catch((err) => { this.connecting = null; throw err; });
    return this.connecting;
  }

  async close(): Promise<void> {
    const c = this.client ?? (this.connecting ? await this.connecting.catch(() => null) : null);
    this.client = null;
    this.connecting = null;
    await c?.end().catch(() => undefined);
  }
}
