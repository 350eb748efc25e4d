/**
 * Refusing a PostgreSQL client before any target is dialled, so that psql, node-postgres or
 * pgbench print why instead of "server closed the connection unexpectedly": answer its
 * SSLRequest / GSSENCRequest with 'N' (the refusal travels in clear, as a server's own
 * "too many connections" does), read its StartupMessage, send one ErrorResponse (FATAL) and end.
 * Used by the gateway (a connection over a limit) and by `hoopctl connect` (a connection from
 * another local user). Hand-rolled rather than the engine's framer: it reads at most two small
 * untagged packets, and the CLI must not load the gateway's PostgreSQL engine.
 */
import type { Duplex } from 'node:stream';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
/** PostgreSQL's own limit for startup packets */
const MAX_STARTUP = 10_000;
/** a client that says nothing is dropped after this */
const REFUSE_TIMEOUT_MS = 5000;

/** ErrorResponse: severity, SQLSTATE, message */
export function pgErrorResponse(severity: 'ERROR' | 'FATAL', sqlstate: string, message: string): Buffer {
  const fields = [['S', severity], ['V', severity], ['C', sqlstate], ['M', message]] as const;
  const parts: Buffer[] = [];
  for (const [k, v] of fields) parts.push(Buffer.from(k), Buffer.from(v), Buffer.from([0]));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const head = Buffer.allocUnsafe(5);
  head[0] = 0x45; // 'E'
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/**
 * Speaks the start of the protocol on `client` and refuses it with `message` (SQLSTATE
 * `sqlstate`, e.g. 53300 too_many_connections, 28000 invalid_authorization_specification).
 * Resolves once the ErrorResponse is written (or the client went away); the caller closes.
 */
export function refusePostgres(client: Duplex, sqlstate: string, message: string): Promise<void> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      client.off('data', onData);
      resolve();
    };
    const timer = setTimeout(finish, REFUSE_TIMEOUT_MS);
    timer.unref?.();
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (!done && buf.length >= 8) {
        const len = buf.readInt32BE(0);
        if (len < 8 || len > MAX_STARTUP) return finish();
        if (buf.length < len) return;
        const code = buf.readInt32BE(4);
        buf = buf.subarray(len);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) { client.write('N'); continue; }
        // a StartupMessage (or a CancelRequest, which expects no answer: the write is harmless)
        client.write(pgErrorResponse('FATAL', sqlstate, message), () => finish());
        setTimeout(finish, 200).unref?.();
        return;
      }
    };
    client.on('data', onData);
    client.once('close', finish);
    client.once('error', finish);
    client.resume?.();
  });
}
