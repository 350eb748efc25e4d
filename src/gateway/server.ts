/**
 * The gateway process: one HTTP(S) server on `listen` serving the JSON API, the dev IdP under
 * /oidc (issuer: dev) and WebSocket tunnel upgrades. Start-up order: store → identity →
 * leases → listen; shutdown (SIGTERM) closes tunnels with a reason, then the store.
 */
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import type { GatewayConfig } from './config/load.ts';
import { openStore } from './store/sqlite-store.ts';
import type { Store } from './store/store.ts';
import { createLogger, type Logger } from './log.ts';
import { Audit } from './audit/audit.ts';
import { LeaseService } from './session/leases.ts';
import { TunnelTokens } from './session/tunnel-token.ts';
import { createApi, sendJson } from './api.ts';
import { createTunnelUpgrade } from './transport/tunnel-upgrade.ts';
import { sessionRowWriter } from './session/run-session.ts';
import { createTokenVerifier } from './auth/verify.ts';
import type { DevIdp } from './idp/dev-idp.ts';
import { CloseCode } from '../shared/ws-duplex.ts';

export interface Gateway {
  url: string;
  cfg: GatewayConfig;
  store: Store;
  log: Logger;
  close(): Promise<void>;
}

export async function startGateway(cfg: GatewayConfig, opts: { log?: Logger } = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger({ component: 'gateway' });
  const store = await openStore(cfg.store, cfg.baseDir);
  const audit = new Audit(store, log);
  const sessionRows = sessionRowWriter(store, log);
  const leases = new LeaseService(cfg, store, audit, log);
  await leases.start();

  let handler: http.RequestListener = (_req, res) => sendJson(res, 503, { error: 'starting', message: 'gateway is starting' });
  const server = cfg.tls
    ? https.createServer({ cert: readFileSync(resolve(cfg.baseDir, cfg.tls.cert)), key: readFileSync(resolve(cfg.baseDir, cfg.tls.key)) }, (q, s) => handler(q, s))
    : http.createServer((q, s) => handler(q, s));
  server.keepAliveTimeout = 65_000;
  const [host, port] = splitHostPort(cfg.listen);
  await new Promise<void>((res, rej) => {
    server.once('error', (err: NodeJS.ErrnoException) => rej(err.code === 'EADDRINUSE' ? new Error(`cannot listen on ${cfg.listen}: address already in use`) : err));
    server.listen(port, host, res);
  });

  let devIdp: DevIdp | undefined;
  if (cfg.auth.issuer === 'dev') {
    const { createDevIdp } = await import('./idp/dev-idp.ts');
    const storeFile = cfg.store.startsWith('sqlite:') && cfg.store !== 'sqlite::memory:' ? resolve(cfg.baseDir, cfg.store.slice(7)) : undefined;
    devIdp = await createDevIdp(cfg, { keysFile: storeFile ? resolve(dirname(storeFile), 'dev-idp-keys.json') : undefined });
  }
  const issuer = devIdp?.issuer ?? (cfg.auth.issuer as string);
  // dev tokens are checked against the embedded IdP's keys in-process (no HTTP to our own public_url)
  const verifier = createTokenVerifier({ issuer, audience: cfg.audience, groupsClaim: cfg.auth.groups_claim, jwks: devIdp?.jwks });
  const tunnelTokens = await TunnelTokens.open(store, cfg.public_url);
  const api = createApi({ cfg, issuer, store, leases, tunnelTokens, verifier, log });
  const tunnels = createTunnelUpgrade({ cfg, store, audit, leases, log, tunnelTokens, sessionRows });

  handler = (req, res) => {
    if (devIdp && (req.url === '/oidc' || req.url?.startsWith('/oidc/') || req.url?.startsWith('/oidc?'))) return devIdp.handle(req, res);
    void api(req, res);
  };
  server.on('upgrade', (req, socket, head) => {
    if (req.url?.startsWith('/tunnel/')) void tunnels.upgrade(req, socket, head);
    else socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
  });
  log.info({ listen: cfg.listen, public_url: cfg.public_url, issuer, connections: cfg.connections.length, store: store.kind }, 'gateway started');

  let closed: Promise<void> | undefined;
  return {
    url: cfg.public_url, cfg, store, log,
    close() {
      closed ??= (async () => {
        leases.stop();
        tunnels.closeAll(CloseCode.gatewayShutdown, 'gateway shutting down');
        await new Promise<void>((res) => { server.close(() => res()); server.closeAllConnections(); setTimeout(res, 2000).unref(); });
        await tunnels.settled(3000);
        tunnels.close();
        await devIdp?.close();
        await sessionRows.flush();
        await audit.flush();
        await store.close();
        log.info('gateway stopped');
        log.flush?.();
      })();
      return closed;
    },
  };
}

export function splitHostPort(listen: string): [string, number] {
  const i = listen.lastIndexOf(':');
  return [listen.slice(0, i).replace(/^\[|\]$/g, '') || '127.0.0.1', Number(listen.slice(i + 1))];
}
