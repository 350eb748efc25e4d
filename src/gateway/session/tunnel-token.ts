/**
 * Tunnel tokens: short-lived, gateway-signed (HS256 with a key only the gateway holds) and bound
 * to one lease, one user and one connection. The CLI trades its IdP token for one per lease and
 * presents it on every WebSocket upgrade, so the user's IdP token never rides the data path and
 * an upgrade costs one HMAC, not a JWKS lookup.
 */
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { randomBytes } from 'node:crypto';
import { AccessDenied, AuthError } from '../../errors.ts';
import type { Store } from '../store/store.ts';

export interface TunnelClaims { leaseId: string; user: string; connection: string; exp: number }

const AUDIENCE = 'hoop-tunnel';

export class TunnelTokens {
  readonly #key: Uint8Array;
  readonly #issuer: string;
  constructor(key: Uint8Array, issuer: string) {
    this.#key = key;
    this.#issuer = issuer;
  }

  static async open(store: Store, issuer: string): Promise<TunnelTokens> {
    let hex = await store.getMeta('tunnel_token_key');
    if (!hex) {
      hex = randomBytes(32).toString('hex');
      await store.setMeta('tunnel_token_key', hex);
    }
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
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.#key, { algorithms: ['HS256'], issuer: this.#issuer, audience: AUDIENCE, typ: 'hoop-tunnel+jwt' }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new AuthError('tunnel_token_expired', 'tunnel token expired; the CLI fetches a new one — retry the connection');
      throw new AuthError('tunnel_token_invalid', 'tunnel token is not valid (forged, malformed or from another gateway)');
    }
    const claims = { leaseId: String(payload.lid), user: String(payload.sub), connection: String(payload.conn), exp: Number(payload.exp) * 1000 };
    if (claims.connection !== connection)
      throw new AccessDenied(`tunnel token is for connection "${claims.connection}", not "${connection}"`, { code: 'tunnel_token_wrong_connection' });
    return claims;
  }
}
