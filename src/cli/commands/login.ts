/** `hoopctl login`: device flow (RFC 8628) or client credentials; tokens to the keychain. */
import type * as OidcClient from 'openid-client';
import { AuthError, ExitCode } from '../../errors.ts';
import { GatewayClient } from '../../client/gateway-client.ts';
import { oidcConfig, clientCredentialsLogin, tokensFrom, describeOidcError } from '../../client/auth.ts';
import { saveTokens } from '../../client/token-store.ts';
import { resolveGateway, settings } from '../../client/settings.ts';
import { out, printJson, line, info } from '../output.ts';

interface Opts { gateway?: string; browser: boolean; clientCredentials?: boolean; json?: boolean }

export default async function login(opts: Opts): Promise<number> {
  const gw = new GatewayClient(resolveGateway(opts.gateway));
  const hc = await gw.discover();
  let tokens;
  if (opts.clientCredentials) {
    tokens = await clientCredentialsLogin(gw, hc);
  } else {
    const c = await import('openid-client');
    const config = await oidcConfig(hc);
    let da: OidcClient.DeviceAuthorizationResponse;
    try {
      da = await c.initiateDeviceAuthorization(config, { scope: 'openid offline_access', resource: hc.audience });
    } catch (err) {
      throw new AuthError('login_failed', `device authorization failed: ${describeOidcError(err)}`, { cause: err });
    }
    const url = da.verification_uri_complete ?? da.verification_uri;
    const view = out.tty && !out.json && process.stdin.isTTY ? await (await import('../views/device-login.ts')).showDeviceLogin(da) : undefined;
    if (!view) {
      // plain lines on stderr keep stdout clean for --json
      info(`To log in, open ${da.verification_uri} and enter the code ${da.user_code}`);
      if (da.verification_uri_complete) info(`(or open ${url})`);
      info(`Waiting for approval (expires in ${Math.round(da.expires_in / 60)} min)...`);
    }
    if (opts.browser && out.tty && process.env.DISPLAY) void openBrowser(url);
    try {
      const t = await c.pollDeviceAuthorizationGrant(config, da, { resource: hc.audience });
      tokens = tokensFrom(t, 'device');
    } catch (err) {
      view?.done(false);
      const code = (err as { error?: string }).error;
      const why = code === 'access_denied' ? 'login was denied in the browser'
        : code === 'expired_token' ? 'the code expired before it was confirmed; run `hoopctl login` again'
        : describeOidcError(err);
      throw new AuthError(code ?? 'login_failed', `login failed: ${why}`, { exit: ExitCode.auth, cause: err, hint: 'run `hoopctl login` to try again' });
    }
    view?.done(true);
  }
  gw.token = tokens.access_token;
  const me = await gw.request<{ sub: string; groups: string[]; expires_at: string | null }>('GET', '/api/whoami');
  const where = await saveTokens(gw.url, tokens);
  settings().set('gateway', gw.url);
  settings().set(`profiles.${gw.url.replaceAll('.', '\\.')}`, { issuer: hc.issuer, client_id: tokens.client_id ?? hc.client_id, audience: hc.audience, kind: tokens.kind, user: me.sub });
  if (out.json) printJson({ gateway: gw.url, sub: me.sub, groups: me.groups, expires_at: me.expires_at, stored_in: where, kind: tokens.kind });
  else line(`Logged in to ${gw.url} as ${me.sub} (groups: ${me.groups.join(', ') || 'none'})`);
  return 0;
}

async function openBrowser(url: string): Promise<void> {
  const { spawn } = await import('node:child_process');
  try {
    spawn(process.platform === 'darwin' ? 'open' : 'xdg-open', [url], { stdio: 'ignore', detached: true }).on('error', () => {}).unref();
  } catch { /* no browser: the URL is printed */ }
}
