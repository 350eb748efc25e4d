/**
 * Leases: create (or reuse), list, revoke, and the monitor that ends every tunnelled connection
 * of a lease within a second of its expiry or revocation (the timer fires at `expiresAt`; revoke
 * acts at once). The in-memory table of active leases is the hot-path check for upgrades; the
 * store is the truth across restarts.
 *
 * Several replicas on one PostgreSQL store: each replica tracks every active lease, so expiry
 * needs nothing more (every replica's timer fires; a conditional update lets one of them record
 * it). A lease created, activated or revoked on another replica reaches this one through
 * `store.watchLeases` (LISTEN/NOTIFY, milliseconds), and a poll every POLL_MS reloads the open
 * leases in case a notification was lost.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { AccessDenied, HoopError, NotFound, UsageError } from '../../errors.ts';
import { parseDuration, formatDuration } from '../config/duration.ts';
import type { GatewayConfig } from '../config/load.ts';
import type { ConnectionConfig } from '../config/schema.ts';
import type { Lease, Store } from '../store/store.ts';
import type { Audit } from '../audit/audit.ts';
import type { Logger } from '../log.ts';
import { CloseCode } from '../../shared/ws-duplex.ts';
import type { ReviewService } from './reviews.ts';
import { checkReason } from './reviews.ts';

export interface Caller { sub: string; groups: string[]; admin: boolean }

/** something holding a tunnelled connection open; closed when its lease ends */
export interface LeaseHolder { close(code: number, reason: string): void }

const MAX_TIMER = 2 ** 31 - 1;
/** how often a replica on a shared store reloads open leases (the safety net under NOTIFY) */
const POLL_MS = 2000;

export function mayUse(conn: ConnectionConfig, caller: Caller): boolean {
  return conn.access.groups.some((g) => caller.groups.includes(g));
}

export class LeaseService {
  readonly #cfg: GatewayConfig;
  readonly #store: Store;
  readonly #audit: Audit;
  readonly #log: Logger;
  readonly #active = new Map<string, { lease: Lease; timer?: NodeJS.Timeout; holders: Set<LeaseHolder> }>();
  #unwatch?: () => void;
  #poll?: NodeJS.Timeout;
  /** changes from other replicas are applied one at a time, in the order they were heard */
  #syncing: Promise<void> = Promise.resolve();
  #queued = 0;
  /** set by the gateway once the review service exists (the two refer to each other) */
  reviews?: ReviewService;
  /** 'change' (lease id) whenever this replica learns a lease changed: API waiters listen */
  readonly events = new EventEmitter<{ change: [string] }>().setMaxListeners(0);

  constructor(cfg: GatewayConfig, store: Store, audit: Audit, log: Logger) {
    this.#cfg = cfg;
    this.#store = store;
    this.#audit = audit;
    this.#log = log;
  }

  /** Loads active leases after a restart; leases that expired while the gateway was down are marked so. */
  async start(): Promise<void> {
    if (this.#store.watchLeases) {
      // watching before loading: a change made in between is heard rather than missed
      this.#unwatch = this.#store.watchLeases((id) => this.#sync(id));
      // a slow store must not pile up polls behind each other
      this.#poll = setInterval(() => { if (this.#queued === 0) this.#sync(undefined); }, POLL_MS);
      this.#poll.unref();
    }
    const now = Date.now();
    for (const l of await this.#store.listLeases({ activeOnly: true })) {
      if (l.status === 'active' && l.expiresAt <= now) await this.#end(l, 'expired', null, 'lease expired');
      else if (l.status === 'active') this.#track(l);
    }
  }

  connection(name: string, caller: Caller): ConnectionConfig {
    const conn = this.#cfg.connections.find((c) => c.name === name);
    if (!conn || !mayUse(conn, caller)) {
      // a connection outside the caller's groups is reported as unknown: names are not disclosed
      const allowed = this.#cfg.connections.filter((c) => mayUse(c, caller)).map((c) => c.name);
      throw new NotFound(`unknown connection "${name}"`, {
        hint: allowed.length ? `connections you may use: ${allowed.join(', ')}` : 'you may not use any connection; ask an admin to add your group',
        details: { connections: allowed },
      });
    }
    return conn;
  }

