/**
 * Where login tokens live: the OS keychain via @napi-rs/keyring (service "hoopctl", account =
 * gateway URL). Where no keychain runs (headless Linux, CI), a 0600 file `tokens.json` in the
 * config dir, with a one-line warning — what `gh` does. HOOP_KEYCHAIN=off forces the file.
 */
import { readFileSync, writeFileSync, renameSync, existsSync, chmodSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { settingsDir } from './settings.ts';

export interface StoredTokens {
  access_token: string;
  refresh_token?: string;
  id_token?: string;
  /** ms since epoch */
  expires_at?: number;
  kind: 'device' | 'client_credentials';
  client_id?: string;
}

const SERVICE = 'hoopctl';

type Backend = { name: 'keychain' | 'file'; get(k: string): StoredTokens | undefined; set(k: string, v: StoredTokens): void; delete(k: string): void; where: string };

let backend: Backend | undefined;
let warned = false;

function fileBackend(): Backend {
  const file = join(settingsDir(), 'tokens.json');
  const readAll = (): Record<string, StoredTokens> => {
    if (!existsSync(file)) return {};
    // a token file others can read (copied, restored from a backup): tightened, with a warning
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) {
      chmodSync(file, 0o600);
      process.stderr.write(`warning: ${file} was readable by other users (mode ${mode.toString(8)}); changed to 600\n`);
    }
    try { return JSON.parse(readFileSync(file, 'utf8')); } catch { return {}; }
  };
  const writeAll = (all: Record<string, StoredTokens>) => {
    mkdirSync(settingsDir(), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(all, null, 2), { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, file);
  };
  return {
    name: 'file', where: file,
    get: (k) => readAll()[k],
    set: (k, v) => { const all = readAll(); all[k] = v; writeAll(all); },
    delete: (k) => { const all = readAll(); if (k in all) { delete all[k]; writeAll(all); } },
  };
}

async function keychainBackend(): Promise<Backend | undefined> {
  if (process.env.HOOP_KEYCHAIN === 'off') return undefined;
  try {
    const { Entry } = await import('@napi-rs/keyring');
    // probe: a keychain that cannot store (no Secret Service on D-Bus) throws here
    const probe = new Entry(SERVICE, '__probe__');
    probe.setPassword('1');
    probe.deletePassword();
    return {
      name: 'keychain', where: 'the OS keychain',
      get: (k) => { const v = new Entry(SERVICE, k).getPassword(); return v ? JSON.parse(v) : undefined; },
      set: (k, v) => new Entry(SERVICE, k).setPassword(JSON.stringify(v)),
      delete: (k) => { try { new Entry(SERVICE, k).deletePassword(); } catch { /* absent */ } },
    };
  } catch {
    return undefined;
  }
}

async function getBackend(): Promise<Backend> {
  backend ??= (await keychainBackend()) ?? fileBackend();
  return backend;
}

export async function loadTokens(gateway: string): Promise<StoredTokens | undefined> {
  const b = await getBackend();
  try { return b.get(gateway); } catch { return undefined; }
}

/** Saves tokens; returns where they went, warning once on stderr when it is the file fallback. */
export async function saveTokens(gateway: string, t: StoredTokens): Promise<string> {
  const b = await getBackend();
  b.set(gateway, t);
  if (b.name === 'file' && !warned) {
    warned = true;
    process.stderr.write(`warning: no OS keychain available; token stored in plain text in ${b.where} (mode 0600)\n`);
  }
  return b.where;
}

export async function deleteTokens(gateway: string): Promise<void> {
  (await getBackend()).delete(gateway);
}
