/**
 * Storage for the dev IdP's stateful artifacts (device codes, sessions, grants, refresh
 * tokens, interactions). oidc-provider's bundled memory adapter prints a "development-only"
 * warning and cannot persist, so this small one replaces it: a Map, optionally mirrored to a
 * JSON file (0600) after every change so `hoopctl login` sessions and refresh tokens survive
 * a gateway restart. Secondary lookups scan the map: a dev IdP holds a few hundred entries.
 * Access tokens are JWTs and never stored here.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { IdpEntry, Store } from '../store/store.ts';

interface Entry {
  model: string;
  payload: AdapterPayload;
  /** epoch ms; absent = no expiry */
  exp?: number;
}

/** Models whose rows die with their grant (same set as oidc-provider's memory adapter). */
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

/** Hard cap so a misbehaving script cannot grow the dev IdP's memory without bound. */
const MAX_ENTRIES = 50_000;

export class DevIdpStore {
  readonly #entries = new Map<string, Entry>();
  readonly #file?: string;

  constructor(file?: string) {
    this.#file = file;
    if (file && existsSync(file)) {
      try {
        const rows = JSON.parse(readFileSync(file, 'utf8')) as Array<[string, Entry]>;
        const now = Date.now();
        for (const [key, entry] of rows) if (entry.exp === undefined || entry.exp > now) this.#entries.set(key, entry);
      } catch {
        // A corrupt state file only costs logins and refresh tokens; start empty rather than refuse to boot.
      }
    }
  }

  #live(key: string): Entry | undefined {
    const e = this.#entries.get(key);
    if (e && e.exp !== undefined && e.exp <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }

  #findBy(model: string, pick: (p: AdapterPayload) => boolean): AdapterPayload | undefined {
    for (const [key, e] of this.#entries) if (e.model === model && pick(e.payload) && this.#live(key)) return e.payload;
    return undefined;
  }

  #persist(): void {
    const now = Date.now();
    for (const [key, e] of this.#entries) if (e.exp !== undefined && e.exp <= now) this.#entries.delete(key);
    while (this.#entries.size > MAX_ENTRIES) this.#entries.delete(this.#entries.keys().next().value as string);
    if (!this.#file) return;
    mkdirSync(dirname(this.#file), { recursive: true, mode: 0o700 });
    const tmp = `${this.#file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify([...this.#entries]), { mode: 0o600 });
    renameSync(tmp, this.#file);
  }

  /** The adapter factory oidc-provider's `adapter` option takes. */
  adapterFor = (model: string): Adapter => {
    const key = (id: string) => `${model}:${id}`;
    return {
      upsert: async (id, payload, expiresIn) => {
        const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
        this.#entries.delete(key(id)); // re-insert so Map order stays oldest-first for the cap
        this.#entries.set(key(id), { model, payload, exp });
        this.#persist();
      },
      find: async (id) => this.#live(key(id))?.payload,
      findByUserCode: async (userCode) => this.#findBy(model, (p) => p.userCode === userCode),
      findByUid: async (uid) => this.#findBy(model, (p) => p.uid === uid),
      consume: async (id) => {
        const e = this.#live(key(id));
        if (e) {
          e.payload.consumed = Math.floor(Date.now() / 1000);
          this.#persist();
        }
      },
      destroy: async (id) => {
        if (this.#entries.delete(key(id))) this.#persist();
      },
      revokeByGrantId: async (grantId) => {
        let changed = false;
        for (const [k, e] of this.#entries) {
          if (GRANTABLE.has(e.model) && e.payload.grantId === grantId) {
            this.#entries.delete(k);
            changed = true;
          }
        }
        if (changed) this.#persist();
      },
    };
  };
}

/**
 * The same adapter over a store shared by replicas (PostgreSQL `idp_entries`): a device code
 * approved through one replica is redeemed at another, a refresh token issued by one is rotated
 * by the next. No cache: every read goes to the store, so replicas never disagree (the dev IdP
 * serves a few logins, not a hot path).
 */
export class SharedIdpStore {
  readonly #s: NonNullable<Store['idp']>;

  constructor(s: NonNullable<Store['idp']>) {
    this.#s = s;
  }

  adapterFor = (model: string): Adapter => {
    const key = (id: string) => `${model}:${id}`;
    const s = this.#s;
    const read = (e: IdpEntry | undefined) => (e ? (JSON.parse(e.payload) as AdapterPayload) : undefined);
    return {
      upsert: async (id, payload, expiresIn) => {
        const p = payload as AdapterPayload & { grantId?: string; uid?: string; userCode?: string };
        await s.put({
          key: key(id), model, payload: JSON.stringify(payload), exp: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : null,
          grantId: typeof p.grantId === 'string' ? p.grantId : null, uid: typeof p.uid === 'string' ? p.uid : null, userCode: typeof p.userCode === 'string' ? p.userCode : null,
        });
      },
      find: async (id) => read(await s.get(key(id))),
      findByUserCode: async (userCode) => read(await s.findBy(model, 'userCode', userCode)),
      findByUid: async (uid) => read(await s.findBy(model, 'uid', uid)),
      consume: async (id) => {
        const e = await s.get(key(id));
        if (!e) return;
        const p = JSON.parse(e.payload) as AdapterPayload;
        p.consumed = Math.floor(Date.now() / 1000);
        await s.put({ ...e, payload: JSON.stringify(p) });
      },
      destroy: async (id) => s.delete(key(id)),
      revokeByGrantId: async (grantId) => s.deleteGrant(grantId, [...GRANTABLE]),
    };
  };
}
