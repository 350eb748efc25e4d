/**
 * Signing keys of the dev IdP: one RS256 key, generated at first start and kept in a JWKS
 * file (mode 0600) when one is given, so tokens issued before a gateway restart still verify
 * after it. Without a file the key lives in memory and every restart invalidates all tokens.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';
import { ConfigError } from '../../errors.ts';
import type { Store } from '../store/store.ts';

export const SIGNING_ALG = 'RS256';

export interface PrivateJwks { keys: JWK[] }
export interface PublicJwks { keys: JWK[] }

async function generate(): Promise<JWK> {
  const { privateKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: SIGNING_ALG, use: 'sig' };
}

function isPrivateJwks(v: unknown): v is PrivateJwks {
  const keys = (v as PrivateJwks | null)?.keys;
  return Array.isArray(keys) && keys.length > 0 && keys.every((k) => typeof k === 'object' && k !== null && typeof k.kty === 'string' && typeof k.d === 'string');
}

/** Reads the key file, or creates it (and its directory) with a fresh key. */
export async function loadOrCreateSigningKeys(file?: string): Promise<PrivateJwks> {
  if (file && existsSync(file)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError(file, '', `dev IdP key file cannot be read: ${(err as Error).message} (delete it to generate a new key; issued tokens become invalid)`);
    }
    if (!isPrivateJwks(parsed)) throw new ConfigError(file, 'keys', 'dev IdP key file must be a JWKS with private keys (delete it to generate a new key)');
    return parsed;
  }
  const jwks: PrivateJwks = { keys: [await generate()] };
  if (file) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(jwks, null, 2) + '\n', { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, file);
  }
  return jwks;
}

/** the meta key holding the dev IdP's private JWKS on a shared store */
export const SHARED_KEYS_META = 'dev_idp.jwks';

/**
 * The signing keys on a store shared by replicas: the first replica to start stores a fresh key,
 * and replicas starting together agree on one (setMetaIfAbsent), so each verifies what any issued.
 */
export async function loadOrCreateSharedKeys(store: Pick<Store, 'getMeta' | 'setMetaIfAbsent'>): Promise<PrivateJwks> {
  const have = await store.getMeta(SHARED_KEYS_META);
  const text = have ?? await store.setMetaIfAbsent(SHARED_KEYS_META, JSON.stringify({ keys: [await generate()] }));
  const parsed: unknown = JSON.parse(text);
  if (!isPrivateJwks(parsed)) throw new Error(`the store's ${SHARED_KEYS_META} is not a JWKS with private keys (delete that meta row to generate a new key)`);
  return parsed;
}

const PUBLIC_MEMBERS = ['kty', 'kid', 'alg', 'use', 'n', 'e', 'crv', 'x', 'y'] as const;

export function toPublicJwks(jwks: PrivateJwks): PublicJwks {
  return {
    keys: jwks.keys.map((k) => {
      const pub: JWK = {};
      for (const m of PUBLIC_MEMBERS) if (k[m] !== undefined) (pub as Record<string, unknown>)[m] = k[m];
      return pub;
    }),
  };
}
