/** `hoopctl approve <id> [--reason T]` and `hoopctl reject <id> [--reason T]` */
import { authedClient } from '../../client/auth.ts';
import type { ReviewInfo } from '../../client/reviews.ts';
import { out, printJson, line } from '../output.ts';
import { what } from './reviews.ts';

export function decide(decision: 'approve' | 'reject') {
  return async function (id: string, opts: { reason?: string; gateway?: string; json?: boolean }): Promise<number> {
    const gw = await authedClient(opts.gateway);
    const res = await gw.request<{ result: 'recorded' | 'decided'; review: ReviewInfo }>('POST', `/api/reviews/${encodeURIComponent(id)}/${decision}`, { reason: opts.reason });
    const r = res.review;
    if (out.json) { printJson(res); return 0; }
    if (res.result === 'recorded') {
      line(`Recorded your approval of ${r.id} (${r.approvals.length} of ${r.min_approvals}); it needs ${r.min_approvals - r.approvals.length} more from ${r.groups.join(' or ')}.`);
      return 0;
    }
    const effect = r.kind === 'lease'
      ? (r.status === 'approved' ? `${r.requester}'s lease on ${r.connection} is active now` : `${r.requester}'s lease request on ${r.connection} is refused`)
      : (r.status === 'approved' ? `the ${r.kind} runs now in ${r.requester}'s session` : `${r.requester}'s session gets an error and goes on`);
    line(`${r.status === 'approved' ? 'Approved' : 'Rejected'} ${r.id}: ${what(r)} — ${effect}.`);
    return 0;
  };
}

export const approve = decide('approve');
export const reject = decide('reject');
export default approve;
