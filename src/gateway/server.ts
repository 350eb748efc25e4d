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
import { openStore, isPostgresUrl } from './store/open-store.ts';
import type { Store } from './store/store.ts';
import { createLogger, type Logger } from './log.ts';
import { Audit } from './audit/audit.ts';
import { startRetention } from './recording/retention.ts';
import { LeaseService } from './session/leases.ts';
import { ReviewService } from './session/reviews.ts';
import { Notifier } from './audit/notify.ts';
import { TunnelTokens } from './session/tunnel-token.ts';
import { createApi, sendJson } from './api.ts';
import { createTunnelUpgrade } from './transport/tunnel-upgrade.ts';
import { sessionRowWriter } from './session/run-session.ts';
import { createTokenVerifier } from './auth/verify.ts';
import { RevocationList } from './auth/revocations.ts';
import { startRecovery } from './session/recovery.ts';
import type { DevIdp } from './idp/dev-idp.ts';
import { CloseCode } from '../shared/ws-duplex.ts';
import { ConfigError } from '../errors.ts';
import { secureFolder } from './store/file-modes.ts';

export interface Gateway {
  url: string;
  cfg: GatewayConfig;
  store: Store;
  log: Logger;
  close(): Promise<void>;
}

export async function startGateway(cfg: GatewayConfig, opts: { log?: Logger } = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger({ component: 'gateway' });
  let store: Store;
  try {
    store = await openStore(cfg.store, cfg.baseDir, { log });
  } catch (err) {
    // exit 2 naming the key, like any bad config (pg-store's message has the password masked)
    throw Object.assign(new ConfigError(cfg.file, 'store', (err as Error).message), { cause: err });
  }
  const audit = new Audit(store, log);
  const sessionRows = sessionRowWriter(store, log);
  const leases = new LeaseService(cfg, store, audit, log);
  const notifier = new Notifier(cfg, audit, log);
  const reviews = new ReviewService(cfg, store, audit, notifier, leases, log);
  leases.reviews = reviews;
  // a start that fails after the store opened releases it (a PostgreSQL pool would keep the process alive)
  const abort = async (err: unknown): Promise<never> => {
    leases.stop();
    reviews.stop();
    await store.close().catch(() => {});
    throw err;
  };
  await leases.start().catch(abort);
  await reviews.start().catch(abort);
  // ssh connections present a persistent host key of the gateway's own (loaded before any tunnel)
  if (cfg.connections.some((c) => c.type === 'ssh')) {
    await import('./engines/ssh/gateway-keys.ts').then((m) => m.ensureGatewayHostKeys(cfg, store, log)).catch(abort);
  }
  // closes what a crashed gateway left open, and (shared store) beats this replica's heartbeat
  const recovery = await startRecovery({ store, audit, log, shared: isPostgresUrl(cfg.store) }).catch(abort);

  let handler: http.RequestListener = (_req, res) => sendJson(res, 503, { error: 'starting', message: 'gateway is starting' });
  const server = cfg.tls
    ? https.createServer({ cert: readFileSync(resolve(cfg.baseDir, cfg.tls.cert)), key: readFileSync(resolve(cfg.baseDir, cfg.tls.key)) }, (q, s) => handler(q, s))
    : http.createServer((q, s) => handler(q, s));
  server.keepAliveTimeout = 65_000;
  const [host, port] = splitHostPort(cfg.listen);
  await new Promise<void>((res, rej) => {
    server.once('error', (err: NodeJS.ErrnoException) => rej(err.code === 'EADDRINUSE' ? new Error(`cannot listen on ${cfg.listen}: address already in use`) : err));
    server.listen(port, host, res);
  }).catch(abort);

  let devIdp: DevIdp | undefined;
  if (cfg.auth.issuer === 'dev') {
    const { createDevIdp } = await import('./idp/dev-idp.ts');
    // Keys and state sit beside the SQLite file; with a PostgreSQL store, in the store itself, so
    // that every replica is one identity provider (a login on one is good on all).
    const shared = isPostgresUrl(cfg.store) && store.idp ? store : undefined;
    const dataDir = shared || cfg.store === 'sqlite::memory:' ? undefined : dirname(resolve(cfg.baseDir, cfg.store.slice('sqlite:'.length)));
    devIdp = await (async () => {
      if (dataDir) secureFolder(dataDir, ['dev-idp-keys.json', 'dev-idp-state.json'], log);
      return createDevIdp(cfg, { keysFile: dataDir ? resolve(dataDir, 'dev-idp-keys.json') : undefined, shared });
    })().catch((err) => { server.close(); return abort(err); });
  }
  const issuer = devIdp?.issuer ?? (cfg.auth.issuer as string);
  // dev tokens are checked against the embedded IdP's keys in-process (no HTTP to our own public_url)
  const revocations = new RevocationList(store, log);
  await revocations.start(isPostgresUrl(cfg.store)).catch((err) => { server.close(); return abort(err); });
  const verifier = createTokenVerifier({ issuer, audience: cfg.audience, groupsClaim: cfg.auth.groups_claim, jwks: devIdp?.jwks, isRevoked: (k) => revocations.has(k) });
  const tunnelTokens = await TunnelTokens.open(store, cfg.public_url).catch((err) => { server.close(); return abort(err); });
  const api = createApi({ cfg, issuer, store, leases, reviews, tunnelTokens, verifier, revocations, log });
  const tunnels = createTunnelUpgrade({ cfg, store, audit, leases, reviews, log, tunnelTokens, sessionRows, replica: recovery.id });

  handler = (req, res) => {
    if (devIdp && (req.url === '/oidc' || req.url?.startsWith('/oidc/') || req.url?.startsWith('/oidc?'))) return devIdp.handle(req, res);
    void api(req, res);
  };
  server.on('upgrade', (req, socket, head) => {
    if (req.url?.startsWith('/tunnel/')) void tunnels.upgrade(req, socket, head);
    else socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
  });
  const retention = startRetention({ cfg, store, audit, log });
  log.info({ listen: cfg.listen, public_url: cfg.public_url, issuer, connections: cfg.connections.length, store: store.kind }, 'gateway started');

  let closed: Promise<void> | undefined;
  return {
    url: cfg.public_url, cfg, store, log,
    close() {
      closed ??= (async () => {
        leases.stop();
        reviews.stop();
        revocations.stop();
        recovery.stop();
        tunnels.closeAll(CloseCode.gatewayShutdown, 'gateway shutting down');
        await new Promise<void>((res) => { server.close(() => res()); server.closeAllConnections(); setTimeout(res, 2000).unref(); });
        await tunnels.settled(3000);
        tunnels.close();
        await devIdp?.close();
        await retention.stop();
        await notifier.close();
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
