/**
 * The embedded development identity provider (`auth.issuer: dev`): a real OpenID provider
 * (oidc-provider 9) mounted under /oidc of the gateway's own HTTP server, so `hoopctl login`
 * runs the same RFC 8628 device flow against it as against Okta or Keycloak.
 *
 * What it does, and the dev-only shortcuts it takes:
 * - Users and client-credentials clients come from `dev_idp` in gateway.yaml; passwords are
 *   plain text there, which is why this IdP is for development and demos only.
 * - Device flow: enter code → confirm (or deny) → username/password → done. The login form is
 *   shown on every device login, even with a live browser session, so one browser can sign in
 *   as different users. Consent is granted automatically (there are only first-party clients),
 *   see `loadExistingGrant`.
 * - Access tokens are RS256 JWTs for the gateway's audience, carrying `groups_claim`. For users
 *   `sub` is the username; for client credentials it is the client_id.
 * - The CLI client always gets a refresh token, rotated on every use.
 * - Keys persist in `keysFile`, state (device codes, sessions, grants, refresh tokens) in
 *   `stateFile`; without them a restart invalidates every token and login.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash, hkdfSync, timingSafeEqual } from 'node:crypto';
import { dirname, join } from 'node:path';
import Provider, { interactionPolicy, errors as oidcErrors, type KoaContextWithOIDC } from 'oidc-provider';
import type { GatewayConfig } from '../config/load.ts';
import { ConfigError } from '../../errors.ts';
import { createLogger, type Logger } from '../log.ts';
import { loadOrCreateSigningKeys, loadOrCreateSharedKeys, toPublicJwks, SIGNING_ALG, type PublicJwks } from './keys.ts';
import { DevIdpStore, SharedIdpStore } from './store.ts';
import type { Store } from '../store/store.ts';
import * as views from './views.ts';

/** Path prefix the gateway routes to `DevIdp.handle`. */
export const DEV_IDP_PREFIX = '/oidc';
/** The one scope of the gateway resource server; tokens work without requesting it. */
export const GATEWAY_SCOPE = 'gateway';
const OIDC_SCOPES = 'openid offline_access profile email';

export interface DevIdp {
  /** `${public_url}/oidc` */
  issuer: string;
  /** Public signing keys: lets the gateway verify tokens in-process (createTokenVerifier's `jwks`). */
  jwks: PublicJwks;
  /** Handles a request whose URL path starts with /oidc. The gateway must not have read the body. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  close(): Promise<void>;
}

export interface DevIdpOptions {
  /** JWKS file with the private signing key (created 0600 if missing). */
  keysFile?: string;
  /** JSON file for sessions, grants, device codes and refresh tokens; default: dev-idp-state.json beside keysFile. */
  stateFile?: string;
  /**
   * A store shared by replicas (PostgreSQL): keys (meta) and state (idp_entries) live there
   * instead of files, so every replica is the same identity provider. Takes precedence over the files.
   */
  shared?: Pick<Store, 'getMeta' | 'setMetaIfAbsent' | 'idp'>;
  logger?: Logger;
}

type User = NonNullable<GatewayConfig['dev_idp']>['users'][number];
type DevClient = NonNullable<GatewayConfig['dev_idp']>['clients'][number];

