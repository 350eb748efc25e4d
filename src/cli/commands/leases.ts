/** `hoopctl leases [--all]` */
import { authedClient } from '../../client/auth.ts';
import { out, printJson, line, table } from '../output.ts';

export default async function leases(opts: { gateway?: string; json?: boolean; all?: boolean }): Promise<number> {
  const gw = await authedClient(opts.gateway);
  const { leases } = await gw.request<{ leases: Array<Record<string, unknown>> }>('GET', `/api/leases${opts.all ? '?all=1' : ''}`);
  if (out.json) printJson(leases);
  else if (!leases.length) line('No leases. Take one with `hoopctl connect <conn>`.');
  else table(leases, ['id', 'connection', 'user', 'status', 'expires_at', 'remaining', 'reason']);
  return 0;
}
