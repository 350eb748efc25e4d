/**
 * Reviews: a human approves (or rejects) a lease before it starts (JIT, `review:` on the
 * connection), or one statement a guardrail held (`guardrails.review`), or one SSH command.
 *
 *   request ──► store.createReview (pending) ──► audit review.created, notify, push to watchers
 *      │            reviewers: `hoopctl approve|reject <id>` ──► decide(): store.decideReview
 *      │            (one transaction: duplicate / not pending / expired refused; a rejection ends
 *      │            it; the approval that reaches min_approvals approves it)
 *      ▼
 *   outcome ──► lease: activated (its duration starts now) or ended; statement: the waiting
 *               engine runs it, or answers the client with an error. Timers expire reviews
 *               nobody decided; a withdrawn request (Ctrl-C, disconnect, revoke) is cancelled.
 *
 * Rules: nobody decides their own request, admins included; a reviewer is a member of the
 * review's groups (the connection's `review.groups`; for statements on a connection without
 * `review`, the admin groups); each reviewer decides once.
 *
 * Several replicas on a PostgreSQL store: decisions are transactions in the store, so they agree;
 * a change made on another replica arrives through `store.watchReviews` (LISTEN/NOTIFY) and
 * wakes this replica's waiters (a held statement, a `connect` waiting, a `reviews --watch`);
 * every replica arms expiry timers and the conditional `finishReview` lets one of them win.
 */
import { EventEmitter } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { AccessDenied, HoopError, NotFound, UsageError, ExitCode } from '../../errors.ts';
import type { GatewayConfig } from '../config/load.ts';
import type { ConnectionConfig } from '../config/schema.ts';
import { formatDuration } from '../config/duration.ts';
import type { Lease, Review, ReviewKind, Store } from '../store/store.ts';
import type { Audit } from '../audit/audit.ts';
import type { Notifier, ReviewPayload } from '../audit/notify.ts';
import type { Logger } from '../log.ts';
import type { RecordEvent, ReviewOutcome, ReviewRequest } from '../engines/engine.ts';
import type { Caller, LeaseService } from './leases.ts';

/** a decision's reason, and a requester's: at most this many bytes */
export const MAX_REASON_BYTES = 4096;
const DEFAULT_TIMEOUT_MS = 15 * 60_000;
/** replicas: how often a waiter re-reads its review in case a notification was lost */
const SAFETY_POLL_MS = 2000;
const MAX_TIMER = 2 ** 31 - 1;

export const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** review ids: "r_" and 12 lower-case base32 characters (60 bits), easy to type and to read aloud */
function newReviewId(): string {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
  let id = 'r_';
  for (const b of randomBytes(12)) id += alphabet[b & 31];
  return id;
}

/** who decides reviews on a connection, how many approvals, how long */
export function reviewPolicy(cfg: GatewayConfig, conn: ConnectionConfig): { groups: string[]; minApprovals: number; timeoutMs: number } {
  if (conn.review) return { groups: conn.review.groups, minApprovals: conn.review.min_approvals, timeoutMs: conn.review.timeout };
  return { groups: cfg.auth.admins, minApprovals: 1, timeoutMs: DEFAULT_TIMEOUT_MS };
}

export function checkReason(reason: unknown, what: string): string | null {
  if (reason === undefined || reason === null || reason === '') return null;
  if (typeof reason !== 'string') throw new UsageError(`"${what}" must be a string`);
  if (Buffer.byteLength(reason) > MAX_REASON_BYTES) throw new UsageError(`${what} is longer than ${MAX_REASON_BYTES} bytes`);
  return reason;
}

const inGroups = (groups: string[], caller: Caller) => groups.some((g) => caller.groups.includes(g));

