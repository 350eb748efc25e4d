/** `hoopctl gateway --config gateway.yaml`: validate, start, stop on SIGTERM/SIGINT. */
import { loadConfigFile } from '../../gateway/config/load.ts';
import { line, out } from '../output.ts';

export default async function gateway(opts: { config: string; check?: boolean }): Promise<number> {
  const cfg = loadConfigFile(opts.config);
  if (opts.check) {
    line(`${opts.config}: ok (${cfg.connections.length} connections)`);
    return 0;
  }
  out.persistent = true; // its log's reader going away must not stop the gateway
  const { startGateway } = await import('../../gateway/server.ts');
  const gw = await startGateway(cfg);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      gw.log.info({ signal: sig }, 'shutting down');
      // tunnels were told why, the store is closed: exit even if a target socket lingers
      gw.close().then(resolve, resolve).finally(() => setTimeout(() => process.exit(process.exitCode ?? 0), 100).unref());
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