  async request(caller: Caller, req: { connection: string; duration?: string; reason?: string; new?: boolean }): Promise<Lease & { reused: boolean; reviewId?: string; reasonUpdated?: boolean; clamped?: { requested: string; max: string } }> {
    const conn = this.connection(req.connection, caller);
    const reason = checkReason(req.reason, 'reason');
    if (conn.review?.require_reason && !reason?.trim()) {
      throw new UsageError(`connection "${conn.name}" requires a reason for access`, { hint: 'add --reason "<ticket or why>"; reviewers see it' });
    }
    let durationMs = conn.lease.default;
    let clamped: { requested: string; max: string } | undefined;
    if (req.duration !== undefined) {
      const d = parseDuration(String(req.duration));
      if (d === undefined || d <= 0) throw new UsageError(`invalid duration ${JSON.stringify(req.duration)}: use e.g. 30m, 2h`);
      durationMs = Math.min(d, conn.lease.max);
      if (d > conn.lease.max) clamped = { requested: String(req.duration), max: formatDuration(conn.lease.max) };
    }
    const now = Date.now();
    if (!req.new) {
      const existing = await this.#store.findActiveLease(caller.sub, conn.name, now);
      if (existing) {
        // made on another replica and not heard of yet: usable here at once
        if (!this.#active.has(existing.id)) this.#track(existing);
        // a new reason for the reused lease is kept (and audited), not dropped
        if (reason && reason !== existing.reason) {
          await this.#store.updateLease(existing.id, { reason });
          this.#audit.emit('lease.reason_updated', { actor: caller.sub, connection: conn.name, leaseId: existing.id, data: { reason, previous: existing.reason } });
          return { ...existing, reason, reused: true, reasonUpdated: true, clamped };
        }
        return { ...existing, reused: true, clamped };
      }
    }
    const review = conn.review && conn.review.lease ? conn.review : undefined;
    if (review && !this.reviews) throw new HoopError('internal', 'lease reviews are not available', { status: 500 });
    const lease: Lease = {
      id: `ls_${randomUUID().replaceAll('-', '').slice(0, 20)}`, connection: conn.name, user: caller.sub, groups: caller.groups,
      status: review ? 'pending' : 'active', reason, createdAt: now, durationMs,
      // pending: when its review times out; the duration starts at approval (activate)
      expiresAt: review ? now + review.timeout : now + durationMs, endedAt: null, endedBy: null, endReason: null,
    };
    await this.#store.createLease(lease);
    this.#audit.emit('lease.created', { actor: caller.sub, connection: conn.name, leaseId: lease.id, data: { status: lease.status, duration: formatDuration(durationMs), reason: lease.reason } });
    if (lease.status === 'active') this.#track(lease);
    if (review) {
      try {
        const r = await this.reviews!.requestLease(lease, conn);
        return { ...lease, reused: false, reviewId: r.id, clamped };
      } catch (err) {
        // no review, no way to ever activate it: end the lease rather than leave it pending
        await this.#store.updateLease(lease.id, { status: 'expired', endedAt: Date.now(), endReason: 'its review could not be created' }, { ifStatus: 'pending' }).catch(() => {});
        throw err;
      }
    }
    return { ...lease, reused: false, clamped };
  }

  async list(caller: Caller, all: boolean): Promise<Lease[]> {
    if (all && !caller.admin) throw new AccessDenied(`--all lists every user's leases and needs an admin group (${this.#cfg.auth.admins.join(', ') || 'none configured'})`);
    await this.#expireDue();
    return this.#store.listLeases(all ? {} : { user: caller.sub });
  }

  async get(caller: Caller, id: string): Promise<Lease> {
    const l = await this.#store.getLease(id);
    if (!l || (l.user !== caller.sub && !caller.admin)) throw new NotFound(`no lease "${id}"`, { hint: 'see `hoopctl leases`' });
    if (l.status === 'active' && l.expiresAt <= Date.now()) return this.#end(l, 'expired', null, 'lease expired');
    return l;
  }

  async revoke(caller: Caller, id: string): Promise<Lease> {
    const l = await this.get(caller, id);
    if (l.status !== 'active' && l.status !== 'pending') throw new HoopError('lease_not_active', `lease ${id} is already ${l.status}`, { status: 409, exit: 4 });
    const reason = l.status === 'pending' && l.user === caller.sub ? `request withdrawn by ${caller.sub}` : `lease revoked by ${caller.sub}`;
    const ended = await this.#end(l, 'revoked', caller.sub, reason);
    if (l.status === 'pending') await this.reviews?.cancelLeaseReview(l.id, caller.sub, reason);
    return ended;
  }

  /** A pending lease whose review was rejected or timed out (reviews.ts); once, whichever replica gets there first. */
  async endPending(id: string, status: 'rejected' | 'expired', by: string | null, reason: string): Promise<void> {
    const l = await this.#store.getLease(id);
    if (!l || l.status !== 'pending') return;
    if (!await this.#store.updateLease(id, { status, endedAt: Date.now(), endedBy: by, endReason: reason }, { ifStatus: 'pending' })) return;
    this.#audit.emit(status === 'rejected' ? 'lease.rejected' : 'lease.expired', { actor: by, connection: l.connection, leaseId: id, data: { user: l.user, reason } });
    this.events.emit('change', id);
  }

  /** the hot-path check at each WebSocket upgrade */
  activeLease(id: string): Lease | undefined {
    const e = this.#active.get(id);
    return e && e.lease.expiresAt > Date.now() ? e.lease : undefined;
  }

  /**
   * A lease the store holds but this gateway has not heard of yet (made on another replica a
   * moment ago): tracked from now on when it is active and unexpired.
   */
  adopt(stored: Lease): Lease | undefined {
    this.#apply(stored.id, stored);
    return this.activeLease(stored.id);
  }

  /** Registers an open tunnelled connection; returns the function that unregisters it. */
  hold(leaseId: string, holder: LeaseHolder): () => void {
    const e = this.#active.get(leaseId);
    if (!e) {
      holder.close(CloseCode.leaseExpired, 'lease ended');
      return () => {};
    }
    e.holders.add(holder);
    return () => e.holders.delete(holder);
  }

  /** Marks a pending lease active (the review flow calls this). */
  async activate(id: string): Promise<Lease | undefined> {
    const l = await this.#store.getLease(id);
    if (!l || l.status !== 'pending') return l;
    const expiresAt = Date.now() + l.durationMs;
    // approved twice at once (two replicas): the first activation stands
    if (!await this.#store.updateLease(id, { status: 'active', expiresAt }, { ifStatus: 'pending' })) {
      const current = await this.#store.getLease(id);
      if (current) this.#apply(id, current);
      return current;
    }
    const lease = { ...l, status: 'active' as const, expiresAt };
    this.#track(lease);
    this.#audit.emit('lease.activated', { connection: l.connection, leaseId: id, data: { user: l.user, expires_at: new Date(expiresAt).toISOString() } });
    this.events.emit('change', id);
    return lease;
  }

  #track(lease: Lease): void {
    const e = this.#active.get(lease.id) ?? { lease, holders: new Set<LeaseHolder>() };
    e.lease = lease;
    clearTimeout(e.timer);
    const arm = () => {
      const left = e.lease.expiresAt - Date.now();
      if (left <= 0) void this.#end(e.lease, 'expired', null, 'lease expired').catch((err) => this.#log.error({ err }, 'lease expiry failed'));
      else e.timer = setTimeout(arm, Math.min(left, MAX_TIMER));
      e.timer?.unref();
    };
    this.#active.set(lease.id, e);
    arm();
  }

  async #expireDue(): Promise<void> {
    const now = Date.now();
    for (const { lease } of this.#active.values()) if (lease.expiresAt <= now) await this.#end(lease, 'expired', null, 'lease expired');
  }

  async #end(l: Lease, status: 'expired' | 'revoked', by: string | null, reason: string): Promise<Lease> {
    this.#release(l.id, status, reason);
    const ended = { ...l, status, endedAt: Date.now(), endedBy: by, endReason: reason };
    const changed = await this.#store.updateLease(l.id, { status, endedAt: ended.endedAt, endedBy: by, endReason: reason }, { ifStatus: l.status });
    // ended meanwhile (another replica's timer or revoke): that one recorded and audited it
    if (!changed) return (await this.#store.getLease(l.id)) ?? ended;
    this.#audit.emit(status === 'revoked' ? 'lease.revoked' : 'lease.expired', { actor: by, connection: l.connection, leaseId: l.id, data: { user: l.user } });
    this.events.emit('change', l.id);
    return ended;
  }

  /** forgets a lease here and closes its tunnelled connections; the store is not touched */
  #release(id: string, status: 'expired' | 'revoked', reason: string): void {
    const e = this.#active.get(id);
    this.#active.delete(id);
    if (!e) return;
    clearTimeout(e.timer);
    const code = status === 'revoked' ? CloseCode.leaseRevoked : CloseCode.leaseExpired;
    for (const h of e.holders) h.close(code, reason);
  }