/** One session's side of a statement review (run-session.ts builds it). */
export interface StatementSession {
  sessionId: string;
  leaseId: string;
  user: string;
  connection: ConnectionConfig;
  /** the lease's reason: shown to reviewers */
  reason: string | null;
  record(e: RecordEvent): void;
  /** the startup parameter `hoop.detach_reviews=on`: requests survive the client's disconnect */
  detached: boolean;
  /** the startup parameter `hoop.review=<id>`: an approved detached review to run */
  resume: string | null;
}

export class ReviewService extends EventEmitter<{ change: [Review] }> {
  readonly #cfg: GatewayConfig;
  readonly #store: Store;
  readonly #audit: Audit;
  readonly #notify: Notifier;
  readonly #log: Logger;
  readonly #leases: LeaseService;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  /** reviews some local party waits on: id → wake-up functions */
  readonly #waiters = new Map<string, Set<(r: Review) => void>>();
  #unwatch?: () => void;
  #poll?: NodeJS.Timeout;

  constructor(cfg: GatewayConfig, store: Store, audit: Audit, notify: Notifier, leases: LeaseService, log: Logger) {
    super();
    this.setMaxListeners(0);
    this.#cfg = cfg;
    this.#store = store;
    this.#audit = audit;
    this.#notify = notify;
    this.#leases = leases;
    this.#log = log;
  }

