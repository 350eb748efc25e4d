/**
 * What the SQLite and PostgreSQL stores share: row → object mapping (both return numbers for
 * INTEGER/BIGINT columns only after `Number()`: node-postgres gives BIGINT as a string) and the
 * format of a recording batch row.
 */
import type { Lease, RecordingEntry, Review, ReviewDecision, SessionRow } from './store.ts';

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
  ...(r.replica != null ? { replica: r.replica as string } : {}),
});

export const reviewFromRow = (r: Row): Review => ({
  id: r.id as string, kind: r.kind as Review['kind'], connection: r.connection as string, requester: r.requester as string,
  leaseId: (r.lease_id as string) ?? null, sessionId: (r.session_id as string) ?? null, rule: (r.rule as string) ?? null,
  statement: (r.statement as string) ?? null, statementHash: (r.statement_hash as string) ?? null, reason: (r.reason as string) ?? null,
  groups: JSON.parse(r.groups as string), minApprovals: Number(r.min_approvals), status: r.status as Review['status'],
  createdAt: Number(r.created_at), expiresAt: Number(r.expires_at), decidedAt: r.decided_at == null ? null : Number(r.decided_at),
  decidedBy: (r.decided_by as string) ?? null, decisionReason: (r.decision_reason as string) ?? null, detached: Boolean(Number(r.detached)),
  consumedAt: r.consumed_at == null ? null : Number(r.consumed_at), decisions: JSON.parse(r.decisions as string),
});

/** the columns of `reviews`, in insert order, and a review's values for them */
export const REVIEW_COLS = ['id', 'kind', 'connection', 'requester', 'lease_id', 'session_id', 'rule', 'statement', 'statement_hash', 'reason', 'groups',
  'min_approvals', 'status', 'created_at', 'expires_at', 'decided_at', 'decided_by', 'decision_reason', 'detached', 'consumed_at', 'decisions'];
export const reviewValues = (v: Review): Array<string | number | null> => [v.id, v.kind, v.connection, v.requester, v.leaseId, v.sessionId, v.rule, v.statement,
  v.statementHash, v.reason, JSON.stringify(v.groups), v.minApprovals, v.status, v.createdAt, v.expiresAt, v.decidedAt, v.decidedBy, v.decisionReason,
  v.detached ? 1 : 0, v.consumedAt, JSON.stringify(v.decisions)];

/**
 * The decision rule both stores apply inside their transaction (the review row locked): what the
 * review becomes with `d`, or why `d` is refused. Pure, so both stores decide alike.
 */
export function applyDecision(r: Review, d: ReviewDecision): { result: 'recorded' | 'decided' | 'duplicate' | 'not_pending' | 'expired'; next?: Review } {
  if (r.status !== 'pending') return { result: 'not_pending' };
  if (r.expiresAt <= d.at) return { result: 'expired', next: { ...r, status: 'expired', decidedAt: d.at } };
  if (r.decisions.some((x) => x.reviewer === d.reviewer)) return { result: 'duplicate' };
  const decisions = [...r.decisions, d];
  if (d.decision === 'reject') return { result: 'decided', next: { ...r, decisions, status: 'rejected', decidedAt: d.at, decidedBy: d.reviewer, decisionReason: d.reason } };
  const approvals = decisions.filter((x) => x.decision === 'approve').length;
  if (approvals >= r.minApprovals) return { result: 'decided', next: { ...r, decisions, status: 'approved', decidedAt: d.at, decidedBy: d.reviewer, decisionReason: d.reason } };
  return { result: 'recorded', next: { ...r, decisions } };
}

/** the lease fields `updateLease` may change, and their columns */
export const LEASE_COLS: Record<string, string> = { status: 'status', endedAt: 'ended_at', endedBy: 'ended_by', endReason: 'end_reason', expiresAt: 'expires_at', reason: 'reason' };

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
