/** `hoopctl connections`: what the caller may use (the gateway filters by access.groups). */
import { authedClient } from '../../client/auth.ts';
import { out, printJson, line, table } from '../output.ts';

export default async function connections(opts: { gateway?: string; json?: boolean }): Promise<number> {
  const gw = await authedClient(opts.gateway);
  const { connections } = await gw.request<{ connections: Array<Record<string, unknown>> }>('GET', '/api/connections');
  if (out.json) printJson(connections);
  else if (!connections.length) line('No connections available to you. Ask an admin to add one of your groups to a connection.');
  else table(connections.map((c) => ({ ...c, review: c.review ? `yes (${(c.review_groups as string[]).join(',')})` : 'no', max_lease: c.lease_max })), ['name', 'type', 'review', 'max_lease']);
  return 0;
}
