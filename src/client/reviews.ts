/**
 * The client side of reviews: the gateway pushes, nothing here polls on a timer.
 * - `waitForLease`: a pending lease's long poll (GET /api/leases/:id/wait), asked again each
 *   time it answers "still pending" (every ~25 s), so an approval arrives within milliseconds.
 * - `watchReviews`: the server-sent event stream of reviews (GET /api/reviews/events), resumed
 *   after a dropped connection.
 */
import type { GatewayClient } from './gateway-client.ts';
import { HoopError } from '../errors.ts';

/** the API's review view (src/gateway/session/reviews.ts reviewView) */
export interface ReviewInfo {
  id: string; kind: 'lease' | 'statement' | 'command'; status: 'pending' | 'approved' | 'rejected' | 'expired' | 'cancelled';
  connection: string; requester: string; reason: string | null; rule: string | null; statement: string | null;
  decided_by: string | null; decision_reason: string | null; expires_at: string; approve_command: string; reject_command: string;
  lease_id: string | null; session_id: string | null; groups: string[]; min_approvals: number; approvals: string[];
  created_at: string; decided_at: string | null; age: string; time_left: string | null; can_decide: boolean; mine: boolean;
}

export interface PendingLease { id: string; status: string; expires_at: string; end_reason?: string | null; review_id?: string; review?: ReviewInfo }

const LONG_POLL_MS = 25_000;
const RETRY_MS = 1000;

/** Resolves the lease once it is no longer pending (or undefined when `signal` aborts). */
export async function waitForLease<T extends PendingLease>(gw: GatewayClient, leaseId: string, signal: AbortSignal, onRetry?: (err: Error) => void): Promise<T | undefined> {
  while (!signal.aborted) {
    try {
      const l = await gw.request<T>('GET', `/api/leases/${encodeURIComponent(leaseId)}/wait?timeout_ms=${LONG_POLL_MS}`, undefined, { signal });
      if (l.status !== 'pending') return l;
    } catch (err) {
      if (signal.aborted) return undefined;
      // the gateway restarting or a replica going away: keep waiting; anything else is final
      if (!(err instanceof HoopError) || err.exit !== 7) throw err;
      onRetry?.(err);
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }
  return undefined;
}

export type ReviewEvent = { type: 'snapshot'; reviews: ReviewInfo[] } | { type: 'review'; review: ReviewInfo } | { type: 'reconnecting'; error: string };

/** Calls `on` for every event of the review stream until `signal` aborts; reconnects when the stream drops. */
export async function watchReviews(gw: GatewayClient, on: (e: ReviewEvent) => void, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      const res = await gw.stream('/api/reviews/events', signal);
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let event = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (!data) continue;
          const v = JSON.parse(data);
          if (event === 'snapshot') on({ type: 'snapshot', reviews: v.reviews });
          else if (event === 'review') on({ type: 'review', review: v });
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof HoopError && err.exit !== 7) throw err;
      on({ type: 'reconnecting', error: (err as Error).message });
    }
    if (!signal.aborted) await new Promise((r) => setTimeout(r, RETRY_MS));
  }
}
