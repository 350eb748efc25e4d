/**
 * How many tunnelled connections may be open at once, counted where they open (one per session):
 * per lease (`lease.max_connections` of its connection) and per user (`max_connections_per_user`,
 * across every lease of that user). Why: every tunnelled connection dials the target, so one
 * client opening hundreds of streams (300 OPEN frames in one message) exhausted the target's own
 * `max_connections` for everyone. Streams per WebSocket are bounded in mux.ts (MAX_STREAMS).
 *
 * Counted per gateway process: with N replicas a user may hold up to N times the limit (a
 * `hoopctl connect` keeps one WebSocket, so its connections land on one replica).
 */
import type { Lease } from '../store/store.ts';
import type { ConnectionConfig } from '../config/schema.ts';

export class ConnectionLimits {
  readonly #perUser: number;
  readonly #byLease = new Map<string, number>();
  readonly #byUser = new Map<string, number>();

  constructor(perUser: number) {
    this.#perUser = perUser;
  }

  /** Counts one more connection and returns its release, or the reason it is over a limit. */
  acquire(lease: Lease, conn: ConnectionConfig): { release: () => void } | { refused: string } {
    const l = this.#byLease.get(lease.id) ?? 0;
    const u = this.#byUser.get(lease.user) ?? 0;
    if (l >= conn.lease.max_connections) {
      return { refused: `too many connections on lease ${lease.id}: ${l} open, the limit is ${conn.lease.max_connections} (lease.max_connections of connection "${conn.name}")` };
    }
    if (u >= this.#perUser) return { refused: `too many connections for ${lease.user}: ${u} open, the limit is ${this.#perUser} (max_connections_per_user)` };
    this.#byLease.set(lease.id, l + 1);
    this.#byUser.set(lease.user, u + 1);
    let done = false;
    return {
      release: () => {
        if (done) return;
        done = true;
        dec(this.#byLease, lease.id);
        dec(this.#byUser, lease.user);
      },
    };
  }
}

function dec(m: Map<string, number>, k: string): void {
  const n = (m.get(k) ?? 1) - 1;
  if (n > 0) m.set(k, n);
  else m.delete(k);
}
