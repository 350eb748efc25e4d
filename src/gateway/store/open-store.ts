/**
 * Picks the store by the `store` URL: `sqlite:<path>` (relative to the config's directory, or
 * `sqlite::memory:`) or `postgres://` / `postgresql://` (pg-store.ts, loaded only when used).
 */
import { resolve, dirname, basename } from 'node:path';
import { secureFolder, createPrivate, sqliteFiles } from './file-modes.ts';
import type { Store } from './store.ts';
import type { Logger } from '../log.ts';

export const isPostgresUrl = (url: string): boolean => /^postgres(ql)?:\/\//.test(url);

export async function openStore(url: string, baseDir: string, opts: { log?: Logger } = {}): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const { SqliteStore } = await import('./sqlite-store.ts');
    const p = url.slice('sqlite:'.length);
    if (p === ':memory:') return new SqliteStore(p);
    const file = resolve(baseDir, p);
    // 0700 folder, 0600 files, before and after SQLite opens them (it creates -wal and -shm)
    secureFolder(dirname(file), sqliteFiles(basename(file)), opts.log);
    createPrivate(file);
    const store = new SqliteStore(file);
    secureFolder(dirname(file), sqliteFiles(basename(file)), opts.log);
    return store;
  }
  if (isPostgresUrl(url)) {
    const { PgStore } = await import('./pg-store.ts');
    return PgStore.open(url, opts);
  }
  throw new Error('store must be sqlite:<path> or postgres://...');
}
