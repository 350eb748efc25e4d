/** `hoopctl whoami`: the gateway's view of the caller (verifies the token on the way). */
import { authedClient } from '../../client/auth.ts';
import { out, printJson, line } from '../output.ts';

export default async function whoami(opts: { gateway?: string; json?: boolean }): Promise<number> {
  const gw = await authedClient(opts.gateway);
  const me = await gw.request<{ sub: string; groups: string[]; admin: boolean; expires_at: string | null; gateway: string; issuer: string }>('GET', '/api/whoami');
  if (out.json) printJson(me);
  else {
    line(`user:     ${me.sub}${me.admin ? ' (admin)' : ''}`);
    line(`groups:   ${me.groups.join(', ') || '-'}`);
    line(`gateway:  ${me.gateway}`);
    line(`issuer:   ${me.issuer}`);
    line(`expires:  ${me.expires_at ?? '-'}`);
  }
  return 0;
}
