/**
 * CLI settings (conf, a JSON file under HOOP_CONFIG_DIR or the OS config dir): the current
 * gateway and one profile per gateway (issuer and client id learnt at login, login kind).
 */
import Conf from 'conf';
import { dirname } from 'node:path';
import { chmodSync, mkdirSync, statSync } from 'node:fs';

export interface Profile { issuer: string; client_id: string; audience: string; kind: 'device' | 'client_credentials' | 'token'; user?: string }
interface Settings { gateway?: string; profiles: Record<string, Profile> }

let conf: Conf<Settings> | undefined;

export function configDir(): string | undefined {
  return process.env.HOOP_CONFIG_DIR || undefined;
}

export function settings(): Conf<Settings> {
  conf ??= new Conf<Settings>({
    projectName: 'hoopctl', projectSuffix: '', cwd: configDir(), configName: 'config',
    defaults: { profiles: {} }, configFileMode: 0o600,
  });
  privateDir(dirname(conf.path));
  return conf;
}

/**
 * The config folder holds the login tokens' file (where no keychain runs): 0700, created so or
 * tightened with a warning (conf would create it with the umask's 0755).
 */
export function privateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const mode = statSync(dir).mode & 0o777;
    if (mode & 0o077) {
      chmodSync(dir, 0o700);
      process.stderr.write(`warning: ${dir} was accessible to other users (mode ${mode.toString(8)}); changed to 700\n`);
    }
  } catch { /* a read-only or foreign folder: conf reports what matters when it writes */ }
}

export const DEFAULT_GATEWAY = 'http://127.0.0.1:8009';

/** --gateway > HOOP_GATEWAY > the gateway of the last login > the local default */
export function resolveGateway(flag?: string): string {
  const url = flag ?? process.env.HOOP_GATEWAY ?? settings().get('gateway') ?? DEFAULT_GATEWAY;
  return url.replace(/\/+$/, '');
}

export function settingsDir(): string {
  return dirname(settings().path);
}
