/**
 * Process-wide map from the BackendKeyData the gateway gave a client to the real backend's key.
 * A CancelRequest arrives on a new tunnelled connection (its own engine instance), so the map
 * must outlive one engine. Keys are random per connection; the target's pid/secret never
 * reach the client.
 */
import { randomInt } from 'node:crypto';

export interface CancelTarget {
  /** connection name the key belongs to: a cancel through another connection's lease is ignored */
  connection: string;
  pid: number;
  secret: number;
  /** withdraws a statement the session holds for review (the cancel then has nothing to cancel there) */
  withdraw?(): void;
}

const byKey = new Map<string, CancelTarget>();
const keyOf = (pid: number, secret: number) => `${pid}:${secret}`;

/** Registers a backend and returns the gateway's own key for it. */
export function registerBackend(target: CancelTarget): { pid: number; secret: number; release(): void } {
  for (;;) {
    const pid = randomInt(1, 2 ** 31 - 1);
    const secret = randomInt(-(2 ** 31), 2 ** 31 - 1);
    const k = keyOf(pid, secret);
    if (byKey.has(k)) continue;
    byKey.set(k, target);
    return { pid, secret, release: () => { if (byKey.get(k) === target) byKey.delete(k); } };
  }
}

export function lookupBackend(pid: number, secret: number): CancelTarget | undefined {
  return byKey.get(keyOf(pid, secret));
}

/** for tests and metrics */
export function registeredBackends(): number {
  return byKey.size;
}
