/**
 * The gateway's HTTP JSON API. Every route but /healthz and discovery needs a bearer token from
 * the issuer; errors leave through one normalizer (toHoopError) as `{error, message, hint}`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HoopError, AuthError, UsageError, NotFound, AccessDenied, ExitCode, toHoopError } from '../errors.ts';
import type { GatewayConfig } from './config/load.ts';
import type { Store, Lease } from './store/store.ts';
import type { LeaseService, Caller } from './session/leases.ts';
import { mayUse } from './session/leases.ts';
import type { TunnelTokens } from './session/tunnel-token.ts';
import type { TokenVerifier } from './auth/verify.ts';
import type { RevocationList } from './auth/revocations.ts';
import type { Logger } from './log.ts';
import { formatDuration } from './config/duration.ts';
import { VERSION } from '../version.ts';
import { reviewView, type ReviewService } from './session/reviews.ts';
import { bodies, queries, check, queryObject } from './api-input.ts';

export interface ApiDeps {
  cfg: GatewayConfig;
  issuer: string;
  store: Store;
  leases: LeaseService;
  reviews: ReviewService;
  tunnelTokens: TunnelTokens;
  verifier: TokenVerifier;
  revocations: RevocationList;
  log: Logger;
}

const MAX_BODY = 64 * 1024;
/** a handler that wrote its own response (a stream) returns this */
const STREAMED = Symbol('streamed');
/** the longest a long poll (GET /api/leases/:id/wait) holds a request */
const MAX_WAIT_MS = 60_000;
/** comment lines on the review event stream, so proxies do not cut it */
const SSE_PING_MS = 15_000;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new UsageError(`request body larger than ${MAX_BODY} bytes`, { status: 413 });
    chunks.push(c as Buffer);
  }
  if (!size) return {};
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v;
  } catch {
    throw new UsageError('request body must be a JSON object');
  }
}

export function bearer(req: IncomingMessage): string {
  const h = req.headers.authorization;
  if (!h) throw new AuthError('token_missing', 'no bearer token: log in with `hoopctl login`');
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  if (!m) throw new AuthError('token_malformed', 'Authorization header must be "Bearer <token>"');
  return m[1];
}

export function leaseView(l: Lease, now = Date.now()) {
  return {
    id: l.id, connection: l.connection, user: l.user, status: l.status, reason: l.reason,
    created_at: new Date(l.createdAt).toISOString(), expires_at: new Date(l.expiresAt).toISOString(),
    duration: formatDuration(l.durationMs), remaining: l.status === 'active' ? formatDuration(Math.max(0, l.expiresAt - now)) : null,
    ended_at: l.endedAt ? new Date(l.endedAt).toISOString() : null, ended_by: l.endedBy, end_reason: l.endReason,
  };
}

