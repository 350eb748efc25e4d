/**
 * Crash recovery: a gateway killed mid-session never writes that session's end, so it stayed
 * "open" forever. Each gateway process is a replica with an id and a heartbeat in the store; the
 * sessions it runs carry its id. Sessions left open by a process that is gone are closed as
 * `interrupted`:
 *
 * - end time = their last recorded event (or their start when nothing was recorded): what the
 *   record can vouch for, not the moment someone noticed;
 * - a closing recording entry (`recording.closed` with `interrupted: true`), chained and sealed
 *   like any other, so `hoopctl sessions verify` accepts the recording as ended by a crash
 *   rather than cut off; a recording whose chain does not verify gets none (verify says why);
 * - an audit event `session.interrupted`.
 *
 * Who is gone: with SQLite one process owns the file, so at start every open session of another
 * process is. On a shared PostgreSQL store the others may be alive: a replica is gone once its
 * heartbeat (every HEARTBEAT_MS) is older than DEAD_AFTER_MS; every replica sweeps at start and
 * at each heartbeat, and the conditional update (`ended_at IS NULL`) lets exactly one close each
 * session. Rows without a replica (written before this existed) are closed once their lease is
 * over: a lease's end closes its sessions on every live replica within a second.
 *
 * A replica paused longer than DEAD_AFTER_MS (a frozen VM, a store partition) is taken for gone;
 * its sessions are closed in the record although they may still run, and its later writes to
 * those recordings fail (the closing entry holds their sequence number) and are logged. Set
 * HOOP_REPLICA_DEAD_MS well above any pause you expect.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Store, SessionRow } from '../store/store.ts';
import type { Audit } from '../audit/audit.ts';
import type { Logger } from '../log.ts';
import { CLOSED, chainHash, verifyChain } from '../recording/recorder.ts';

export const HEARTBEAT_MS = Number(process.env.HOOP_REPLICA_HEARTBEAT_MS ?? 5000);
export const DEAD_AFTER_MS = Number(process.env.HOOP_REPLICA_DEAD_MS ?? 30_000);
/** the close reason of a session ended by recovery */
export const INTERRUPTED = 'interrupted';

export interface Recovery { id: string; stop(): void }

export async function startRecovery(deps: { store: Store; audit: Audit; log: Logger; shared: boolean }): Promise<Recovery> {
  const { store, audit, log, shared } = deps;
  const me = { id: `gw_${randomUUID().replaceAll('-', '').slice(0, 16)}`, startedAt: Date.now(), host: hostname(), pid: process.pid };
  await store.heartbeat(me, Date.now());
  let sweeping = false;
  const sweep = async () => {
    if (sweeping) return;
    sweeping = true;
    try {
      const now = Date.now();
      const orphans = await store.listOrphanSessions(me.id, shared ? now - DEAD_AFTER_MS : Number.MAX_SAFE_INTEGER, now);
      for (const s of orphans) await closeOrphan(s).catch((err) => log.error({ err, session: s.id }, 'closing an interrupted session failed'));
    } finally {
      sweeping = false;
    }
  };

  async function closeOrphan(s: SessionRow): Promise<void> {
    const entries = await store.readRecording(s.id);
    const last = entries.at(-1);
    const endedAt = Math.max(s.startedAt, last?.at ?? s.startedAt);
    if (!await store.endOrphanSession(s.id, endedAt, INTERRUPTED)) return; // another replica closed it
    let lastType: unknown;
    try { lastType = last && JSON.parse(last.event).type; } catch { /* not JSON: verify reports it */ }
    if (last && lastType !== CLOSED) {
      const chain = verifyChain(entries);
      if (chain.ok && last.hash) {
        const seq = last.seq + 1;
        const event = JSON.stringify({
          type: CLOSED, entries: seq, reason: INTERRUPTED, interrupted: true, detected_at: Date.now(), replica: s.replica ?? null,
          note: 'the gateway stopped without ending this session (killed or crashed); events of its last moments may be missing',
        });
        await store.appendRecording([{ sessionId: s.id, seq, at: endedAt, event, hash: chainHash(last.hash, seq, endedAt, event) }]);
      } else {
        log.warn({ session: s.id, problem: chain.ok ? 'unsealed end' : chain.problem }, 'interrupted session\'s recording does not verify; no closing entry added');
      }
    }
    audit.emit('session.interrupted', {
      actor: s.user, connection: s.connection, leaseId: s.leaseId, sessionId: s.id,
      data: { reason: INTERRUPTED, ended_at: new Date(endedAt).toISOString(), replica: s.replica ?? null, recorded_entries: entries.length },
    });
    log.warn({ session: s.id, replica: s.replica ?? null }, 'closed a session left open by a gateway that stopped');
  }

  await sweep();
  let timer: NodeJS.Timeout | undefined;
  if (shared) {
    timer = setInterval(() => {
      void store.heartbeat(me, Date.now()).then(sweep).catch((err) => log.warn({ err }, 'replica heartbeat failed; retrying'));
    }, HEARTBEAT_MS);
    timer.unref();
  }
  return { id: me.id, stop: () => clearInterval(timer) };
}
