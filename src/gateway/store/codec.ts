/**
 * What the SQLite and PostgreSQL stores share: row → object mapping (both return numbers for
 * INTEGER/BIGINT columns only after `Number()`: node-postgres gives BIGINT as a string) and the
 * format of a recording batch row.
 */
import type { Lease, RecordingEntry, SessionRow } from './store.ts';

export type Row = Record<string, unknown>;

export const leaseFromRow = (r: Row): Lease => ({
  id: r.id as string, connection: r.connection as string, user: r.user as string, groups: JSON.parse(r.groups as string),
  status: r.status as Lease['status'], reason: (r.reason as string) ?? null, createdAt: Number(r.created_at),
  durationMs: Number(r.duration_ms), expiresAt: Number(r.expires_at), endedAt: r.ended_at == null ? null : Number(r.ended_at),
  endedBy: (r.ended_by as string) ?? null, endReason: (r.end_reason as string) ?? null,
});

export const sessionFromRow = (r: Row): SessionRow => ({
  id: r.id as string, leaseId: r.lease_id as string, user: r.user as string, connection: r.connection as string, type: r.type as string,
  startedAt: Number(r.started_at), endedAt: r.ended_at == null ? null : Number(r.ended_at), bytesIn: Number(r.bytes_in),
  bytesOut: Number(r.bytes_out), statements: Number(r.statements), blocked: Number(r.blocked), masked: Number(r.masked),
  closeReason: (r.close_reason as string) ?? null,
});

/** the lease fields `updateLease` may change, and their columns */
export const LEASE_COLS: Record<string, string> = { status: 'status', endedAt: 'ended_at', endedBy: 'ended_by', endReason: 'end_reason', expiresAt: 'expires_at' };

/**
 * The SQL condition (both stores; `s` = sessions, `l` = its lease; `cutoff` the placeholder of the
 * cutoff time) under which a session's recording goes under retention: the session was over before
 * the cutoff — it ended, or, its end never written (a gateway crash), its lease had ended or
 * expired — it has rows in one of `tables`, and it is not purged yet. A session cannot outlive
 * its lease, so a running one never matches.
 */
export function purgeable(cutoff: string, tables: string[]): string {
  return `COALESCE(s.ended_at, l.ended_at, l.expires_at, s.started_at) < ${cutoff}
        AND NOT EXISTS (SELECT 1 FROM recording_purges p WHERE p.session_id = s.id)
        AND (${tables.map((t) => `EXISTS (SELECT 1 FROM ${t} r WHERE r.session_id = s.id)`).join(' OR ')})`;
}

/** one row of recording_batches */
export interface BatchRow { sessionId: string; firstSeq: number; lastSeq: number; hash: string; entries: string }

/**
 * Splits entries into batch rows: consecutive entries of one session up to and including a hashed
 * one. `entries` holds one line per entry, "seq TAB at TAB event-JSON" (JSON.stringify never
 * writes a raw newline or tab).
 */
export function encodeBatches(entries: RecordingEntry[]): BatchRow[] {
  const out: BatchRow[] = [];
  let first = 0;
  let text = '';
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.event.includes('\n')) throw new Error(`recording entry ${e.seq} holds a raw newline`);
    text += `${e.seq}\t${e.at}\t${e.event}\n`;
    const next = entries[i + 1];
    if (e.hash !== '' || next === undefined || next.sessionId !== e.sessionId) {
      out.push({ sessionId: e.sessionId, firstSeq: entries[first].seq, lastSeq: e.seq, hash: e.hash, entries: text });
      first = i + 1;
      text = '';
    }
  }
  return out;
}

/** appends the entries of one batch row to `out`; the hash belongs to the batch's last entry */
export function decodeBatch(sessionId: string, hash: string, entries: string, out: RecordingEntry[]): void {
  const lines = entries.split('\n');
  lines.pop(); // after the last newline
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const t1 = line.indexOf('\t');
    const t2 = line.indexOf('\t', t1 + 1);
    out.push({ sessionId, seq: Number(line.slice(0, t1)), at: Number(line.slice(t1 + 1, t2)), event: line.slice(t2 + 1), hash: i === lines.length - 1 ? hash : '' });
  }
}
