/**
 * The protocol engine interface (after Teleport's lib/srv/db/common/interfaces.go): small, and
 * nothing protocol-specific leaks out of an engine. The session orchestrator
 * (src/gateway/session/run-session.ts) owns what every protocol shares — authorize, open the
 * recorder, watch the lease — and hands each tunnelled client connection to one engine instance.
 *
 *   client bytes ──► Engine.handle(client) ──► ctx.dialTarget() ──► target
 *                      │ policy hooks (guardrails, masking, review) live inside the engine
 *                      └ ctx.record(...) / ctx.audit(...) emit events
 *
 * On lease expiry or revocation the orchestrator calls `terminate(reason)`: the engine sends a
 * protocol-level goodbye if it has one (PostgreSQL: ErrorResponse), then the orchestrator
 * destroys both streams within a second whatever the engine does.
 */
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { LinkHandlers, TunnelLink, WsDuplex } from '../../shared/ws-duplex.ts';
import type { ConnectionConfig } from '../config/schema.ts';
import type { ConnectionSecret } from '../config/load.ts';
import type { Logger } from '../log.ts';

export interface SessionIdentity {
  sessionId: string;
  leaseId: string;
  /** the subject of the caller's token */
  user: string;
  groups: string[];
}

/** Counters an engine updates; the orchestrator persists them with the session. */
export interface SessionStats {
  bytesIn: number;   // client → target
  bytesOut: number;  // target → client
  statements: number;
  blocked: number;
  masked: number;
}

/** One recorded event (appended to the session's tamper-evident recording). */
export interface RecordEvent {
  /** e.g. `query.started`, `query.completed`, `query.blocked`, `result.rows`, `data.in` */
  type: string;
  [key: string]: unknown;
}

export interface EngineContext extends SessionIdentity {
  connection: ConnectionConfig;
  /** secrets resolved from the environment at config load (never sent to clients) */
  secret: ConnectionSecret;
  log: Logger;
  stats: SessionStats;
  /** Opens a TCP connection to the configured target (TCP_NODELAY and keepalive already set). */
  dialTarget(): Promise<Socket>;
  /** Appends an event to the session recording; never throws (a failure is logged). */
  record(event: RecordEvent): void;
  /** Emits an audit event (`query.blocked`, ...); never throws. */
  audit(type: string, data: Record<string, unknown>): void;
  /** Aborted when the lease ends; `signal.reason` is the human reason ("lease expired"). */
  signal: AbortSignal;
  /**
   * Holds one statement or command for a human review (reviews issue): resolves with the outcome
   * once a reviewer decides, the review times out, or `signal` aborts (the client withdrew: Ctrl-C,
   * CancelRequest, disconnect). `onPending` is called once the review exists, with its id and the
   * command that approves it, so the engine can tell its client (PostgreSQL: a NoticeResponse).
   * Engines without review support, or when this is undefined, treat review as deny.
   */
  requestReview?(request: ReviewRequest): Promise<ReviewOutcome>;
  /**
   * Trust on first use of a target's host key (ssh, when `target.host_key` is unset): stores `key`
   * for this connection and target unless one is stored already (first writer wins) and resolves
   * with the stored key; `first` is true when this call stored it. Undefined: nothing to pin with
   * (the engine then requires `target.host_key`).
   */
  pinHostKey?(key: string): Promise<{ key: string; first: boolean }>;
}

export interface ReviewRequest {
  /** the guardrail rule or pattern that held it, e.g. `delete` or `review_patterns[0]` */
  rule: string;
  /** exactly what will run once approved (never shown raw: see `display`) */
  statement: string;
  /** what reviewers see: the statement with literal values masked per the connection's masking */
  display: string;
  /** `statement` (SQL) or `command` (ssh exec / typed line) */
  kind?: 'statement' | 'command';
  /** aborted when the client withdraws the request; the review is then cancelled */
  signal?: AbortSignal;
  /** the client asked that its requests outlive its connection (postgres: `hoop.detach_reviews=on`) */
  detach?: boolean;
  /** an approved earlier review of exactly this statement to run now (postgres: `hoop.review=<id>`) */
  resume?: string;
  onPending?(review: { id: string; approveCommand: string; expiresAt: number }): void;
}

export interface ReviewOutcome {
  id: string;
  status: 'approved' | 'rejected' | 'expired' | 'cancelled';
  /** the deciding reviewer (last approver or the rejecter); null for expired/cancelled */
  by: string | null;
  reason: string | null;
}

export interface Engine {
  /** Relays one client connection until either side closes. Rejects only on unexpected errors. */
  handle(client: Duplex): Promise<void>;
  /** Sends an error in the client's own protocol (best effort); the caller then closes the streams. */
  terminate(reason: string): void;
}

export interface EngineFactory {
  readonly type: ConnectionConfig['type'];
  create(ctx: EngineContext): Engine;
}

/**
 * The client side of a session as messages: the tunnel's own link when the stream is a tunnel
 * (no stream machinery per message), else an adapter over any Duplex (in-process tests hand
 * engines a plain socket).
 */
export function clientLink(client: Duplex, h: LinkHandlers): TunnelLink {
  if (typeof (client as WsDuplex).link === 'function') return (client as WsDuplex).link(h);
  return {
    start() {
      client.on('data', h.data);
      client.on('end', h.end);
      client.on('close', h.close);
      client.on('error', h.close);
      client.on('drain', h.drain);
    },
    write: (b) => client.write(b),
    cork: () => client.cork(),
    uncork: () => client.uncork(),
    pause: () => { client.pause(); },
    resume: () => { client.resume(); },
    end: () => { client.end(); },
    destroy: () => { client.destroy(); },
    get destroyed() { return client.destroyed; },
    get writableEnded() { return client.writableEnded; },
  };
}

const registry = new Map<string, () => Promise<EngineFactory>>();
/** loaded factories: a dynamic import() of a loaded module still costs a trip through the ESM loader (~70 µs per session) */
const loaded = new Map<string, EngineFactory>();

/** Engines register lazily by type name (Teleport common/engines.go); loading happens on first use. */
export function registerEngine(type: string, load: () => Promise<EngineFactory>): void {
  registry.set(type, load);
  loaded.delete(type);
}

/** whether a connection type has an engine (config load refuses types without one) */
export function hasEngine(type: string): boolean {
  return registry.has(type);
}

export async function getEngine(type: string): Promise<EngineFactory> {
  const known = loaded.get(type);
  if (known) return known;
  const load = registry.get(type);
  if (!load) throw new Error(`no engine for connection type "${type}"`);
  const f = await load();
  loaded.set(type, f);
  return f;
}

registerEngine('tcp', async () => (await import('./tcp/tcp-engine.ts')).tcpEngine);
registerEngine('postgres', async () => (await import('./postgres/postgres-engine.ts')).postgresEngine);
registerEngine('ssh', async () => (await import('./ssh/ssh-engine.ts')).sshEngine);
