/**
 * Bearer token verification for the gateway: access tokens are JWTs from the configured OIDC
 * issuer (or the embedded dev IdP), checked against the issuer's published keys.
 *
 * Rules enforced, in order (each failure is an AuthError with a stable code):
 * - a token is present                                   token_missing
 * - it is a compact JWS with a JSON header and payload    token_malformed
 * - its alg is asymmetric (no `none`, no HS*)             token_alg_not_allowed
 * - `iss` is the configured issuer                        token_wrong_issuer
 * - the signature checks with a key the issuer publishes  token_invalid_signature
 *   (an unknown `kid` refetches the JWKS once per cooldown, which follows key rotation)
 * - `exp` is present and not past, `nbf` not future,
 *   30 s clock tolerance                                  token_expired / token_not_yet_valid
 * - `aud` contains the gateway's audience                 token_wrong_audience
 * - `sub` is present                                      token_malformed
 * - it was not revoked (`hoopctl logout`, revocations.ts)  token_revoked
 * Discovery or JWKS fetch failures are `issuer_unreachable` (503): the token may be fine.
 *
 * The issuer is checked on the unverified payload before the signature only to report the
 * right reason (a token from another IdP fails on its unknown key otherwise); nothing from
 * an unverified token is trusted. Verified tokens are cached by their exact string until
 * they expire, so repeated API calls and tunnel opens cost a Map lookup.
 */
import {
  createLocalJWKSet, createRemoteJWKSet, customFetch, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify,
  type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey,
} from 'jose';
import { AuthError } from '../../errors.ts';
import { tokenKey } from './revocations.ts';

export interface Identity {
  sub: string;
  groups: string[];
  /** epoch seconds */
  exp?: number;
  /** `client_id` (or `azp`) claim: the OAuth client the token was issued to */
  clientId?: string;
  claims: Record<string, unknown>;
  /** sha256 of the token (the revocation list's key), computed once per token */
  key?: string;
}

export interface TokenVerifier {
  verify(token: string): Promise<Identity>;
}

export interface TokenVerifierOptions {
  issuer: string;
  audience: string;
  /** claim holding the groups: an array, or a space/comma separated string; a dotted path (`realm_access.roles`) is followed when no top-level claim has that name */
  groupsClaim: string;
  /** for discovery and JWKS requests (tests, proxies); default global fetch */
  fetch?: typeof fetch;
  /** Verify against these keys instead of discovering the issuer's jwks_uri. The gateway
   * passes the embedded dev IdP's `jwks` here: no HTTP round trip to its own public_url,
   * which may not be reachable from inside (a reverse proxy, a container port mapping). */
  jwks?: JSONWebKeySet | JWTVerifyGetKey;
  /** seconds; default 30 */
  clockTolerance?: number;
  /** verified tokens kept; default 1000 */
  cacheSize?: number;
  /** whether a token (by tokenKey) was revoked: checked on every use, cached or not */
  isRevoked?: (key: string) => boolean;
}

/** Asymmetric JWS algorithms only: a symmetric (HS*) token would need a shared secret the issuer never gives us. */
export const ALLOWED_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

const LOGIN_HINT = 'run `hoopctl login` (CI: `hoopctl login --client-credentials`)';

/** `hint` is what the CLI appends; messages that already say what to do carry none. */
function fail(code: string, message: string, cause?: unknown, hint: string | null = LOGIN_HINT): AuthError {
  return new AuthError(code, message, { cause, hint: hint ?? undefined });
}

function revoked(): AuthError {
  return fail('token_revoked', `access token was revoked (logged out) — ${LOGIN_HINT}`, undefined, null);
}

function unreachable(message: string, cause?: unknown): AuthError {
  return new AuthError('issuer_unreachable', message, { cause, status: 503, hint: 'check auth.issuer and that the identity provider is reachable from the gateway' });
}

export function readGroups(claims: Record<string, unknown>, claim: string): string[] {
  let v: unknown = claims[claim];
  if (v === undefined && claim.includes('.')) {
    v = claim.split('.').reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), claims);
  }
  if (Array.isArray(v)) return v.filter((g): g is string => typeof g === 'string' && g.length > 0);
  if (typeof v === 'string') return v.split(/[\s,]+/).filter(Boolean);
  return [];
}

/** Claims echoed into messages come from an unverified token: quote them and keep them short. */
function show(v: unknown): string {
  const j = JSON.stringify(v ?? null);
  return j.length > 120 ? `${j.slice(0, 117)}...` : j;
}

function isoFromEpoch(s: unknown): string {
  return typeof s === 'number' ? new Date(s * 1000).toISOString() : 'an unknown time';
}

/** Discovery document of `issuer`, fetched once; a failure is not cached. */
function discoverJwksUri(issuer: string, fetchImpl: typeof fetch): () => Promise<URL> {
  let pending: Promise<URL> | undefined;
  const load = async (): Promise<URL> => {
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let res: Response;
    try {
      res = await fetchImpl(url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(5000) });
    } catch (err) {
      throw unreachable(`cannot reach the identity provider at ${url}: ${(err as Error).message}`, err);
    }
    if (!res.ok) throw unreachable(`identity provider discovery at ${url} answered HTTP ${res.status}`);
    let doc: { issuer?: unknown; jwks_uri?: unknown };
    try {
      doc = (await res.json()) as typeof doc;
    } catch (err) {
      throw unreachable(`identity provider discovery at ${url} did not return JSON`, err);
    }
    if (doc.issuer !== issuer) throw unreachable(`discovery document at ${url} names issuer ${JSON.stringify(doc.issuer)}, expected ${JSON.stringify(issuer)} (check auth.issuer)`);
    if (typeof doc.jwks_uri !== 'string' || !URL.canParse(doc.jwks_uri)) throw unreachable(`discovery document at ${url} has no valid jwks_uri`);
    return new URL(doc.jwks_uri);
  };
  return () => {
    pending ??= load().catch((err: unknown) => {
      pending = undefined;
      throw err;
    });
    return pending;
  };
}

