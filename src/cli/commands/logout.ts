/**
 * `hoopctl logout`: the gateway refuses the access token from now on (POST /api/logout: its
 * revocation list, shared by replicas), the refresh token is revoked at the issuer (best effort),
 * and the stored tokens are deleted.
 */
import { GatewayClient } from '../../client/gateway-client.ts';
import { oidcConfig } from '../../client/auth.ts';
import { loadTokens, deleteTokens } from '../../client/token-store.ts';
import { resolveGateway } from '../../client/settings.ts';
import { out, printJson, line, info } from '../output.ts';

export default async function logout(opts: { gateway?: string; json?: boolean }): Promise<number> {
  const url = resolveGateway(opts.gateway);
  const t = await loadTokens(url);
  let revoked = false;
  let refused = false;
  if (t) {
    if (!t.expires_at || t.expires_at > Date.now()) {
      try {
        await new GatewayClient(url, t.access_token).request('POST', '/api/logout');
        refused = true;
      } catch (err) {
        info(`warning: the gateway could not revoke the access token (${(err as Error).message}); it stays valid there until it expires`);
      }
    }
    try {
      const c = await import('openid-client');
      const hc = await new GatewayClient(url).discover();
      if (t.kind === 'device') {
        const config = await oidcConfig(hc);
        if (t.refresh_token) await c.tokenRevocation(config, t.refresh_token, { token_type_hint: 'refresh_token' });
        await c.tokenRevocation(config, t.access_token, { token_type_hint: 'access_token' }).catch(() => {});
        revoked = true;
      }
    } catch (err) {
      info(`warning: could not revoke the token at the issuer (${(err as Error).message}); deleting it locally`);
    }
    await deleteTokens(url);
  }
  if (out.json) printJson({ gateway: url, logged_out: Boolean(t), revoked, gateway_refuses_token: refused });
  else line(t ? `Logged out of ${url}` : `Not logged in to ${url}`);
  return 0;
}
