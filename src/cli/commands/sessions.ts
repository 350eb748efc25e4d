/** `hoopctl sessions`: recorded sessions (yours; admins may filter by --user). */
import { authedClient } from '../../client/auth.ts';
import { out, printJson, line, table } from '../output.ts';

interface Opts { conn?: string; user?: string; since?: string; gateway?: string; json?: boolean }

export interface SessionView {
  id: string; leaseId: string; user: string; connection: string; type: string; startedAt: number; endedAt: number | null;
  bytesIn: number; bytesOut: number; statements: number; blocked: number; masked: number; closeReason: string | null;
}

function bytes(n: number): string {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KB` : `${(n / (1 << 20)).toFixed(1)} MB`;
}

export default async function sessions(opts: Opts): Promise<number> {
  const gw = await authedClient(opts.gateway);
  const q = new URLSearchParams();
  if (opts.conn) q.set('conn', opts.conn);
  if (opts.user) q.set('user', opts.user);
  if (opts.since) q.set('since', opts.since);
  const { sessions: rows } = await gw.request<{ sessions: SessionView[] }>('GET', `/api/sessions${q.size ? `?${q}` : ''}`);
  if (out.json) return printJson(rows), 0;
  if (!rows.length) return line('No sessions.'), 0;
  table(rows.map((s) => ({
    id: s.id, connection: s.connection, user: s.user, started: new Date(s.startedAt).toISOString().replace('T', ' ').slice(0, 19),
    duration: s.endedAt ? `${((s.endedAt - s.startedAt) / 1000).toFixed(1)}s` : 'open',
    in: bytes(s.bytesIn), out: bytes(s.bytesOut), stmts: s.statements, blocked: s.blocked, masked: s.masked, end: s.closeReason,
  })), ['id', 'connection', 'user', 'started', 'duration', 'in', 'out', 'stmts', 'blocked', 'masked', 'end']);
  return 0;
}
