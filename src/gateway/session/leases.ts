/**
 * Leases: create (or reuse), list, revoke, and the monitor that ends every tunnelled connection
 * of a lease within a second of its expiry or revocation (the timer fires at `expiresAt`; revoke
 * acts at once). The in-memory table of active leases is the hot-path check for upgrades; the
 * store is the truth across restarts.
 */
import { randomUUID } from 'node:crypto';
import { AccessDenied, HoopError, NotFound, UsageError } from '../../errors.ts';
import { parseDuration, formatDuration } from '../config/duration.ts';
import type { GatewayConfig } from '../config/load.ts';
import type { ConnectionConfig } from '../config/schema.ts';
import type { Lease, Store } from '../store/store.ts';
import type { Audit } from '../audit/audit.ts';
import type { Logger } from '../log.ts';
import { CloseCode } from '../../shared/ws-duplex.ts';

export interface Caller { sub: string; groups: string[]; admin: boolean }

/** something holding a tunnelled connection open; closed when its lease ends */
export interface LeaseHolder { close(code: number, reason: string): void }

const MAX_TIMER = 2 ** 31 - 1;

export function mayUse(conn: ConnectionConfig, caller: Caller): boolean {
  return conn.access.groups.some((g) => caller.groups.includes(g));
}

export class LeaseService {
  readonly #cfg: GatewayConfig;
  readonly #store: Store;
  readonly #audit: Audit;
  readonly #log: Logger;
  readonly #active = new Map<string, { lease: Lease; timer?: NodeJS.Timeout; holders: Set<LeaseHolder> }>();

  constructor(cfg: GatewayConfig, store: Store, audit: Audit, log: Logger) {
    this.#cfg = cfg;
    this.#store = store;
    this.#audit = audit;
    this.#log = log;
  }

  /** Loads active leases after a restart; leases that expired while the gateway was down are marked so. */
  async start(): Promise<void> {
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

  async request(caller: Caller, req: { connection: string; duration?: string; reason?: string; new?: boolean }): Promise<Lease & { reused: boolean }> {
    const conn = this.connection(req.connection, caller);
    let durationMs = conn.lease.default;
    if (req.duration !== undefined) {
      const d = parseDuration(String(req.duration));
      if (d === undefined || d <= 0) throw new UsageError(`invalid duration ${JSON.stringify(req.duration)}: use e.g. 30m, 2h`);
      durationMs = Math.min(d, conn.lease.max);
    }
    const now = Date.now();
    if (!req.new) {
      const existing = await this.#store.findActiveLease(caller.sub, conn.name, now);
      if (existing) return { ...existing, reused: true };
    }
    const lease: Lease = {
      id: `ls_${randomUUID().replaceAll('-', '').slice(0, 20)}`, connection: conn.name, user: caller.sub, groups: caller.groups,
      status: conn.review ? 'pending' : 'active', reason: req.reason ?? null, createdAt: now, durationMs,
      expiresAt: conn.review ? now + conn.review.timeout : now + durationMs, endedAt: null, endedBy: null, endReason: null,
    };
    await this.#store.createLease(lease);
    this.#audit.emit('lease.created', { actor: caller.sub, connection: conn.name, leaseId: lease.id, data: { status: lease.status, duration: formatDuration(durationMs), reason: lease.reason } });
    if (lease.status === 'active') this.#track(lease);
    return { ...lease, reused: false };
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
    return this.#end(l, 'revoked', caller.sub, `lease revoked by ${caller.sub}`);
  }

  /** the hot-path check at each WebSocket upgrade */
  activeLease(id: string): Lease | undefined {
    const e = this.#active.get(id);
    return e && e.lease.expiresAt > Date.now() ? e.lease : undefined;
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
    await this.#store.updateLease(id, { status: 'active', expiresAt });
    const lease = { ...l, status: 'active' as const, expiresAt };
    this.#track(lease);
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
    const e = this.#active.get(l.id);
    this.#active.delete(l.id);
    if (e) {
      clearTimeout(e.timer);
      const code = status === 'revoked' ? CloseCode.leaseRevoked : CloseCode.leaseExpired;
      for (const h of e.holders) h.close(code, reason);
    }
    const ended = { ...l, status, endedAt: Date.now(), endedBy: by, endReason: reason };
    await this.#store.updateLease(l.id, { status, endedAt: ended.endedAt, endedBy: by, endReason: reason });
    this.#audit.emit(status === 'revoked' ? 'lease.revoked' : 'lease.expired', { actor: by, connection: l.connection, leaseId: l.id, data: { user: l.user } });
    return ended;
  }

  stop(): void {
    for (const e of this.#active.values()) clearTimeout(e.timer);
  }

  closeAll(code: number, reason: string): void {
    for (const e of this.#active.values()) for (const h of e.holders) h.close(code, reason);
  }
}
