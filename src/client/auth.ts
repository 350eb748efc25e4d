/**
 * Getting a usable access token for a gateway: HOOP_TOKEN wins; then HOOP_CLIENT_ID/SECRET, exchanged
 * in memory and never stored; else the stored login, refreshed
 * with its refresh token shortly before it expires (users are not logged out every hour); a
 * client-credentials login is renewed from HOOP_CLIENT_ID/HOOP_CLIENT_SECRET when they are set.
 */
import type * as OidcClient from 'openid-client';
import { AuthError, UsageError } from '../errors.ts';
import { GatewayClient, isLoopback, type HoopConfiguration } from './gateway-client.ts';
// token-store and settings load `conf` (~70 ms): imported only when a stored login is used, so a
// CI step with HOOP_GATEWAY + HOOP_TOKEN (or machine credentials) does not pay for it (issue 11)
import type { StoredTokens } from './token-store.ts';

/** refresh when less than this is left */
const REFRESH_MARGIN_MS = 60_000;

let oidc: typeof OidcClient | undefined;
async function openid(): Promise<typeof OidcClient> {
  oidc ??= await import('openid-client');
  return oidc;
}


/** openid-client configuration for the gateway's issuer. Plain http is allowed for loopback only
 *  (or with the loudly named HOOP_ALLOW_INSECURE_ISSUER=1). */
export async function oidcConfig(hc: HoopConfiguration, clientId = hc.client_id, clientSecret?: string): Promise<OidcClient.Configuration> {
  const c = await openid();
  const issuer = new URL(hc.issuer);
  const insecure = issuer.protocol === 'http:';
  if (insecure && !isLoopback(issuer) && process.env.HOOP_ALLOW_INSECURE_ISSUER !== '1')
    throw new UsageError(`issuer ${hc.issuer} uses plain http; refusing to send credentials (set HOOP_ALLOW_INSECURE_ISSUER=1 to allow)`);
  try {
    return await c.discovery(issuer, clientId, clientSecret, clientSecret ? c.ClientSecretPost(clientSecret) : c.None(), insecure ? { execute: [c.allowInsecureRequests] } : undefined);
  } catch (err) {
    throw new AuthError('issuer_unreachable', `cannot reach the identity provider ${hc.issuer}: ${(err as Error).message}`, { exit: 7, cause: err, hint: 'check the gateway\'s auth.issuer' });
  }
}

export function tokensFrom(t: OidcClient.TokenEndpointResponse & OidcClient.TokenEndpointResponseHelpers, kind: StoredTokens['kind'], prev?: StoredTokens): StoredTokens {
  const expiresIn = t.expiresIn();
  return {
    access_token: t.access_token, refresh_token: t.refresh_token ?? prev?.refresh_token, id_token: t.id_token ?? prev?.id_token,
    expires_at: expiresIn !== undefined ? Date.now() + expiresIn * 1000 : undefined, kind, client_id: prev?.client_id,
  };
}

export async function clientCredentialsLogin(gw: GatewayClient, hc: HoopConfiguration): Promise<StoredTokens> {
  const id = process.env.HOOP_CLIENT_ID;
  const secret = process.env.HOOP_CLIENT_SECRET;
  if (!id || !secret) throw new UsageError('--client-credentials needs HOOP_CLIENT_ID and HOOP_CLIENT_SECRET in the environment');
  const c = await openid();
  const config = await oidcConfig(hc, id, secret);
  try {
    const t = await c.clientCredentialsGrant(config, { resource: hc.audience });
    return { ...tokensFrom(t, 'client_credentials'), client_id: id };
  } catch (err) {
    throw new AuthError('login_failed', `client credentials login failed: ${describeOidcError(err)}`, { cause: err, hint: 'check HOOP_CLIENT_ID / HOOP_CLIENT_SECRET' });
  }
}

export function describeOidcError(err: unknown): string {
  const e = err as { error?: string; error_description?: string; message?: string };
  return e.error ? `${e.error}${e.error_description ? `: ${e.error_description}` : ''}` : (e.message ?? String(err));
}

/** An authenticated API client for the gateway (refreshing the stored token when needed). */
export async function authedClient(gatewayFlag?: string): Promise<GatewayClient> {
  const given = gatewayFlag ?? process.env.HOOP_GATEWAY;
  const url = given ? given.replace(/\/+$/, '') : (await import('./settings.ts')).resolveGateway();
  const gw = new GatewayClient(url);
  if (process.env.HOOP_TOKEN) {
    gw.token = process.env.HOOP_TOKEN;
    return gw;
  }
  if (process.env.HOOP_CLIENT_ID && process.env.HOOP_CLIENT_SECRET) return inMemoryMachineClient(gw);
  const { loadTokens } = await import('./token-store.ts');
  let stored = await loadTokens(url);
  if (!stored) throw new AuthError('not_logged_in', `not logged in to ${url}`, { hint: `run \`hoopctl login --gateway ${url}\`` });
  // long-running commands (connect) keep asking; refresh happens only near expiry
  const plain = new GatewayClient(url);
  let pending: Promise<StoredTokens> | undefined;
  gw.tokenSource = async () => {
    pending ??= fresh(plain, stored!).finally(() => { pending = undefined; });
    stored = await pending;
    return stored.access_token;
  };
  return gw;
}

/**
 * Machine identity from HOOP_CLIENT_ID / HOOP_CLIENT_SECRET (CI jobs, agents; issue 11): the
 * client-credentials grant runs in memory and the token is never written to disk; it is exchanged
 * again when less than a minute is left. Set in the environment, they take precedence over a
 * stored login (HOOP_TOKEN over both), as the environment is how a job says who it is.
 */
function inMemoryMachineClient(gw: GatewayClient): GatewayClient {
  const plain = new GatewayClient(gw.url);
  let current: StoredTokens | undefined;
  let pending: Promise<StoredTokens> | undefined;
  gw.tokenSource = async () => {
    if (current && (current.expires_at === undefined || current.expires_at - Date.now() > REFRESH_MARGIN_MS)) return current.access_token;
    pending ??= plain.discover().then((hc) => clientCredentialsLogin(plain, hc)).finally(() => { pending = undefined; });
    current = await pending;
    return current.access_token;
  };
  return gw;
}

async function fresh(gw: GatewayClient, t: StoredTokens): Promise<StoredTokens> {
  if (t.expires_at === undefined || t.expires_at - Date.now() > REFRESH_MARGIN_MS) return t;
  const { saveTokens } = await import('./token-store.ts');
  const hc = await gw.discover();
  if (t.kind === 'client_credentials') {
    if (process.env.HOOP_CLIENT_ID && process.env.HOOP_CLIENT_SECRET) {
      const next = await clientCredentialsLogin(gw, hc);
      await saveTokens(gw.url, next);
      return next;
    }
  } else if (t.refresh_token) {
    const c = await openid();
    try {
      const r = await c.refreshTokenGrant(await oidcConfig(hc), t.refresh_token, { resource: hc.audience });
      const next = tokensFrom(r, t.kind, t);
      await saveTokens(gw.url, next);
      return next;
    } catch (err) {
      if (t.expires_at > Date.now()) return t;
      throw new AuthError('token_expired', `session expired and refresh failed (${describeOidcError(err)})`, { hint: 'run `hoopctl login`' });
    }
  }
  if (t.expires_at > Date.now()) return t;
  throw new AuthError('token_expired', `access token for ${gw.url} expired`, { hint: 'run `hoopctl login`' });
}