export function createApi(deps: ApiDeps) {
  const { cfg, store, leases, reviews, verifier } = deps;

  /** a lease's view, with its review while one is attached */
  async function leaseWithReview(l: Lease, c: Caller) {
    const v = leaseView(l);
    if (l.status === 'active' && !cfg.connections.find((x) => x.name === l.connection)?.review) return v;
    const r = await reviews.ofLease(l.id);
    return r ? { ...v, review_id: r.id, review: reviewView(r, c, reviews) } : v;
  }

  const decide = (decision: 'approve' | 'reject'): Handler => async (req, _res, [id]) => {
    const c = await caller(req);
    const body = check(bodies.decide, await readJson(req), 'body');
    const { review, result } = await reviews.decide(c, id, decision, body.reason ?? undefined);
    return { result, review: reviewView(review, c, reviews) };
  };

  async function caller(req: IncomingMessage): Promise<Caller> {
    const id = await verifier.verify(bearer(req));
    return { sub: id.sub, groups: id.groups, admin: id.groups.some((g) => cfg.auth.admins.includes(g)) };
  }

  type Handler = (req: IncomingMessage, res: ServerResponse, params: string[], url: URL) => Promise<unknown>;
  /** a handler that reads the query string checks it with its own schema; every other route takes none */
  const withQuery = (h: Handler): Handler => Object.assign(h, { ownQuery: true });
  /** a POST that takes no body: nothing, or `{}` */
  const noBody = (h: Handler): Handler => async (req, res, p, url) => { check(bodies.none, await readJson(req), 'body'); return h(req, res, p, url); };
  const routes: Array<[string, RegExp, Handler]> = [
    ['GET', /^\/healthz$/, async () => ({ ok: true, version: VERSION, store: store.kind })],
    ['GET', /^\/\.well-known\/hoop-configuration$/, async () => ({
      gateway: cfg.public_url, issuer: deps.issuer, client_id: cfg.auth.client_id, audience: cfg.audience,
      groups_claim: cfg.auth.groups_claim, version: VERSION, dev_idp: cfg.auth.issuer === 'dev',
    })],
    ['GET', /^\/api\/whoami$/, async (req) => {
      const id = await verifier.verify(bearer(req));
      return { sub: id.sub, groups: id.groups, admin: id.groups.some((g) => cfg.auth.admins.includes(g)), client_id: id.clientId ?? null, expires_at: id.exp ? new Date(id.exp * 1000).toISOString() : null, gateway: cfg.public_url, issuer: deps.issuer };
    }],
    // `hoopctl logout`: the caller's own access token is refused from now on, by every replica
    ['POST', /^\/api\/logout$/, noBody(async (req) => {
      const token = bearer(req);
      const id = await verifier.verify(token);
      const exp = id.exp ? id.exp * 1000 : Date.now() + 86_400_000;
      await deps.revocations.revoke(token, exp + 60_000); // + the verifier's clock tolerance
      return { revoked: true, sub: id.sub, until: new Date(exp).toISOString() };
    })],
    ['GET', /^\/api\/connections$/, async (req) => {
      const c = await caller(req);
      return {
        connections: cfg.connections.filter((x) => mayUse(x, c)).map((x) => ({
          name: x.name, type: x.type, ...(x.target.database ? { database: x.target.database } : {}), review: Boolean(x.review), review_groups: x.review?.groups ?? [],
          lease_default: formatDuration(x.lease.default), lease_max: formatDuration(x.lease.max),
          guardrails: Boolean(x.guardrails), masking: Boolean(x.masking),
          // ssh: the account on the target and the gateway's host key, so `hoopctl connect` can
          // print a command whose host key is already known (never trust-on-first-use by users)
          ...(x.type === 'ssh' ? { user: x.target.user, host_key: cfg.secrets.get(x.name)?.gatewayHostKey?.public ?? null } : {}),
        })),
      };
    }],
    ['POST', /^\/api\/leases$/, async (req, res) => {
      const c = await caller(req);
      const body = check(bodies.createLease, await readJson(req), 'body');
      const lease = await leases.request(c, { connection: body.connection, duration: body.duration ?? undefined, reason: body.reason ?? undefined, new: Boolean(body.new) });
      res.statusCode = lease.reused ? 200 : 201;
      return { ...(await leaseWithReview(lease, c)), reused: lease.reused, ...(lease.clamped ? { clamped: lease.clamped } : {}), ...(lease.reasonUpdated ? { reason_updated: true } : {}) };
    }],
    ['GET', /^\/api\/leases$/, withQuery(async (req, _res, _p, url) => {
      const c = await caller(req);
      const q = check(queries.listLeases, queryObject(url), 'query');
      const list = await leases.list(c, q.all);
      return { leases: list.map((l) => leaseView(l)) };
    })],
    ['GET', /^\/api\/leases\/([\w-]+)$/, async (req, _res, [id]) => {
      const c = await caller(req);
      return leaseWithReview(await leases.get(c, id), c);
    }],
    // long poll: answers as soon as the lease is no longer pending (approved, rejected, timed
    // out, withdrawn), or after timeout_ms with it still pending; the CLI asks again
    ['GET', /^\/api\/leases\/([\w-]+)\/wait$/, withQuery(async (req, _res, [id], url) => {
      const c = await caller(req);
      const timeout = Math.min(check(queries.waitLease, queryObject(url), 'query').timeout_ms, MAX_WAIT_MS);
      const first = await leases.get(c, id);
      const gone = new AbortController();
      req.once('close', () => gone.abort());
      const done = first.status !== 'pending' ? first
        : await reviews.waitUntil(async () => { const l = await leases.get(c, id); return l.status !== 'pending' ? l : undefined; }, timeout, gone.signal);
      return leaseWithReview(done ?? await leases.get(c, id), c);
    })],
    ['POST', /^\/api\/leases\/([\w-]+)\/revoke$/, noBody(async (req, _res, [id]) => leaseView(await leases.revoke(await caller(req), id)))],
    ['POST', /^\/api\/leases\/([\w-]+)\/tunnel-token$/, noBody(async (req, _res, [id]) => {
      const c = await caller(req);
      const l = await leases.get(c, id);
      if (l.user !== c.sub) throw new AccessDenied(`lease ${id} belongs to ${l.user}; only its owner may open tunnels`);
      if (l.status !== 'active') throw new AccessDenied(`lease ${id} is ${l.status}`, { code: `lease_${l.status}` });
      const exp = Math.min(Date.now() + cfg.tunnel_token_ttl, l.expiresAt);
      return { token: await deps.tunnelTokens.sign({ leaseId: l.id, user: l.user, connection: l.connection }, exp), expires_at: new Date(exp).toISOString(), lease: leaseView(l) };
    })],
    ['GET', /^\/api\/sessions$/, withQuery(async (req, _res, _p, url) => {
      const c = await caller(req);
      const q = check(queries.listSessions, queryObject(url), 'query');
      const user = q.user;
      if (user && user !== c.sub && !c.admin) throw new AccessDenied('only admins may list other users\' sessions');
      const rows = await store.listSessions({ user: c.admin ? user : c.sub, connection: q.conn, since: q.since ? Date.now() - q.since : undefined });
      return { sessions: rows };
    })],
    ['GET', /^\/api\/sessions\/([\w-]+)$/, async (req, _res, [id]) => {
      const c = await caller(req);
      const s = await store.getSession(id);
      if (!s || (s.user !== c.sub && !c.admin)) throw new NotFound(`no session "${id}"`, { hint: 'see `hoopctl sessions`' });
      return s;
    }],
    ['GET', /^\/api\/sessions\/([\w-]+)\/recording$/, async (req, _res, [id]) => {
      const c = await caller(req);
      const s = await store.getSession(id);
      if (!s || (s.user !== c.sub && !c.admin)) throw new NotFound(`no session "${id}"`, { hint: 'see `hoopctl sessions`' });
      const entries = await store.readRecording(id);
      if (entries.length === 0) {
        const purge = await store.getRecordingPurge(id);
        if (purge) {
          throw new HoopError('recording_purged', `the recording of session ${id} was deleted on ${new Date(purge.at).toISOString()} by ${purge.reason}`, {
            status: 410, exit: ExitCode.denied, hint: 'recordings are kept for their connection\'s recording.retention (gateway.yaml); the session row and the audit log remain',
          });
        }
      }
      return { session: s, entries };
    }],
    // Server-sent events: every review the caller may see, as it is created and decided
    ['GET', /^\/api\/reviews\/events$/, async (req, res) => {
      const c = await caller(req);
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      const pending = (await reviews.list(c, {})).concat((await reviews.list(c, { mine: true })).filter((r) => r.status === 'pending'));
      const seen = new Set<string>();
      send('snapshot', { reviews: pending.filter((r) => !seen.has(r.id) && seen.add(r.id)).map((r) => reviewView(r, c, reviews)) });
      const onChange = (r: Parameters<typeof reviews.maySee>[0]) => { if (reviews.maySee(r, c)) send('review', reviewView(r, c, reviews)); };
      reviews.on('change', onChange);
      const ping = setInterval(() => res.write(': ping\n\n'), SSE_PING_MS);
      await new Promise<void>((resolve) => { req.once('close', resolve); res.once('close', resolve); });
      clearInterval(ping);
      reviews.off('change', onChange);
      return STREAMED;
    }],
    ['GET', /^\/api\/reviews$/, withQuery(async (req, _res, _p, url) => {
      const c = await caller(req);
      const q = check(queries.listReviews, queryObject(url), 'query');
      const list = await reviews.list(c, { mine: q.mine, all: q.all, since: q.since ? Date.now() - q.since : undefined });
      return { reviews: list.map((r) => reviewView(r, c, reviews)) };
    })],
    ['GET', /^\/api\/reviews\/([\w-]+)$/, async (req, _res, [id]) => {
      const c = await caller(req);
      return reviewView(await reviews.get(c, id), c, reviews);
    }],
    ['POST', /^\/api\/reviews\/([\w-]+)\/approve$/, decide('approve')],
    ['POST', /^\/api\/reviews\/([\w-]+)\/reject$/, decide('reject')],
    ['GET', /^\/api\/audit$/, withQuery(async (req, _res, _p, url) => {
      const c = await caller(req);
      if (!c.admin) throw new AccessDenied(`the audit log needs an admin group (${cfg.auth.admins.join(', ') || 'none configured'})`);
      const q = check(queries.audit, queryObject(url), 'query');
      return { events: await store.listAudit({ since: q.since ? Date.now() - q.since : 0 }) };
    })],
  ];

  return async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://gateway');
    try {
      let pathMatched = false;
      for (const [method, re, h] of routes) {
        const m = re.exec(url.pathname);
        if (!m) continue;
        pathMatched = true;
        if (method !== req.method) continue;
        if (!(h as { ownQuery?: boolean }).ownQuery && url.pathname.startsWith('/api/')) check(queries.none, queryObject(url), 'query');
        const body = await h(req, res, m.slice(1), url);
        if (body === STREAMED) return;
        return sendJson(res, res.statusCode && res.statusCode !== 200 ? res.statusCode : 200, body);
      }
      throw pathMatched ? new HoopError('method_not_allowed', `${req.method} is not allowed on ${url.pathname}`, { status: 405 })
        : new NotFound(`no such endpoint ${url.pathname}`);
    } catch (err) {
      const e = toHoopError(err);
      if (!e.expose) deps.log.error({ err, path: url.pathname }, 'request failed');
      if (res.headersSent) { res.end(); return; }
      sendJson(res, e.status, e.toJSON());
    }
  };
}
