/** The ink view of `hoopctl reviews --watch`: the open requests, live, and the last decisions. */
import type { ReviewEvent, ReviewInfo } from '../../client/reviews.ts';
import { shortStatement } from '../commands/reviews.ts';

const KEEP_DECIDED = 8;

export async function showReviews(): Promise<{ update(e: ReviewEvent): void; stop(): void }> {
  const React = await import('react');
  const { render, Box, Text } = await import('ink');
  const h = React.createElement;
  const open = new Map<string, ReviewInfo>();
  const decided: ReviewInfo[] = [];
  let status = 'connecting…';

  function View() {
    const [, tick] = React.useState(0);
    React.useEffect(() => {
      const t = setInterval(() => tick((n: number) => n + 1), 1000);
      return () => clearInterval(t);
    }, []);
    const now = Date.now();
    const left = (r: ReviewInfo) => {
      const s = Math.max(0, Math.round((Date.parse(r.expires_at) - now) / 1000));
      return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
    };
    const rows = [...open.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));
    return h(Box, { flexDirection: 'column' },
      h(Text, { bold: true }, `Review requests — ${rows.length} open`, h(Text, { dimColor: true }, `  (${status}; Ctrl-C to stop)`)),
      ...rows.map((r) => h(Box, { key: r.id, flexDirection: 'column', marginTop: 1 },
        h(Text, null, h(Text, { color: 'cyan' }, r.id), `  ${r.kind} on `, h(Text, { bold: true }, r.connection), ` by ${r.requester}`,
          r.rule ? `  rule ${r.rule}` : '', `  ${left(r)} left`, r.min_approvals > 1 ? `  ${r.approvals.length}/${r.min_approvals} approvals` : ''),
        r.statement ? h(Text, { color: 'yellow' }, `  ${shortStatement(r.statement, 100)}`) : null,
        r.reason ? h(Text, null, `  reason: ${r.reason}`) : null,
        r.can_decide ? h(Text, { dimColor: true }, `  hoopctl approve ${r.id}    hoopctl reject ${r.id} --reason "…"`) : h(Text, { dimColor: true }, r.mine ? '  your request' : '  (you may not decide this one)'))),
      decided.length ? h(Box, { flexDirection: 'column', marginTop: 1 },
        h(Text, { dimColor: true }, 'recent:'),
        ...decided.map((r) => h(Text, { key: `d${r.id}`, color: r.status === 'approved' ? 'green' : r.status === 'rejected' ? 'red' : 'gray' },
          `  ${r.id} ${r.status}${r.decided_by ? ` by ${r.decided_by}` : ''}${r.decision_reason ? `: ${r.decision_reason}` : ''} (${r.kind} on ${r.connection} by ${r.requester})`))) : null);
  }
  const app = render(h(View, {}), { exitOnCtrlC: false });
  const redraw = () => app.rerender(h(View, {}));
  return {
    update(e) {
      if (e.type === 'reconnecting') status = `gateway unreachable, reconnecting (${e.error})`;
      else status = 'live';
      const list = e.type === 'snapshot' ? e.reviews : e.type === 'review' ? [e.review] : [];
      if (e.type === 'snapshot') open.clear();
      for (const r of list) {
        if (r.status === 'pending') open.set(r.id, r);
        else {
          open.delete(r.id);
          decided.unshift(r);
          decided.length = Math.min(decided.length, KEEP_DECIDED);
        }
      }
      redraw();
    },
    stop() { app.unmount(); },
  };
}
