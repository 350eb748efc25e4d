/** The ink view of `hoopctl login` on a TTY: URL, code, and a spinner while we wait. */
import type { DeviceAuthorizationResponse } from 'openid-client';

export async function showDeviceLogin(da: DeviceAuthorizationResponse): Promise<{ done(ok: boolean): void }> {
  const React = await import('react');
  const { render, Box, Text } = await import('ink');
  const h = React.createElement;
  const started = Date.now();
  function View({ state }: { state: 'waiting' | 'ok' | 'failed' }) {
    const [, tick] = React.useState(0);
    React.useEffect(() => {
      if (state !== 'waiting') return;
      const t = setInterval(() => tick((n: number) => n + 1), 1000);
      return () => clearInterval(t);
    }, [state]);
    const left = Math.max(0, da.expires_in - Math.floor((Date.now() - started) / 1000));
    return h(Box, { flexDirection: 'column', borderStyle: 'round', paddingX: 1 },
      h(Text, null, 'Open ', h(Text, { color: 'cyan', underline: true }, da.verification_uri)),
      h(Text, null, 'and enter the code ', h(Text, { bold: true, color: 'yellow' }, da.user_code)),
      state === 'waiting' ? h(Text, { dimColor: true }, `waiting for approval... (${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')} left)`)
        : state === 'ok' ? h(Text, { color: 'green' }, 'approved') : h(Text, { color: 'red' }, 'not approved'));
  }
  const app = render(h(View, { state: 'waiting' }), { stdout: process.stderr, exitOnCtrlC: true });
  return {
    done(ok) {
      app.rerender(h(View, { state: ok ? 'ok' : 'failed' }));
      app.unmount();
    },
  };
}
