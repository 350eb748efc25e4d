/** Small real TCP peers for tunnel tests: an echo server and a hashing client. */
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

export async function echoServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); s.pipe(s); });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: () => new Promise((r) => { for (const s of sockets) s.destroy(); srv.close(() => r()); }),
  };
}

/**
 * Sends `total` random bytes through host:port and hashes what comes back (an echo on the far
 * side makes it both directions at once); resolves with both hashes and the byte counts.
 */
export function pumpThrough(port: number, total: number): Promise<{ sent: string; received: string; sentBytes: number; receivedBytes: number }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const hs = createHash('sha256');
    const hr = createHash('sha256');
    let sentBytes = 0;
    let receivedBytes = 0;
    const chunk = 256 * 1024;
    const write = () => {
      while (sentBytes < total) {
        const b = randomBytes(Math.min(chunk, total - sentBytes));
        hs.update(b);
        sentBytes += b.length;
        if (!s.write(b)) return s.once('drain', write);
      }
      s.end();
    };
    s.on('connect', write);
    s.on('data', (d: Buffer) => { hr.update(d); receivedBytes += d.length; });
    s.on('end', () => resolve({ sent: hs.digest('hex'), received: hr.digest('hex'), sentBytes, receivedBytes }));
    s.on('error', reject);
  });
}

/** Opens a TCP connection and resolves when it closes, with how long it stayed open. */
export function holdOpen(port: number): Promise<{ socket: net.Socket; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => {});
    s.once('connect', () => {
      s.resume(); // read to EOF, or a paused socket never notices the close
      const closed = new Promise<number>((r) => s.once('close', () => r(Date.now())));
      resolve({ socket: s, closed });
    });
    s.once('error', reject);
  });
}
