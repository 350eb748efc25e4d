/**
 * Review notifications (gateway.yaml `notifications`): on review.created / decided / expired /
 * cancelled the gateway POSTs to each configured URL whose `events` name it. Never on the data
 * path: a delivery runs in the background with a timeout per attempt and retries with
 * exponential backoff (0.5 s, 1 s, 2 s, ...); one that finally fails is an audit event
 * (`notification.failed`). With `secret_env` the body is signed: `X-Hoop-Signature:
 * sha256=<hex HMAC-SHA256 of the raw body>` (as GitHub's webhooks), so a receiver can check it
 * came from this gateway. `format: slack` sends a Slack incoming-webhook payload.
 *
 * Written by hand: fetch with a timeout and a retry loop is a dozen lines; no webhook library
 * adds anything here.
 */
import { createHmac, randomUUID } from 'node:crypto';
import type { GatewayConfig } from '../config/load.ts';
import type { NotifyEvent } from '../config/schema.ts';
import type { Audit } from './audit.ts';
import type { Logger } from '../log.ts';

/** what a notification says about a review (the API's review view) */
export interface ReviewPayload {
  id: string;
  kind: string;
  status: string;
  connection: string;
  requester: string;
  reason: string | null;
  rule: string | null;
  statement: string | null;
  decided_by: string | null;
  decision_reason: string | null;
  expires_at: string;
  approve_command: string;
  reject_command: string;
}

const BACKOFF_MS = 500;

export class Notifier {
  readonly #cfg: GatewayConfig;
  readonly #audit: Audit;
  readonly #log: Logger;
  readonly #inflight = new Set<Promise<void>>();
  #closed = false;

  constructor(cfg: GatewayConfig, audit: Audit, log: Logger) {
    this.#cfg = cfg;
    this.#audit = audit;
    this.#log = log;
  }

  /** Queues the deliveries of one event; returns at once. */
  send(event: NotifyEvent, review: ReviewPayload): void {
    if (this.#closed) return;
    this.#cfg.notifications.forEach((n, i) => {
      if (!n.events.includes(event)) return;
      const body = JSON.stringify(n.format === 'slack' ? slackPayload(event, review) : { event, at: new Date().toISOString(), gateway: this.#cfg.public_url, review });
      const p = this.#deliver(i, event, review.id, body).finally(() => this.#inflight.delete(p));
      this.#inflight.add(p);
    });
  }

  async #deliver(i: number, event: NotifyEvent, reviewId: string, body: string): Promise<void> {
    const n = this.#cfg.notifications[i];
    const secret = this.#cfg.notificationSecrets.get(i);
    const headers: Record<string, string> = {
      'content-type': 'application/json', 'user-agent': 'hoopctl-gateway', 'x-hoop-event': event, 'x-hoop-delivery': randomUUID(),
    };
    if (secret) headers['x-hoop-signature'] = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
    let last = '';
    for (let attempt = 1; attempt <= n.attempts; attempt++) {
      try {
        const res = await fetch(n.url, { method: 'POST', headers, body, signal: AbortSignal.timeout(n.timeout), redirect: 'error' });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) {
          this.#log.debug({ url: n.url, event, review: reviewId, attempt }, 'notification delivered');
          return;
        }
        last = `HTTP ${res.status}`;
        // a receiver that refuses the request itself will refuse it again
        if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) break;
      } catch (err) {
        last = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      }
      if (attempt < n.attempts && !this.#closed) await new Promise((r) => setTimeout(r, BACKOFF_MS * 2 ** (attempt - 1)).unref());
      if (this.#closed) break;
    }
    this.#log.warn({ url: n.url, event, review: reviewId, error: last }, 'notification failed');
    this.#audit.emit('notification.failed', { data: { url: n.url, event, review: reviewId, error: last } });
  }

  /** resolves when every delivery started so far has ended (tests, shutdown) */
  async idle(): Promise<void> {
    while (this.#inflight.size) await Promise.allSettled([...this.#inflight]);
  }

  /** stops retrying; deliveries in flight finish their current attempt */
  close(): Promise<void> {
    this.#closed = true;
    return this.idle();
  }
}

function slackPayload(event: NotifyEvent, r: ReviewPayload): { text: string } {
  const what = r.kind === 'lease' ? `access to *${r.connection}*` : `a ${r.kind} on *${r.connection}* (rule \`${r.rule}\`)`;
  const lines: string[] = [];
  switch (event) {
    case 'review.created':
      lines.push(`:lock: *${r.requester}* asks for ${what} — review \`${r.id}\``);
      if (r.reason) lines.push(`> ${r.reason}`);
      if (r.statement) lines.push('```' + r.statement.replaceAll('```', '`\u200b``') + '```');
      lines.push(`Approve: \`${r.approve_command}\`   Reject: \`${r.reject_command}\``);
      break;
    case 'review.decided':
      lines.push(`${r.status === 'approved' ? ':white_check_mark:' : ':x:'} review \`${r.id}\` (${what}, by ${r.requester}) was *${r.status}* by ${r.decided_by}${r.decision_reason ? `: ${r.decision_reason}` : ''}`);
      break;
    default:
      lines.push(`:hourglass: review \`${r.id}\` (${what}, by ${r.requester}) ${r.status === 'expired' ? 'timed out without a decision' : 'was withdrawn'}`);
  }
  return { text: lines.join('\n') };
}