  async start(): Promise<void> {
    if (this.#store.watchReviews) {
      this.#unwatch = this.#store.watchReviews((id) => { void this.#heard(id); });
      this.#poll = setInterval(() => { for (const id of this.#waiters.keys()) void this.#heard(id); }, SAFETY_POLL_MS);
      this.#poll.unref();
    }
    for (const r of await this.#store.listReviews({ status: 'pending' })) this.#arm(r);
    // a gateway stopped between a lease review's approval and the lease's activation
    for (const r of await this.#store.listReviews({ since: Date.now() - 86_400_000 })) {
      if (r.kind === 'lease' && r.status !== 'pending' && r.leaseId) await this.#settleLease(r).catch((err) => this.#log.warn({ err, review: r.id }, 'settling a decided lease review failed'));
    }
  }

  stop(): void {
    this.#unwatch?.();
    clearInterval(this.#poll);
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }

  // ------------------------------------------------------------------ requests

  /** A pending lease (LeaseService.request) gets its review. */
  async requestLease(lease: Lease, conn: ConnectionConfig): Promise<Review> {
    const p = reviewPolicy(this.#cfg, conn);
    const r = this.#newReview('lease', conn, lease.user, { leaseId: lease.id, reason: lease.reason, expiresAt: lease.expiresAt });
    r.groups = p.groups;
    r.minApprovals = p.minApprovals;
    await this.#store.createReview(r);
    this.#created(r);
    return r;
  }

  /** The review of the pending lease `leaseId`, if any. */
  async ofLease(leaseId: string): Promise<Review | undefined> {
    return (await this.#store.listReviews({ leaseId }))[0];
  }

  /**
   * Holds one statement (or SSH command) of a session for review and resolves with the outcome.
   * Never rejects: a store failure is a `cancelled` outcome (fail closed: the statement does not run).
   */
  async requestStatement(s: StatementSession, req: ReviewRequest): Promise<ReviewOutcome> {
    try {
      return await this.#requestStatement(s, req);
    } catch (err) {
      this.#log.error({ err, session: s.sessionId }, 'review request failed; the statement is refused');
      return { id: '', status: 'cancelled', by: null, reason: `the review could not be handled: ${(err as Error).message}` };
    }
  }

  async #requestStatement(s: StatementSession, req: ReviewRequest): Promise<ReviewOutcome> {
    const hash = sha256(req.statement);
    const kind: ReviewKind = req.kind ?? 'statement';
    let r: Review | undefined;
    if (s.resume) {
      const prior = await this.#store.getReview(s.resume);
      const matches = prior && prior.kind === kind && prior.requester === s.user && prior.connection === s.connection.name && prior.statementHash === hash;
      if (matches && prior.status === 'approved') {
        if (await this.#store.consumeReview(prior.id, Date.now())) {
          this.#audit.emit('review.used', { actor: s.user, connection: s.connection.name, leaseId: s.leaseId, sessionId: s.sessionId, data: { review: prior.id } });
          s.record({ type: 'review.used', review: prior.id, rule: prior.rule, statement: prior.statement, by: prior.decidedBy, reason: prior.decisionReason });
          return { id: prior.id, status: 'approved', by: prior.decidedBy, reason: prior.decisionReason };
        }
        s.record({ type: 'review.reuse_refused', review: prior.id });
      } else if (matches && prior.status === 'pending') {
        r = prior; // still waiting: wait for it here
      }
    }
    if (!r) {
      const p = reviewPolicy(this.#cfg, s.connection);
      r = this.#newReview(kind, s.connection, s.user, { leaseId: s.leaseId, sessionId: s.sessionId, reason: s.reason, expiresAt: Date.now() + p.timeoutMs });
      Object.assign(r, { groups: p.groups, minApprovals: p.minApprovals, rule: req.rule, statement: req.display, statementHash: hash, detached: s.detached });
      await this.#store.createReview(r);
      s.record({ type: 'review.requested', review: r.id, rule: req.rule, statement: req.display, groups: r.groups, min_approvals: r.minApprovals, expires_at: r.expiresAt });
      this.#created(r);
    }
    req.onPending?.({ id: r.id, approveCommand: `hoopctl approve ${r.id}`, expiresAt: r.expiresAt });
    const id = r.id;
    const decided = await this.#wait(id, req.signal);
    if (decided === 'aborted') {
      if (s.detached) {
        s.record({ type: 'review.detached', review: id });
        return { id, status: 'cancelled', by: null, reason: 'the client left; the review stays open (hoop.detach_reviews)' };
      }
      const why = String(req.signal?.reason ?? 'withdrawn by the client');
      const now = Date.now();
      if (await this.#store.finishReview(id, 'cancelled', now, why)) this.#finished((await this.#store.getReview(id))!, null, why);
      else await this.#store.consumeReview(id, now); // approved as the client left: it never runs
      s.record({ type: 'review.decided', review: id, status: 'cancelled', by: null, reason: why });
      return { id, status: 'cancelled', by: null, reason: why };
    }
    // approved while attached: used now, so `hoop.review` cannot run it a second time; if a
    // session resuming it (`hoop.review`) got there first, it ran there and does not run here
    if (decided.status === 'approved' && !await this.#store.consumeReview(id, Date.now())) {
      s.record({ type: 'review.decided', review: id, status: 'cancelled', by: null, reason: 'already used by another session' });
      return { id, status: 'cancelled', by: null, reason: 'the approval was already used by another session' };
    }
    const approvals = decided.decisions.filter((d) => d.decision === 'approve').map((d) => d.reviewer);
    s.record({ type: 'review.decided', review: id, status: decided.status, by: decided.decidedBy, reason: decided.decisionReason, approvals });
    return { id, status: decided.status as ReviewOutcome['status'], by: decided.decidedBy, reason: decided.decisionReason };
  }

  #newReview(kind: ReviewKind, conn: ConnectionConfig, requester: string, o: { leaseId: string; sessionId?: string; reason: string | null; expiresAt: number }): Review {
    return {
      id: newReviewId(), kind, connection: conn.name, requester, leaseId: o.leaseId, sessionId: o.sessionId ?? null, rule: null, statement: null,
      statementHash: null, reason: o.reason, groups: [], minApprovals: 1, status: 'pending', createdAt: Date.now(), expiresAt: o.expiresAt,
      decidedAt: null, decidedBy: null, decisionReason: null, detached: false, consumedAt: null, decisions: [],
    };
  }

  #created(r: Review): void {
    this.#audit.emit('review.created', { actor: r.requester, connection: r.connection, leaseId: r.leaseId, sessionId: r.sessionId, data: { review: r.id, kind: r.kind, rule: r.rule, statement: r.statement, groups: r.groups, reason: r.reason } });
    this.#notify.send('review.created', this.payload(r));
    this.#arm(r);
    this.emit('change', r);
  }

  /** resolves with the review once it is no longer pending, or 'aborted' */
  #wait(id: string, signal?: AbortSignal): Promise<Review | 'aborted'> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve('aborted');
      let set = this.#waiters.get(id);
      if (!set) this.#waiters.set(id, (set = new Set()));
      const done = (v: Review | 'aborted') => {
        set.delete(wake);
        if (set.size === 0 && this.#waiters.get(id) === set) this.#waiters.delete(id);
        signal?.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const wake = (r: Review) => { if (r.status !== 'pending') done(r); };
      const onAbort = () => done('aborted');
      set.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
      // decided before we started waiting (another replica, or a fast reviewer)
      void this.#store.getReview(id).then((r) => { if (r) wake(r); }, () => {});
    });
  }

  // ------------------------------------------------------------------ decisions

  async decide(caller: Caller, id: string, decision: 'approve' | 'reject', reasonIn: unknown): Promise<{ review: Review; result: 'recorded' | 'decided' }> {
    const reason = checkReason(reasonIn, 'reason');
    const r = await this.#store.getReview(id);
    if (!r || !this.maySee(r, caller)) throw new NotFound(`no review "${id}"`, { hint: 'see `hoopctl reviews` for the requests you may decide' });
    if (r.requester === caller.sub) {
      throw new AccessDenied(`review ${id} is your own request: nobody decides their own request, admins included`, {
        code: 'review_own_request', hint: `ask a member of ${r.groups.join(', ') || 'the reviewer groups'} to run \`hoopctl ${decision} ${id}\``,
      });
    }
    if (!inGroups(r.groups, caller)) {
      throw new AccessDenied(`you are not a reviewer of ${id}: reviewers are members of ${r.groups.join(', ') || '(no group configured)'}`, { code: 'review_not_reviewer' });
    }
    const d = await this.#store.decideReview(id, { reviewer: caller.sub, decision, reason, at: Date.now() });
    switch (d.result) {
      case 'not_found': throw new NotFound(`no review "${id}"`);
      case 'duplicate': {
        const mine = d.review.decisions.find((x) => x.reviewer === caller.sub);
        throw new HoopError('review_already_decided', `you already ${mine?.decision === 'reject' ? 'rejected' : 'approved'} review ${id}; each reviewer decides once`, { status: 409, exit: ExitCode.denied, hint: `it needs ${d.review.minApprovals} approvals from distinct reviewers` });
      }
      case 'not_pending':
        throw new HoopError('review_decided', `review ${id} is already ${d.review.status}${d.review.decidedBy ? ` by ${d.review.decidedBy}` : ''}${d.review.decisionReason ? `: ${d.review.decisionReason}` : ''}`, { status: 409, exit: ExitCode.denied });
      case 'expired':
        if (d.review.status === 'expired') this.#finished(d.review, null, null);
        throw new HoopError('review_expired', `review ${id} expired at ${new Date(d.review.expiresAt).toISOString()} without a decision`, { status: 410, exit: ExitCode.rejected, hint: 'the requester must ask again' });
    }
    const review = d.review;
    if (d.result === 'recorded') {
      this.#audit.emit('review.approval_recorded', { actor: caller.sub, connection: review.connection, leaseId: review.leaseId, sessionId: review.sessionId, data: { review: id, reason, approvals: review.decisions.filter((x) => x.decision === 'approve').length, min_approvals: review.minApprovals } });
      this.#changed(review);
      return { review, result: 'recorded' };
    }
    this.#finished(review, caller.sub, reason);
    return { review, result: 'decided' };
  }

  /** The requester withdraws (Ctrl-C of a waiting `connect`, or revoke of a pending lease). */
  async cancelLeaseReview(leaseId: string, by: string, why: string): Promise<void> {
    const r = await this.ofLease(leaseId);
    if (!r || r.status !== 'pending') return;
    if (await this.#store.finishReview(r.id, 'cancelled', Date.now(), why)) this.#finished((await this.#store.getReview(r.id))!, by, why);
  }

  /** audit, notify, side effects and wake-ups of a review that reached its end on this replica */
  #finished(r: Review, actor: string | null, reason: string | null): void {
    const type = r.status === 'approved' ? 'review.approved' : r.status === 'rejected' ? 'review.rejected' : r.status === 'expired' ? 'review.expired' : 'review.cancelled';
    this.#audit.emit(type, {
      actor, connection: r.connection, leaseId: r.leaseId, sessionId: r.sessionId,
      data: { review: r.id, kind: r.kind, requester: r.requester, reason, approvals: r.decisions.filter((x) => x.decision === 'approve').map((x) => x.reviewer) },
    });
    this.#notify.send(r.status === 'approved' || r.status === 'rejected' ? 'review.decided' : r.status === 'expired' ? 'review.expired' : 'review.cancelled', this.payload(r));
    const settle = r.kind === 'lease' ? this.#settleLease(r).catch((err) => this.#log.error({ err, review: r.id }, 'applying a lease review failed')) : Promise.resolve();
    // the lease is active before anyone waiting on the review is told
    void settle.then(() => this.#changed(r));
  }

  /** a decided lease review's effect on its lease (idempotent: conditional on the lease being pending) */
  async #settleLease(r: Review): Promise<void> {
    if (!r.leaseId) return;
    if (r.status === 'approved') {
      await this.#leases.activate(r.leaseId);
      return;
    }
    if (r.status === 'cancelled') return; // the revoke that withdrew it ended the lease
    const reason = r.status === 'rejected'
      ? `access rejected by ${r.decidedBy}${r.decisionReason ? `: ${r.decisionReason}` : ''}`
      : `review timed out after ${formatDuration(r.expiresAt - r.createdAt)} without a decision`;
    await this.#leases.endPending(r.leaseId, r.status === 'rejected' ? 'rejected' : 'expired', r.decidedBy, reason);
  }

