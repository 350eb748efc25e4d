/**
 * Picks the store by the `store` URL: `sqlite:<path>` (relative to the config's directory, or
 * `sqlite::memory:`) or `postgres://` / `postgresql://` (pg-store.ts, loaded only when used).
 */
import { resolve } from 'node:path';
import type { Store } from './store.ts';
import type { Logger } from '../log.ts';

export const isPostgresUrl = (url: string): boolean => /^postgres(ql)?:\/\//.test(url);

export async function openStore(url: string, baseDir: string, opts: { log?: Logger } = {}): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const { SqliteStore } = await import('./sqlite-store.ts');
    const p = url.slice('sqlite:'.length);
    return new SqliteStore(p === ':memory:' ? p : resolve(baseDir, p));
  }
  if (isPostgresUrl(url)) {
    const { PgStore } = await import('./pg-store.ts');
    return PgStore.open(url, opts);
  }
  throw new Error('store must be sqlite:<path> or postgres://...');
}
