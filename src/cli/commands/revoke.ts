/** `hoopctl revoke <lease-id>`: owner or admin ends a lease; the gateway closes its tunnels. */
import { authedClient } from '../../client/auth.ts';
import { out, printJson, line } from '../output.ts';

export default async function revoke(id: string, opts: { gateway?: string; json?: boolean }): Promise<number> {
  const gw = await authedClient(opts.gateway);
  const lease = await gw.request<Record<string, unknown>>('POST', `/api/leases/${encodeURIComponent(id)}/revoke`);
  if (out.json) printJson(lease);
  else line(`Revoked lease ${lease.id} on ${lease.connection}; its connections are closed.`);
  return 0;
}
