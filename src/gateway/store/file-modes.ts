/**
 * The gateway's files on disk hold secrets: the SQLite store (`hoop.db`, its `-wal` and `-shm`)
 * keeps the tunnel-token signing key, and the dev IdP's key file signs access tokens. Any local
 * user who reads them can forge a tunnel token for an active lease. So at every start their
 * folder is made 0700 and the files 0600 — created so, or tightened with a warning naming the
 * file and its old mode. A file or folder of another owner that cannot be changed stops the start.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.ts';

const warnOf = (log?: Logger) => (msg: string, data: Record<string, unknown>) => {
  if (log) log.warn(data, msg);
  else process.stderr.write(`warning: ${msg} ${JSON.stringify(data)}\n`);
};

function tighten(path: string, mode: number, warn: ReturnType<typeof warnOf>): void {
  const st = statSync(path);
  if ((st.mode & 0o777 & ~mode) === 0) return;
  try {
    chmodSync(path, mode);
  } catch (err) {
    throw new Error(`${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)}) and cannot be changed to ${mode.toString(8)}: ${(err as Error).message}`, { cause: err });
  }
  warn(`${path} was accessible to other local users; changed to ${mode.toString(8)}`, { path, was: (st.mode & 0o777).toString(8), now: mode.toString(8) });
}

/** Makes `dir` 0700 (creating it) and each of `files` in it that exists 0600. */
export function secureFolder(dir: string, files: string[], log?: Logger): void {
  const warn = warnOf(log);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  tighten(dir, 0o700, warn);
  for (const f of files) {
    const p = join(dir, f);
    if (existsSync(p)) tighten(p, 0o600, warn);
  }
}

/** Creates `file` empty with mode 0600 unless it exists (SQLite gives its -wal and -shm the same mode). */
export function createPrivate(file: string): void {
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
}

/** the files of a SQLite store named `base` */
export const sqliteFiles = (base: string): string[] => [base, `${base}-wal`, `${base}-shm`, `${base}-journal`];
