/**
 * CLI settings (conf, a JSON file under HOOP_CONFIG_DIR or the OS config dir): the current
 * gateway and one profile per gateway (issuer and client id learnt at login, login kind).
 */
import Conf from 'conf';
import { dirname } from 'node:path';

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
  return conf;
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
