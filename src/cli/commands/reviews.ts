/**
 * `hoopctl reviews [--mine] [--all] [--watch]`: the requests the caller may decide (default), the
 * caller's own (--mine), every request (--all, admins). --watch stays open: a live ink list on a
 * terminal, one plain line per change otherwise (or NDJSON with --json).
 */
import { authedClient } from '../../client/auth.ts';
import { watchReviews, type ReviewInfo } from '../../client/reviews.ts';
import { out, printJson, line, table, info } from '../output.ts';

interface Opts { mine?: boolean; all?: boolean; watch?: boolean; gateway?: string; json?: boolean }

/** one line of a statement, for tables */
export function shortStatement(s: string | null, max = 60): string {
  if (!s) return '-';
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

export function what(r: ReviewInfo): string {
  return r.kind === 'lease' ? `access to ${r.connection}` : `${r.kind} on ${r.connection} (rule ${r.rule}): ${shortStatement(r.statement, 200)}`;
}

/** the plain line a change prints under --watch without a terminal */
export function changeLine(r: ReviewInfo): string {
  const at = new Date().toISOString();
  switch (r.status) {
    case 'pending':
      return r.approvals.length
        ? `${at} ${r.id} approval ${r.approvals.length}/${r.min_approvals} by ${r.approvals.at(-1)}`
        : `${at} ${r.id} requested by ${r.requester}: ${what(r)}${r.reason ? ` — "${r.reason}"` : ''}${r.can_decide ? ` — hoopctl approve ${r.id}` : ''}`;
    case 'approved':
    case 'rejected':
      return `${at} ${r.id} ${r.status} by ${r.decided_by}${r.decision_reason ? `: ${r.decision_reason}` : ''}`;
    default:
      return `${at} ${r.id} ${r.status}${r.decision_reason ? ` (${r.decision_reason})` : ''}`;
  }
}

export default async function reviews(opts: Opts): Promise<number> {
  const gw = await authedClient(opts.gateway);
  if (opts.watch) return watch(gw, opts);
  const q = opts.all ? '?all=1' : opts.mine ? '?mine=1' : '';
  const { reviews: list } = await gw.request<{ reviews: ReviewInfo[] }>('GET', `/api/reviews${q}`);
  if (out.json) { printJson(list); return 0; }
  if (!list.length) {
    line(opts.mine ? 'You have no review requests.' : opts.all ? 'No review requests.' : 'Nothing waits for your review.');
    return 0;
  }
  const rows = list.map((r) => ({ ...r, statement: r.kind === 'lease' ? '(lease)' : shortStatement(r.statement), approvals: `${r.approvals.length}/${r.min_approvals}` }));
  table(rows, opts.mine || opts.all
    ? ['id', 'kind', 'connection', 'requester', 'status', 'statement', 'reason', 'age', 'time_left', 'decided_by']
    : ['id', 'kind', 'connection', 'requester', 'reason', 'statement', 'approvals', 'age', 'time_left']);
  if (!opts.mine && !opts.all) line(`\nDecide with \`hoopctl approve <id> [--reason T]\` or \`hoopctl reject <id> --reason T\`.`);
  return 0;
}

async function watch(gw: Awaited<ReturnType<typeof authedClient>>, opts: Opts): Promise<number> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const mine = (r: ReviewInfo) => (opts.mine ? r.mine : opts.all ? true : r.can_decide || r.status !== 'pending');
  if (out.tty && !out.json) {
    const view = await (await import('../views/reviews-view.ts')).showReviews();
    await watchReviews(gw, (e) => view.update(e), stop.signal);
    view.stop();
    return 0;
  }
  if (!out.json) info('Watching review requests (Ctrl-C to stop)…');
  await watchReviews(gw, (e) => {
    if (e.type === 'reconnecting') { info(`gateway unreachable (${e.error}); reconnecting…`); return; }
    const list = e.type === 'snapshot' ? e.reviews : [e.review];
    for (const r of list) {
      if (!mine(r)) continue;
      if (out.json) process.stdout.write(`${JSON.stringify({ event: e.type, review: r })}\n`);
      else line(changeLine(r));
    }
  }, stop.signal);
  return 0;
}
