/**
 * Logs the gateway in to the target PostgreSQL: optional TLS (target.sslmode), StartupMessage,
 * then SCRAM-SHA-256 (channel binding when TLS), md5 or cleartext with the configured secret,
 * and collects ParameterStatus / BackendKeyData up to the first ReadyForQuery. pg-protocol
 * parses the backend messages; scram.ts does SCRAM (with a cache of the PBKDF2-derived keys, so
 * a repeat login costs a few HMACs), node-postgres' helper md5.
 */
import { readFileSync } from 'node:fs';
import { isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { serialize } from 'pg-protocol';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { ScramClient } from './scram.ts';
import { postgresMd5PasswordHash } from 'pg/lib/crypto/utils.js';
import { HoopError } from '../../../errors.ts';
import { startupMessage } from './messages.ts';
import type { TargetConfig } from '../../config/schema.ts';

/** The target refused the gateway (bad secret, no such database, ...) or could not be reached. */
export class TargetLoginError extends HoopError {
  readonly sqlstate: string;
  constructor(message: string, sqlstate: string, cause?: unknown) {
    super('target_login_failed', message, { status: 502, expose: true, cause });
    this.sqlstate = sqlstate;
  }
}

export interface TargetSession {
  socket: Socket | TLSSocket;
  tls: boolean;
  /** ParameterStatus values in the order the server sent them */
  params: Array<[string, string]>;
  pid: number;
  secret: number;
  /** transaction status of the first ReadyForQuery (I) */
  txStatus: number;
  /** NoticeResponse messages sent during login, to relay as-is */
  notices: Buffer[];
}

export interface LoginOptions {
  target: TargetConfig;
  user: string;
  password: string | undefined;
  database: string;
  /** extra startup parameters from the client (application_name, client_encoding, ...) */
  params: Array<[string, string]>;
  /** a connection to the target with TLS settled (openTarget) */
  open(): Promise<TargetChannel>;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Reads exactly the one-byte answer to SSLRequest. */
function readSslAnswer(socket: Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    const onData = (b: Buffer) => {
      cleanup();
      // Bytes after the answer would have been sent before TLS started (CVE-2021-23222): refuse.
      if (b.length !== 1) reject(new TargetLoginError('target sent unexpected data after the SSL answer', '08P01'));
      else resolve(b[0]);
    };
    const onErr = (e: Error) => { cleanup(); reject(e); };
    const onClose = () => { cleanup(); reject(new TargetLoginError('target closed the connection during SSL negotiation', '08006')); };
    const cleanup = () => { socket.off('data', onData); socket.off('error', onErr); socket.off('close', onClose); };
    socket.on('data', onData);
    socket.once('error', onErr);
    socket.once('close', onClose);
  });
}

/**
 * A connection to the target ready for a StartupMessage or a CancelRequest: TLS negotiated as
 * target.sslmode asks (PostgreSQL takes either message after its SSL answer). `socket` is the TLS
 * socket over `raw`, or `raw` itself.
 */
export interface TargetChannel { socket: Socket | TLSSocket; raw: Socket; tls: boolean }

export async function openTarget(raw: Socket, target: TargetConfig, timeoutMs = 30_000): Promise<TargetChannel> {
  try {
    return { ...(await withTimeout(negotiateTls(raw, target), timeoutMs, undefined, raw, 'TLS negotiation with the target')), raw };
  } catch (err) {
    raw.destroy();
    throw err;
  }
}

async function negotiateTls(raw: Socket, target: TargetConfig): Promise<{ socket: Socket | TLSSocket; tls: boolean }> {
  if (target.sslmode === 'disable') return { socket: raw, tls: false };
  raw.write(serialize.requestSsl());
  const answer = await readSslAnswer(raw);
  if (answer !== 0x53 /* S */) {
    if (target.sslmode === 'prefer') return { socket: raw, tls: false };
    throw new TargetLoginError(`target does not accept TLS (target.sslmode is ${target.sslmode})`, '08004');
  }
  const verify = target.sslmode === 'verify-full';
  const ca = verify && target.ca_file ? readFileSync(target.ca_file) : undefined;
  const socket = tlsConnect({
    socket: raw,
    servername: isIP(target.host) ? undefined : target.host,
    host: target.host,
    ca,
    rejectUnauthorized: verify,
    // without verify-full the certificate is not checked, so do not check its name either
    ...(verify ? {} : { checkServerIdentity: () => undefined }),
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => { socket.off('error', reject); resolve(); });
    socket.once('error', (e) => reject(new TargetLoginError(`TLS to the target failed: ${e.message}`, '08006', e)));
  });
  socket.setNoDelay(true);
  return { socket, tls: true };
}

