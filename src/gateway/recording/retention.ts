/**
 * Retention of recordings (`recording.retention` of each connection, default 90d): the gateway
 * deletes the recordings of sessions that were over more than that long ago, shortly after it
 * starts and then every SWEEP_MS (HOOP_RETENTION_SWEEP_MS, default one hour). Sessions of
 * connections no longer in gateway.yaml keep the default retention. What goes is the recording
 * only: the session row and the audit log stay, and each purged session is noted with the time
 * and the rule (`Store.purgeRecordings`), so `hoopctl replay` and `hoopctl sessions verify` say
 * the recording was deleted by retention rather than that it is missing or altered. Every sweep
 * that deleted something leaves one `recording.purged` audit event per connection.
 *
 * Several replicas on one PostgreSQL store may sweep at once: a session is noted once (its note
 * is the table's key), and each replica deletes only what it noted.
 */
import type { GatewayConfig } from '../config/load.ts';
import { DEFAULT_RETENTION_MS } from '../config/schema.ts';
import { formatDuration } from '../config/duration.ts';
import type { Store } from '../store/store.ts';
import type { Audit } from '../audit/audit.ts';
import type { Logger } from '../log.ts';

const SWEEP_MS = Number(process.env.HOOP_RETENTION_SWEEP_MS ?? 3_600_000);
/** the first sweep waits this long after start (at most SWEEP_MS), so it never delays start-up */
const FIRST_SWEEP_MS = 10_000;
/** sessions per transaction: a large backlog is deleted in steps, the event loop free between them */
const STEP = 200;

export interface Retention {
  /** one sweep now; resolves the number of sessions whose recording was deleted */
  sweep(now?: number): Promise<number>;
  /** stops the timer; resolves when a running sweep has finished */
  stop(): Promise<void>;
}

export function startRetention(deps: { cfg: GatewayConfig; store: Store; audit: Audit; log: Logger }, opts: { everyMs?: number } = {}): Retention {
  const { cfg, store, audit, log } = deps;
  const every = opts.everyMs ?? SWEEP_MS;
  let running: Promise<number> | undefined;
  let stopped = false;

  async function purge(rule: { connection?: string; except?: string[] }, retentionMs: number, now: number): Promise<number> {
    const retention = formatDuration(retentionMs);
    const before = now - retentionMs;
    const reason = `recording.retention ${retention}${rule.connection !== undefined ? ` of connection "${rule.connection}"` : ' (default; the connection is no longer configured)'}`;
    let total = 0;
    for (;;) {
      const n = await store.purgeRecordings({ ...rule, before, at: now, reason, limit: STEP });
      total += n;
      if (n < STEP || stopped) break;
      await new Promise((r) => setImmediate(r));
    }
    if (total > 0) audit.emit('recording.purged', { connection: rule.connection ?? null, data: { sessions: total, retention, before } });
    return total;
  }

  async function sweepOnce(now: number): Promise<number> {
    let total = 0;
    for (const c of cfg.connections) total += await purge({ connection: c.name }, c.recording.retention, now);
    total += await purge({ except: cfg.connections.map((c) => c.name) }, DEFAULT_RETENTION_MS, now);
    return total;
  }

  const sweep = (now = Date.now()): Promise<number> => {
    running ??= sweepOnce(now).finally(() => { running = undefined; });
    return running;
  };
  const tick = () => {
    void sweep().catch((err) => log.error({ err }, 'recording retention sweep failed; it runs again later'));
  };
  let timer: NodeJS.Timeout = setTimeout(() => {
    tick();
    if (stopped) return;
    timer = setInterval(tick, every);
    timer.unref();
  }, Math.min(FIRST_SWEEP_MS, every));
  timer.unref();

  return {
    sweep,
    async stop() {
      stopped = true;
      clearTimeout(timer); // a timeout or an interval: Node clears either
      await running?.catch(() => 0);
    },
  };
}