  #changed(r: Review): void {
    if (r.status !== 'pending') this.#disarm(r.id);
    for (const w of [...(this.#waiters.get(r.id) ?? [])]) w(r);
    this.emit('change', r);
  }

  /** another replica changed `id` (or, undefined, changes may have been missed) */
  async #heard(id: string | undefined): Promise<void> {
    try {
      if (id === undefined) {
        for (const pid of [...this.#waiters.keys(), ...this.#timers.keys()]) await this.#heard(pid);
        for (const r of await this.#store.listReviews({ status: 'pending' })) this.#arm(r);
        return;
      }
      const r = await this.#store.getReview(id);
      if (!r) return;
      if (r.status === 'pending') this.#arm(r);
      this.#changed(r);
    } catch (err) {
      this.#log.warn({ err, review: id }, 'reloading a review failed');
    }
  }

  #arm(r: Review): void {
    if (r.status !== 'pending' || this.#timers.has(r.id)) return;
    const fire = async () => {
      const left = r.expiresAt - Date.now();
      if (left > 0) { this.#timers.set(r.id, setTimeout(fire, Math.min(left, MAX_TIMER)).unref()); return; }
      this.#timers.delete(r.id);
      try {
        if (await this.#store.finishReview(r.id, 'expired', Date.now(), 'no decision within the review timeout')) {
          this.#finished((await this.#store.getReview(r.id))!, null, null);
        }
      } catch (err) {
        this.#log.error({ err, review: r.id }, 'expiring a review failed');
      }
    };
    this.#timers.set(r.id, setTimeout(fire, Math.max(0, Math.min(r.expiresAt - Date.now(), MAX_TIMER))).unref());
  }

  #disarm(id: string): void {
    clearTimeout(this.#timers.get(id));
    this.#timers.delete(id);
  }

  // ------------------------------------------------------------------ reading

  maySee(r: Review, caller: Caller): boolean {
    return r.requester === caller.sub || caller.admin || inGroups(r.groups, caller);
  }

  mayDecide(r: Review, caller: Caller): boolean {
    return r.status === 'pending' && r.requester !== caller.sub && inGroups(r.groups, caller) && !r.decisions.some((d) => d.reviewer === caller.sub);
  }

  async get(caller: Caller, id: string): Promise<Review> {
    const r = await this.#store.getReview(id);
    if (!r || !this.maySee(r, caller)) throw new NotFound(`no review "${id}"`, { hint: 'see `hoopctl reviews`' });
    return r;
  }

  /**
   * default: the pending requests the caller may decide; `mine`: the caller's own requests (any
   * state); `all`: every request (admins).
   */
  async list(caller: Caller, o: { mine?: boolean; all?: boolean; since?: number }): Promise<Review[]> {
    if (o.all && !caller.admin) throw new AccessDenied(`--all lists every review and needs an admin group (${this.#cfg.auth.admins.join(', ') || 'none configured'})`);
    if (o.all) return this.#store.listReviews({ since: o.since });
    if (o.mine) return (await this.#store.listReviews({ since: o.since })).filter((r) => r.requester === caller.sub);
    return (await this.#store.listReviews({ status: 'pending' })).filter((r) => this.mayDecide(r, caller) && r.expiresAt > Date.now());
  }

  /** Resolves `check()`'s value once it is defined, re-checking on every review or lease change; undefined after `timeoutMs`. */
  async waitUntil<T>(check: () => Promise<T | undefined>, timeoutMs: number, signal?: AbortSignal): Promise<T | undefined> {
    const first = await check();
    if (first !== undefined) return first;
    return new Promise<T | undefined>((resolve) => {
      let busy = false;
      let again = false;
      const finish = (v: T | undefined) => {
        clearTimeout(timer);
        clearInterval(poll);
        this.off('change', onChange);
        this.#leases.events.off('change', onChange);
        signal?.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const onChange = () => {
        if (busy) { again = true; return; }
        busy = true;
        void check().then((v) => { busy = false; if (v !== undefined) finish(v); else if (again) { again = false; onChange(); } }, () => { busy = false; });
      };
      const onAbort = () => finish(undefined);
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      const poll = setInterval(onChange, SAFETY_POLL_MS);
      this.on('change', onChange);
      this.#leases.events.on('change', onChange);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  payload(r: Review): ReviewPayload {
    return {
      id: r.id, kind: r.kind, status: r.status, connection: r.connection, requester: r.requester, reason: r.reason, rule: r.rule,
      statement: r.statement, decided_by: r.decidedBy, decision_reason: r.decisionReason, expires_at: new Date(r.expiresAt).toISOString(),
      approve_command: `hoopctl approve ${r.id}`, reject_command: `hoopctl reject ${r.id} --reason "..."`,
    };
  }
}

/** The API's view of a review, for one caller. */
export function reviewView(r: Review, caller: Caller, svc: ReviewService, now = Date.now()) {
  const approvals = r.decisions.filter((d) => d.decision === 'approve');
  return {
    ...svc.payload(r),
    lease_id: r.leaseId, session_id: r.sessionId, groups: r.groups, min_approvals: r.minApprovals,
    approvals: approvals.map((d) => d.reviewer), decisions: r.decisions.map((d) => ({ reviewer: d.reviewer, decision: d.decision, reason: d.reason, at: new Date(d.at).toISOString() })),
    created_at: new Date(r.createdAt).toISOString(), decided_at: r.decidedAt ? new Date(r.decidedAt).toISOString() : null,
    age: formatDuration(Math.max(0, now - r.createdAt)), time_left: r.status === 'pending' ? formatDuration(Math.max(0, r.expiresAt - now)) : null,
    detached: r.detached, used: r.consumedAt !== null, can_decide: svc.mayDecide(r, caller), mine: r.requester === caller.sub,
  };
}
