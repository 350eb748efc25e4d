/**
 * Tunnel tokens: short-lived, gateway-signed (HS256 with a key only the gateway holds) and bound
 * to one lease, one user and one connection. The CLI trades its IdP token for one per lease and
 * presents it on every WebSocket upgrade, so the user's IdP token never rides the data path and
 * an upgrade costs one HMAC, not a JWKS lookup — and mostly not even that: a verified token is
 * cached until its `exp` (the CLI presents the same token on every connection for minutes), so a
 * repeat upgrade costs one Map lookup. The cache only remembers that the signature and claims
 * were good; the lease itself is checked on every upgrade (src/gateway/transport/tunnel-upgrade.ts),
 * so a revoked or expired lease is refused at once whatever the cache holds.
 */
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { randomBytes } from 'node:crypto';
import { AccessDenied, AuthError } from '../../errors.ts';
import type { Store } from '../store/store.ts';

export interface TunnelClaims { leaseId: string; user: string; connection: string; exp: number }

const AUDIENCE = 'hoop-tunnel';
/** verified tokens kept (least recently used dropped first); one per lease in use is plenty */
const CACHE_MAX = 1024;

export class TunnelTokens {
  readonly #key: Uint8Array;
  readonly #issuer: string;
  readonly #verified = new Map<string, TunnelClaims>();
  constructor(key: Uint8Array, issuer: string) {
    this.#key = key;
    this.#issuer = issuer;
  }

  static async open(store: Store, issuer: string): Promise<TunnelTokens> {
    // replicas starting together on one store must end up with the same key: first writer wins
    const hex = (await store.getMeta('tunnel_token_key')) ?? await store.setMetaIfAbsent('tunnel_token_key', randomBytes(32).toString('hex'));
    return new TunnelTokens(Buffer.from(hex, 'hex'), issuer);
  }

  async sign(c: Omit<TunnelClaims, 'exp'>, expiresAtMs: number): Promise<string> {
    return new SignJWT({ lid: c.leaseId, conn: c.connection })
      .setProtectedHeader({ alg: 'HS256', typ: 'hoop-tunnel+jwt' })
      .setSubject(c.user).setIssuer(this.#issuer).setAudience(AUDIENCE)
      .setIssuedAt().setExpirationTime(Math.floor(expiresAtMs / 1000))
      .sign(this.#key);
  }

  /** Verifies a tunnel token for `connection`; throws AuthError (401) or AccessDenied (403). */
  async verify(token: string, connection: string): Promise<TunnelClaims> {
    const cached = this.#verified.get(token);
    if (cached) {
      this.#verified.delete(token);
      if (cached.exp > Date.now()) {
        this.#verified.set(token, cached);
        return checkConnection(cached, connection);
      }
      throw new AuthError('tunnel_token_expired', EXPIRED);
    }
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.#key, { algorithms: ['HS256'], issuer: this.#issuer, audience: AUDIENCE, typ: 'hoop-tunnel+jwt' }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new AuthError('tunnel_token_expired', EXPIRED);
      throw new AuthError('tunnel_token_invalid', 'tunnel token is not valid (forged, malformed or from another gateway)');
    }
    const claims: TunnelClaims = { leaseId: String(payload.lid), user: String(payload.sub), connection: String(payload.conn), exp: Number(payload.exp) * 1000 };
    if (this.#verified.size >= CACHE_MAX) this.#verified.delete(this.#verified.keys().next().value!);
    this.#verified.set(token, claims);
    return checkConnection(claims, connection);
  }
}

const EXPIRED = 'tunnel token expired; the CLI fetches a new one — retry the connection';

function checkConnection(claims: TunnelClaims, connection: string): TunnelClaims {
  if (claims.connection !== connection)
    throw new AccessDenied(`tunnel token is for connection "${claims.connection}", not "${connection}"`, { code: 'tunnel_token_wrong_connection' });
  return claims;
}
