/** The ink view of `hoopctl connect` on a TTY: where to connect, lease time left, live counters. */
import type { LocalTunnel, LeaseInfo } from '../../client/tunnel.ts';

function bytes(n: number): string {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

const CHANGE_MS = 100;

export async function showConnect(p: { name: string; type: string; port: number; command: string; lease: LeaseInfo; tunnel: LocalTunnel }): Promise<{ stop(why: string): void }> {
  const React = await import('react');
  const { render, Box, Text } = await import('ink');
  const h = React.createElement;
  const expires = Date.parse(p.lease.expires_at);
  function View({ ended }: { ended?: string }) {
    const [, tick] = React.useState(0);
    React.useEffect(() => {
      const t = setInterval(() => tick((n: number) => n + 1), 1000);
      // a busy tunnel changes hundreds of times a second (pgbench -C): redraw at most every
      // CHANGE_MS, with the last change always shown
      let pending: NodeJS.Timeout | undefined;
      const onChange = () => {
        pending ??= setTimeout(() => { pending = undefined; tick((n: number) => n + 1); }, CHANGE_MS);
      };
      p.tunnel.on('change', onChange);
      return () => { clearInterval(t); if (pending) clearTimeout(pending); p.tunnel.off('change', onChange); };
    }, []);
    const left = Math.max(0, Math.round((expires - Date.now()) / 1000));
    const s = p.tunnel.stats;
    return h(Box, { flexDirection: 'column', borderStyle: 'round', paddingX: 1 },
      h(Text, null, h(Text, { bold: true }, p.name), ` (${p.type}) on `, h(Text, { color: 'cyan' }, `127.0.0.1:${p.port}`)),
      h(Text, null, 'connect with: ', h(Text, { color: 'yellow' }, p.command)),
      // the last frame after the lease ended: no time left or open connections that no longer are
      h(Text, null, ended ? `lease ${p.lease.id}: ended` : `lease ${p.lease.id}: ${Math.floor(left / 3600)}h${String(Math.floor((left % 3600) / 60)).padStart(2, '0')}m${String(left % 60).padStart(2, '0')}s left`),
      h(Text, null, `connections: ${ended ? '' : `${s.open} open, `}${s.total} total   up ${bytes(s.bytesUp)}  down ${bytes(s.bytesDown)}`),
      ended ? h(Text, { color: 'red' }, ended) : h(Text, { dimColor: true }, 'Ctrl-C stops listening; the lease stays valid'));
  }
  const app = render(h(View, {}), { exitOnCtrlC: false });
  return {
    stop(why) {
      app.rerender(h(View, { ended: why }));
      app.unmount();
    },
  };
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** While a lease waits for its review: a spinner, who must approve, and the command they run. */
export async function showPending(p: { name: string; leaseId: string; reviewId: string; groups: string[]; expiresAt: number }): Promise<{ stop(why?: string): void }> {
  const React = await import('react');
  const { render, Box, Text } = await import('ink');
  const h = React.createElement;
  function View({ ended }: { ended?: string }) {
    const [n, tick] = React.useState(0);
    React.useEffect(() => {
      const t = setInterval(() => tick((x: number) => x + 1), 120);
      return () => clearInterval(t);
    }, []);
    const left = Math.max(0, Math.round((p.expiresAt - Date.now()) / 1000));
    if (ended) return h(Text, null, ended);
    return h(Box, { flexDirection: 'column' },
      h(Text, null, h(Text, { color: 'cyan' }, FRAMES[n % FRAMES.length]), ` ${p.name}: waiting for approval by ${p.groups.join(' or ') || 'a reviewer'} — `, h(Text, { color: 'yellow' }, `hoopctl approve ${p.reviewId}`)),
      h(Text, { dimColor: true }, `  lease ${p.leaseId}; the review times out in ${Math.floor(left / 60)}m${String(left % 60).padStart(2, '0')}s; Ctrl-C withdraws the request`));
  }
  const app = render(h(View, {}), { exitOnCtrlC: false });
  return {
    stop(why) {
      app.rerender(h(View, { ended: why ?? ' ' }));
      app.unmount();
    },
  };
}
