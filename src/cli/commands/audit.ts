/** `hoopctl audit`: the gateway's audit log (admins). */
import { authedClient } from '../../client/auth.ts';
import { out, printJson, line, table } from '../output.ts';

export default async function audit(opts: { since?: string; gateway?: string; json?: boolean }): Promise<number> {
  const gw = await authedClient(opts.gateway);
  const { events } = await gw.request<{ events: Array<{ at: number; type: string; actor: string | null; connection: string | null; leaseId: string | null; sessionId: string | null; data: Record<string, unknown> }> }>(
    'GET', `/api/audit?since=${encodeURIComponent(opts.since ?? '24h')}`);
  if (out.json) return printJson(events), 0;
  if (!events.length) return line('No audit events in that window.'), 0;
  table(events.map((e) => ({
    at: new Date(e.at).toISOString().replace('T', ' ').slice(0, 19), event: e.type, actor: e.actor, connection: e.connection,
    lease: e.leaseId, session: e.sessionId, details: Object.entries(e.data).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' '),
  })), ['at', 'event', 'actor', 'connection', 'lease', 'session', 'details']);
  return 0;
}