function secs(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

function sameSecret(a: string, b: string): boolean {
  // Hash first so the comparison takes the same time whatever the lengths.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

async function readForm(req: IncomingMessage, limit = 16 * 1024): Promise<URLSearchParams> {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > limit) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY' });
  res.end(html);
}

export async function createDevIdp(cfg: GatewayConfig, opts: DevIdpOptions = {}): Promise<DevIdp> {
  const dev = cfg.dev_idp;
  if (!dev) throw new ConfigError(cfg.file, 'dev_idp', 'is required when auth.issuer is "dev"');
  const log = opts.logger ?? createLogger({ component: 'dev-idp' });
  const issuer = `${cfg.public_url}${DEV_IDP_PREFIX}`;
  const issuerPath = new URL(issuer).pathname;
  const groupsClaim = cfg.auth.groups_claim;
  const cliClientId = cfg.auth.client_id;

  const users = new Map<string, User>(dev.users.map((u) => [u.username, u]));
  const devClients = new Map<string, DevClient>();
  dev.clients.forEach((c, i) => {
    if (c.client_id === cliClientId || devClients.has(c.client_id))
      throw new ConfigError(cfg.file, `dev_idp.clients[${i}].client_id`, `duplicate client "${c.client_id}" (auth.client_id is "${cliClientId}")`);
    devClients.set(c.client_id, c);
  });

  const sharedState = opts.shared?.idp;
  const privateJwks = opts.shared && sharedState ? await loadOrCreateSharedKeys(opts.shared) : await loadOrCreateSigningKeys(opts.keysFile);
  const stateFile = opts.stateFile ?? (opts.keysFile ? join(dirname(opts.keysFile), 'dev-idp-state.json') : undefined);
  const store = sharedState ? new SharedIdpStore(sharedState) : new DevIdpStore(stateFile);
  // Cookie signing key derived from the signing key, so browser sessions survive restarts with it.
  const cookieKey = Buffer.from(hkdfSync('sha256', String(privateJwks.keys[0].d), 'hoop-dev-idp', 'cookies', 32)).toString('base64url');

  // Resource indicators the IdP accepts: the audience when it is a URL, and public_url.
  // Either way the token's `aud` is cfg.audience, what the gateway checks.
  const resources = new Set<string>([cfg.public_url]);
  if (URL.canParse(cfg.audience)) resources.add(cfg.audience);
  const defaultResourceId = URL.canParse(cfg.audience) ? cfg.audience : cfg.public_url;
  const accessTtl = secs(dev.access_token_ttl);
  const refreshTtl = secs(dev.refresh_token_ttl);

  const policy = interactionPolicy.base();
  policy.get('login')?.checks.add(new interactionPolicy.Check(
    'device_login_every_time', 'the dev IdP asks for credentials on every device login', 'login_required',
    (ctx: KoaContextWithOIDC) => ctx.oidc.route === 'code_verification' ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT,
  ));

  const provider = new Provider(issuer, {
    adapter: store.adapterFor,
    jwks: privateJwks,
    clients: [
      {
        client_id: cliClientId,
        client_name: 'hoopctl',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      ...dev.clients.map((c) => ({
        client_id: c.client_id,
        client_secret: c.client_secret,
        // client_secret_post is accepted too: oidc-provider treats the two as one method.
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      })),
    ],
    cookies: {
      keys: [cookieKey],
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    claims: { openid: ['sub', groupsClaim], profile: ['name', 'preferred_username'], email: ['email', 'email_verified'] },
    // Put groups in ID tokens too, not only at userinfo.
    conformIdTokenClaims: false,
    clientBasedCORS: () => false,
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      userinfo: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx: KoaContextWithOIDC, client: { clientId: string }, token: { clientId: string }) => token.clientId === client.clientId,
      },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        // oidc-provider denies a device login that requested no scope at all ("no scope was
        // granted"). deviceInfo is the one hook that runs at device authorization after the
        // parameters are checked and before they are stored, so a scope-less request gets the
        // CLI's usual scopes here instead of a baffling denial after the user signed in.
        deviceInfo: (ctx: KoaContextWithOIDC) => {
          if (!ctx.oidc.params.scope) ctx.oidc.params.scope = OIDC_SCOPES;
          return { ip: ctx.ip, ua: ctx.get('user-agent') };
        },
        userCodeInputSource: async (ctx: KoaContextWithOIDC, form: string, _out: unknown, err?: Error & { userCode?: string }) => {
          ctx.type = 'html';
          if (err?.name === 'AbortedError') {
            // With a cause the IdP itself refused (not the user pressing Deny); say why.
            const cause = (err.cause as { error_description?: string } | undefined)?.error_description;
            ctx.body = views.deniedPage(cause);
            return;
          }
          const message = !err ? undefined
            : err.name === 'NoCodeError' ? 'Enter the code your terminal shows.'
            : err.name === 'NotFoundError' ? 'That code is not valid. Check it and try again.'
            : err.name === 'ExpiredError' ? 'That code has expired. Run `hoopctl login` again.'
            : err.name === 'AlreadyUsedError' ? 'That code was already used. Run `hoopctl login` again.'
            : 'The sign-in could not be completed. Run `hoopctl login` again.';
          ctx.body = views.enterCodePage(form, message);
        },
        userCodeConfirmSource: async (ctx: KoaContextWithOIDC, form: string, client: { clientId: string; clientName?: string }, _deviceInfo: unknown, userCode: string) => {
          ctx.type = 'html';
          ctx.body = views.confirmPage(form, client.clientName ?? client.clientId, userCode);
        },
        successSource: async (ctx: KoaContextWithOIDC) => {
          ctx.type = 'html';
          ctx.body = views.successPage();
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx: KoaContextWithOIDC, _client: unknown, oneOf?: string[]) => oneOf ?? defaultResourceId,
        // Refresh and device-code exchanges keep the resource granted earlier, so the CLI
        // never has to send `resource` to get a JWT for the gateway.
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: KoaContextWithOIDC, indicator: string) => {
          if (!resources.has(indicator)) throw new oidcErrors.InvalidTarget(`unknown resource; this IdP issues tokens for ${[...resources].join(' or ')}`);
          return { scope: GATEWAY_SCOPE, audience: cfg.audience, accessTokenTTL: accessTtl, accessTokenFormat: 'jwt', jwt: { sign: { alg: SIGNING_ALG } } };
        },
      },
    },
    interactions: {
      policy,
      url: async (_ctx: KoaContextWithOIDC, interaction: { uid: string }) => `${issuerPath}/interaction/${interaction.uid}`,
    },
    findAccount: async (_ctx: KoaContextWithOIDC, sub: string) => {
      const u = users.get(sub);
      if (!u) return undefined;
      return {
        accountId: u.username,
        claims: async () => ({
          sub: u.username,
          [groupsClaim]: u.groups,
          preferred_username: u.username,
          name: u.username,
          ...(u.email ? { email: u.email, email_verified: true } : {}),
        }),
      };
    },
    extraTokenClaims: async (_ctx: KoaContextWithOIDC, token: { kind: string; accountId?: string; clientId?: string }) => {
      if (token.accountId) {
        const u = users.get(token.accountId);
        return u ? { [groupsClaim]: u.groups, preferred_username: u.username } : undefined;
      }
      const c = token.clientId ? devClients.get(token.clientId) : undefined;
      return c ? { [groupsClaim]: c.groups } : undefined;
    },
    issueRefreshToken: async (_ctx: KoaContextWithOIDC, client: { clientId: string; grantTypeAllowed(t: string): boolean }, source: { scopes: Set<string> }) =>
      client.grantTypeAllowed('refresh_token') && (client.clientId === cliClientId || source.scopes.has('offline_access')),
    // Tokens outlive the browser session used to approve the device.
    expiresWithSession: async () => false,
    // Auto-consent: every client here is first-party, so the signed-in user is granted the
    // OIDC scopes and the gateway scope without a consent screen.
    loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
      const accountId: string | undefined = ctx.oidc.session?.accountId;
      const clientId: string | undefined = ctx.oidc.client?.clientId;
      if (!accountId || !clientId) return undefined;
      const grantId: string | undefined = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
      if (grantId) {
        const existing = await provider.Grant.find(grantId);
        if (existing && existing.accountId === accountId) return existing;
      }
      const grant = new provider.Grant({ accountId, clientId });
      grant.addOIDCScope(OIDC_SCOPES);
      for (const r of resources) grant.addResourceScope(r, GATEWAY_SCOPE);
      await grant.save();
      return grant;
    },
    renderError: async (ctx: KoaContextWithOIDC, out: { error?: string; error_description?: string }) => {
      ctx.type = 'html';
      ctx.body = views.errorPage('Sign-in failed', out.error_description ?? out.error ?? 'unknown error');
    },
    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      IdToken: accessTtl,
      DeviceCode: 10 * 60,
      Interaction: 10 * 60,
      Grant: refreshTtl,
      Session: refreshTtl,
      RefreshToken: refreshTtl,
    },
  });
  // TLS terminated in front of the gateway (https public_url, no tls: in the config): trust
  // X-Forwarded-Proto so the endpoints in the discovery document say https.
  provider.proxy = cfg.public_url.startsWith('https:') && !cfg.tls;
  // RFC 8628 lets the server pick the polling interval; 1 s (instead of the default 5 s) makes
  // `hoopctl login` finish the moment the browser step is done. The dev IdP does not throttle.
  provider.use(async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
    await next();
    if (ctx.oidc?.route === 'device_authorization' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') ctx.body.interval = 1;
  });
  provider.on('server_error', (_ctx: unknown, err: Error) => log.error({ err }, 'dev IdP internal error'));
  provider.on('error', (err: Error) => log.error({ err }, 'dev IdP request error'));
  const callback = provider.callback();

  async function interaction(req: IncomingMessage, res: ServerResponse, uid: string): Promise<void> {
    let details;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      return sendHtml(res, 400, views.errorPage('Sign-in expired', 'This sign-in page has expired or was opened in another browser. Run `hoopctl login` again.'));
    }
    if (details.uid !== uid) return sendHtml(res, 400, views.errorPage('Sign-in expired', 'This sign-in page does not belong to the current sign-in. Run `hoopctl login` again.'));
    const clientId = String(details.params.client_id ?? '');
    const action = `${issuerPath}/interaction/${encodeURIComponent(uid)}`;

    if (details.prompt.name !== 'login') {
      // loadExistingGrant answers consent, so this is not reached; should it be, grant and move on.
      const accountId = details.session?.accountId;
      if (!accountId) return sendHtml(res, 400, views.errorPage('Sign-in failed', `unexpected prompt ${details.prompt.name}`));
      const grant = new provider.Grant({ accountId, clientId });
      grant.addOIDCScope(OIDC_SCOPES);
      for (const r of resources) grant.addResourceScope(r, GATEWAY_SCOPE);
      return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
    }
    if (req.method === 'GET') return sendHtml(res, 200, views.loginPage(action, { clientId }));
    if (req.method !== 'POST') return sendHtml(res, 405, views.errorPage('Method not allowed', 'use the form'));

    const form = await readForm(req);
    if (form.get('action') === 'cancel') {
      log.info({ clientId }, 'dev IdP sign-in cancelled');
      return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user cancelled the sign-in' }, { mergeWithLastSubmission: false });
    }
    const username = form.get('username') ?? '';
    const user = users.get(username);
    // Compare against a dummy when the user is unknown so both failures take the same time.
    const ok = sameSecret(form.get('password') ?? '', user?.password ?? '\0no-such-user') && user !== undefined;
    if (!ok) {
      log.info({ username, clientId }, 'dev IdP sign-in failed');
      return sendHtml(res, 401, views.loginPage(action, { clientId, username, error: 'Wrong username or password.' }));
    }
    log.info({ username, clientId }, 'dev IdP sign-in');
    return provider.interactionFinished(req, res, { login: { accountId: user.username } }, { mergeWithLastSubmission: false });
  }

  const interactionRoute = /^\/interaction\/([^/?]+)\/?(?:\?.*)?$/;

  return {
    issuer,
    jwks: toPublicJwks(privateJwks),
    handle(req, res) {
      const url = req.url ?? '/';
      const next = url[DEV_IDP_PREFIX.length];
      if (!url.startsWith(DEV_IDP_PREFIX) || (next !== undefined && next !== '/' && next !== '?')) {
        sendHtml(res, 404, views.errorPage('Not found', 'no such page'));
        return;
      }
      const rest = url.slice(DEV_IDP_PREFIX.length) || '/';
      const m = interactionRoute.exec(rest);
      if (m) {
        interaction(req, res, decodeURIComponent(m[1])).catch((err: unknown) => {
          log.error({ err }, 'dev IdP interaction failed');
          if (!res.headersSent) sendHtml(res, 500, views.errorPage('Sign-in failed', 'internal error; see the gateway log'));
          else res.destroy();
        });
        return;
      }
      // The express-style mount contract oidc-provider reads: `url` relative to the mount
      // point, `originalUrl` as the browser sees it (it derives its own URLs from the difference).
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = `${issuerPath}${rest === '/' ? '' : rest}`;
      req.url = rest;
      callback(req, res).catch((err: unknown) => {
        log.error({ err }, 'dev IdP request failed');
        if (!res.headersSent) sendHtml(res, 500, views.errorPage('Error', 'internal error; see the gateway log'));
      });
    },
    async close() {
      // Nothing to release: the store writes synchronously and the provider owns no sockets.
    },
  };
}
