/**
 * Access tokens refused before they expire: `hoopctl logout` sends its token to POST /api/logout,
 * and from then on the gateway refuses it (an access token is a JWT: the issuer cannot take it
 * back, and without this a copied token stayed good for the rest of its hour).
 *
 * The list lives in the store (`revoked_tokens`: sha256 of the token, its expiry), so every
 * replica on a shared store refuses it; an entry is dropped once its token would have expired
 * anyway. The verifier's check is a Map lookup on a hash computed once per token (the verified
 * token cache keeps it): this class keeps the unexpired entries in memory, and on a shared store
 * polls for new ones every POLL_MS (one indexed query), so a logout on one replica reaches the
 * others within about a second.
 */
import { hash } from 'node:crypto';
import type { Store } from '../store/store.ts';
import type { Logger } from '../log.ts';

const POLL_MS = 1000;
/** each poll looks this far back, for clocks that differ between replicas */
const SKEW_MS = 30_000;

export const tokenKey = (token: string): string => hash('sha256', token, 'hex');

export class RevocationList {
  readonly #store: Store;
  readonly #log: Logger;
  /** key → expiry (ms) */
  readonly #keys = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #polling = false;

  constructor(store: Store, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  async start(shared: boolean): Promise<void> {
    await this.#load(0);
    if (!shared) return;
    this.#timer = setInterval(() => {
      if (this.#polling) return;
      this.#polling = true;
      void this.#load(Date.now() - POLL_MS - SKEW_MS)
        .catch((err) => this.#log.warn({ err }, 'reloading revoked tokens failed; retrying'))
        .finally(() => { this.#polling = false; });
    }, POLL_MS);
    this.#timer.unref();
  }

  async #load(since: number): Promise<void> {
    for (const t of await this.#store.listRevokedTokens(since, Date.now())) this.#keys.set(t.key, t.exp);
  }

  has(key: string): boolean {
    const exp = this.#keys.get(key);
    if (exp === undefined) return false;
    if (exp <= Date.now()) { this.#keys.delete(key); return false; }
    return true;
  }

  /** refuses `token` from now on, until `exp` (ms) */
  async revoke(token: string, exp: number): Promise<void> {
    const key = tokenKey(token);
    await this.#store.revokeToken({ key, exp, at: Date.now() });
    this.#keys.set(key, exp);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