  /** Applies what the shared store holds for one lease (`id`), or for every open one (undefined). */
  #sync(id: string | undefined): void {
    this.#queued++;
    this.#syncing = this.#syncing.then(async () => {
      if (id !== undefined) return this.#apply(id, await this.#store.getLease(id));
      const open = await this.#store.listLeases({ activeOnly: true });
      const seen = new Set<string>();
      for (const l of open) { seen.add(l.id); this.#apply(l.id, l); }
      for (const known of [...this.#active.keys()]) if (!seen.has(known)) this.#apply(known, await this.#store.getLease(known));
    }).catch((err) => this.#log.warn({ err }, 'reloading leases from the store failed; retrying at the next poll'))
      .finally(() => { this.#queued--; });
  }

  #apply(id: string, l: Lease | undefined): void {
    this.events.emit('change', id);
    if (l?.status === 'active') {
      // an active lease past its expiry is left to the timer, which records the expiry
      const e = this.#active.get(id);
      if (l.expiresAt > Date.now() && (!e || e.lease.expiresAt !== l.expiresAt)) this.#track(l);
      return;
    }
    if (l?.status === 'pending' || !this.#active.has(id)) return;
    this.#release(id, l?.status === 'revoked' ? 'revoked' : 'expired', l?.endReason ?? 'lease ended');
  }

  stop(): void {
    this.#unwatch?.();
    this.#unwatch = undefined;
    clearInterval(this.#poll);
    for (const e of this.#active.values()) clearTimeout(e.timer);
  }

  closeAll(code: number, reason: string): void {
    for (const e of this.#active.values()) for (const h of e.holders) h.close(code, reason);
  }
}