export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const { issuer, audience, groupsClaim } = opts;
  const clockTolerance = opts.clockTolerance ?? 30;
  const cacheSize = opts.cacheSize ?? 1000;
  const fetchImpl = opts.fetch ?? globalThis.fetch;
  const cache = new Map<string, Identity>();

  let getKey: JWTVerifyGetKey;
  if (typeof opts.jwks === 'function') getKey = opts.jwks;
  else if (opts.jwks) getKey = createLocalJWKSet(opts.jwks);
  else {
    const jwksUri = discoverJwksUri(issuer, fetchImpl);
    let remote: JWTVerifyGetKey | undefined;
    getKey = async (header, token) => {
      remote ??= createRemoteJWKSet(await jwksUri(), {
        cooldownDuration: 30_000,
        cacheMaxAge: 10 * 60_000,
        ...(opts.fetch ? { [customFetch]: opts.fetch } : {}),
      });
      return remote(header, token);
    };
  }

  function classify(err: unknown, payload: JWTPayload, kid: unknown): AuthError {
    if (err instanceof AuthError) return err;
    if (err instanceof joseErrors.JWTExpired) return fail('token_expired', `access token expired at ${isoFromEpoch(payload.exp)} — ${LOGIN_HINT}`, err, null);
    if (err instanceof joseErrors.JWTClaimValidationFailed) {
      if (err.claim === 'aud') return fail('token_wrong_audience', `access token is for ${show(payload.aud)}, not this gateway (${audience}); check auth.audience and the IdP's audience for this client`, err);
      if (err.claim === 'iss') return fail('token_wrong_issuer', `access token was issued by ${show(payload.iss)}, this gateway trusts ${issuer}`, err);
      if (err.claim === 'nbf') return fail('token_not_yet_valid', `access token is not valid before ${isoFromEpoch(payload.nbf)} (check the clocks)`, err);
      if (err.reason === 'missing') return fail('token_malformed', `access token has no "${err.claim}" claim`, err);
      return fail('token_malformed', `access token claim "${err.claim}" is invalid: ${err.message}`, err);
    }
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) return fail('token_invalid_signature', 'access token signature is invalid (forged or altered token)', err);
    if (err instanceof joseErrors.JWKSNoMatchingKey) return fail('token_invalid_signature', `access token is signed with a key ${issuer} does not publish (kid ${show(kid)})`, err);
    if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported) return fail('token_alg_not_allowed', `access token algorithm is not allowed: ${err.message}`, err);
    if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid) return unreachable(`cannot load the identity provider's signing keys: ${err.message}`, err);
    if (err instanceof joseErrors.JOSEError) return fail('token_malformed', `access token is malformed: ${err.message}`, err);
    // createRemoteJWKSet rethrows fetch failures (connection refused, DNS) as they are.
    return unreachable(`cannot load the identity provider's signing keys: ${(err as Error)?.message ?? String(err)}`, err);
  }
  function remember(t: string, id: Identity): void {
    if (cache.size >= cacheSize) cache.delete(cache.keys().next().value as string);
    cache.set(t, id);
  }

  return {
    async verify(raw: string): Promise<Identity> {
      const t = (raw ?? '').trim();
      if (!t) throw fail('token_missing', `no access token — ${LOGIN_HINT}`, undefined, null);

      const hit = cache.get(t);
      if (hit) {
        if (opts.isRevoked && hit.key && opts.isRevoked(hit.key)) throw revoked();
        if (hit.exp !== undefined && (hit.exp + clockTolerance) * 1000 > Date.now()) {
          cache.delete(t); // refresh recency: Map order is the LRU order
          cache.set(t, hit);
          return hit;
        }
        cache.delete(t);
      }

      let header: ReturnType<typeof decodeProtectedHeader>;
      let payload: JWTPayload;
      try {
        if (t.split('.').length !== 3) throw new Error('not a compact JWS (three base64url parts)');
        header = decodeProtectedHeader(t);
        payload = decodeJwt(t);
      } catch (err) {
        throw fail('token_malformed', `access token is not a valid JWT: ${(err as Error).message}`, err);
      }
      if (typeof header.alg !== 'string' || !ALLOWED_ALGS.includes(header.alg))
        throw fail('token_alg_not_allowed', `access token algorithm ${show(header.alg)} is not allowed (only ${ALLOWED_ALGS.join(', ')})`);
      if (payload.iss !== issuer) throw fail('token_wrong_issuer', `access token was issued by ${show(payload.iss)}, this gateway trusts ${issuer}`);

      let verified: JWTPayload;
      try {
        ({ payload: verified } = await jwtVerify(t, getKey, {
          issuer,
          audience,
          algorithms: ALLOWED_ALGS,
          clockTolerance,
          requiredClaims: ['exp', 'sub'],
        }));
      } catch (err) {
        throw classify(err, payload, header.kid);
      }

      const claims = verified as Record<string, unknown>;
      const clientId = typeof claims.client_id === 'string' ? claims.client_id : typeof claims.azp === 'string' ? claims.azp : undefined;
      const id: Identity = { sub: verified.sub as string, groups: readGroups(claims, groupsClaim), exp: verified.exp, clientId, claims, key: tokenKey(t) };
      if (opts.isRevoked?.(id.key!)) throw revoked();
      remember(t, id);
      return id;
    },
  };
}
