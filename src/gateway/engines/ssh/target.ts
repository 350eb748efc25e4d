/**
 * The gateway's login to the target: an ssh2 Client over the socket `ctx.dialTarget()` opened,
 * with the connection's private key (and passphrase) or password, which never leave the gateway.
 * The target's host key is checked during key exchange, before any credential is sent:
 * against `target.host_key` when set, else against the key pinned on first use (stored by
 * `ctx.pinHostKey`, with a warning in the log and the audit). A mismatch fails closed.
 */
import ssh2, { type Client } from 'ssh2';
import type { EngineContext } from '../engine.ts';
import { parseHostKeySpec, matches, fingerprint, keyLine, hostKeyAlgorithms, blobType } from './host-key.ts';

export class TargetLoginError extends Error {}

const READY_TIMEOUT_MS = 20_000;

export async function connectTarget(ctx: EngineContext): Promise<Client> {
  const t = ctx.connection.target;
  const where = `${t.host}:${t.port}`;
  const spec = t.host_key ? parseHostKeySpec(t.host_key) : undefined;
  const sock = await ctx.dialTarget();
  let refused: string | undefined;

  const verify = async (blob: Buffer): Promise<boolean> => {
    const fp = fingerprint(blob);
    if (spec) {
      if (matches(spec, blob)) return true;
      refused = `the host key of target ${where} does not match target.host_key of connection "${ctx.connection.name}": ` +
        `it presented ${blobType(blob)} ${fp}, the configuration expects ${spec.sha256 ? `SHA256:${spec.sha256}` : `${spec.type} ${fingerprint(spec.blob!)}`}. ` +
        'Refusing to log in (a machine in the middle, or the target was reinstalled: then update target.host_key)';
    } else if (!ctx.pinHostKey) {
      refused = `connection "${ctx.connection.name}" sets no target.host_key and this gateway has nowhere to pin one: refusing to log in to an unverified host`;
    } else {
      const line = keyLine(blob);
      const pin = await ctx.pinHostKey(line);
      if (pin.key === line) {
        if (pin.first) {
          ctx.log.warn({ target: where, fingerprint: fp }, 'ssh target host key pinned on first use: set target.host_key to verify it from the start');
          ctx.audit('host_key.pinned', { target: where, fingerprint: fp, key: line });
        }
        return true;
      }
      const pinned = parseHostKeySpec(pin.key);
      refused = `the host key of target ${where} changed since it was pinned on first use: it presented ${blobType(blob)} ${fp}, ` +
        `the gateway pinned ${pinned.type} ${pinned.blob ? fingerprint(pinned.blob) : '?'}. Refusing to log in (if the target was reinstalled, ` +
        'set target.host_key of the connection to its new key)';
    }
    ctx.log.error({ target: where, fingerprint: fp }, refused);
    ctx.audit('host_key.rejected', { target: where, fingerprint: fp });
    return false;
  };

  const client = new ssh2.Client();
  return new Promise<Client>((resolve, reject) => {
    let done = false;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      client.end();
      sock.destroy();
      reject(err);
    };
    client.once('ready', () => {
      done = true;
      client.removeAllListeners('error');
      client.on('error', (err) => ctx.log.info({ err: err.message }, 'ssh target connection error'));
      resolve(client);
    });
    client.on('error', (err: Error & { level?: string }) => {
      if (refused) return fail(new TargetLoginError(refused));
      if (err.level === 'client-authentication') {
        return fail(new TargetLoginError(`the target ${where} refused the gateway's login as "${t.user}" with ${t.private_key_file ? `the key of target.private_key_file (is its public key in ~${t.user}/.ssh/authorized_keys?)` : 'the password of target.password_env'}`));
      }
      fail(new TargetLoginError(`ssh login to target ${where} failed: ${err.message}`));
    });
    client.once('close', () => fail(new TargetLoginError(refused ?? `the target ${where} closed the connection during the ssh handshake`)));
    const serverHostKey = hostKeyAlgorithms(spec?.type);
    client.connect({
      sock,
      username: t.user,
      ...(ctx.secret.privateKey ? { privateKey: ctx.secret.privateKey, passphrase: ctx.secret.passphrase } : { password: ctx.secret.password }),
      tryKeyboard: false,
      readyTimeout: READY_TIMEOUT_MS,
      keepaliveInterval: 30_000,
      // ciphers: ssh2's default order (AES-GCM first) costs the least gateway CPU per byte of the
      // three measured (bench/RESULTS.md, "ssh"); the target's sshd follows the client's order
      ...(serverHostKey ? { algorithms: { serverHostKey: serverHostKey as never } } : {}),
      hostVerifier: (key: Buffer, cb: (ok: boolean) => void) => {
        verify(key).then(cb, (err: Error) => { refused = `cannot check the target's host key: ${err.message}`; cb(false); });
      },
    });
  });
}