export async function loginToTarget(opts: LoginOptions): Promise<TargetSession> {
  const ch = await opts.open();
  try {
    return await withTimeout(login(ch, opts), opts.timeoutMs ?? 30_000, opts.signal, ch.raw);
  } catch (err) {
    ch.socket.destroy();
    ch.raw.destroy();
    throw err;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, signal: AbortSignal | undefined, raw: Socket, what = 'target login'): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new TargetLoginError(`${what} timed out after ${ms} ms`, '08006')); raw.destroy(); }, ms);
    const onAbort = () => { reject(new TargetLoginError(String(signal?.reason ?? 'aborted'), '57P01')); raw.destroy(); };
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => { clearTimeout(timer); signal?.removeEventListener('abort', onAbort); });
  });
}

async function login({ socket, tls }: TargetChannel, opts: LoginOptions): Promise<TargetSession> {
  const startup: Array<[string, string]> = [['user', opts.user], ['database', opts.database], ...opts.params];
  socket.write(startupMessage(startup));

  const params: Array<[string, string]> = [];
  const notices: Buffer[] = [];
  let pid = 0;
  let secret = 0;
  let scram: ScramClient | undefined;
  const parser = new Parser();
  const password = (): string => {
    if (!opts.password) throw new TargetLoginError('the target asks for a password but none is configured (target.password_env)', '28P01');
    return opts.password;
  };

  return new Promise<TargetSession>((resolve, reject) => {
    let chain = Promise.resolve();
    let done = false;
    const finish = (err: unknown, value?: TargetSession) => {
      if (done) return;
      done = true;
      // nothing more is due before our first query; pause so no byte is lost until the engine listens
      socket.pause();
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(value!);
    };
    const handle = async (msg: BackendMessage & Record<string, any>) => {
      switch (msg.name) {
        case 'authenticationCleartextPassword':
          socket.write(serialize.password(password()));
          break;
        case 'authenticationMD5Password':
          socket.write(serialize.password(await postgresMd5PasswordHash(opts.user, password(), msg.salt)));
          break;
        case 'authenticationSASL':
          scram = new ScramClient(msg.mechanisms, tls ? socket as TLSSocket : null);
          socket.write(serialize.sendSASLInitialResponseMessage(scram.mechanism, scram.first()));
          break;
        case 'authenticationSASLContinue':
          if (!scram) throw new TargetLoginError('unexpected SASL message from target', '08P01');
          socket.write(serialize.sendSCRAMClientFinalMessage(await scram.final(password(), msg.data)));
          break;
        case 'authenticationSASLFinal':
          if (!scram) throw new TargetLoginError('unexpected SASL message from target', '08P01');
          scram.verify(msg.data);
          break;
        case 'authenticationOk':
          // a server that skips SASLFinal has not proven it knows the password's verifier
          if (scram && !scram.verified) throw new TargetLoginError('the target ended SCRAM authentication without proving its identity', '08P01');
          break;
        case 'parameterStatus':
          params.push([msg.parameterName, msg.parameterValue]);
          break;
        case 'backendKeyData':
          pid = msg.processID;
          secret = msg.secretKey;
          break;
        case 'notice':
          break;
        case 'error':
          throw new TargetLoginError(String(msg.message), String(msg.code ?? '08006'));
        case 'readyForQuery':
          finish(null, { socket, tls, params, pid, secret, txStatus: String(msg.status).charCodeAt(0), notices });
          break;
        default:
          throw new TargetLoginError(`unexpected message "${msg.name}" from target during login`, '08P01');
      }
    };
    const onData = (chunk: Buffer) => {
      try {
        parser.parse(chunk, (msg) => {
          // Auth steps await crypto; keep them in order.
          chain = chain.then(() => (done ? undefined : handle(msg as BackendMessage & Record<string, any>))).catch((e) => finish(toLoginError(e)));
        });
      } catch (e) {
        finish(toLoginError(e));
      }
    };
    const onError = (e: Error) => finish(new TargetLoginError(`connection to the target failed: ${e.message}`, '08006', e));
    const onClose = () => finish(new TargetLoginError('the target closed the connection during login', '08006'));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}

function toLoginError(e: unknown): TargetLoginError {
  if (e instanceof TargetLoginError) return e;
  const m = e instanceof Error ? e.message : String(e);
  return new TargetLoginError(m, '08006', e);
}
