/**
 * Opens COUNT TCP connections to 127.0.0.1:PORT (at most CONCURRENCY handshakes in flight), proves
 * each one live end to end (one byte out, the same byte echoed back through the tunnel), then keeps
 * them all open and idle. Prints `open N in MS ms` once all are up, holds until SIGINT/SIGTERM (or
 * HOLD_S seconds at most), closes them and prints `closed`. Exits 1 if any connection failed.
 * usage: node bench/idle-conns.ts PORT [COUNT=1000] [CONCURRENCY=50] [HOLD_S=120]
 */
import net from 'node:net';

const [port, count = 1000, concurrency = 50, holdS = 120] = process.argv.slice(2).map(Number);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: node bench/idle-conns.ts PORT [COUNT] [CONCURRENCY] [HOLD_S]\n');
  process.exit(2);
}

const PROBE_TIMEOUT_MS = 15_000;
const sockets: net.Socket[] = [];
let failed = 0;

function openOne(): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    const timer = setTimeout(() => fail(new Error('no echo within 15 s')), PROBE_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      if (failed++ < 5) process.stderr.write(`connection failed: ${err.message}\n`);
      s.destroy();
      resolve();
    };
    s.once('error', fail);
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      clearTimeout(timer);
      s.removeListener('error', fail);
      s.on('error', () => {});
      sockets.push(s);
      resolve();
    });
  });
}

const t0 = performance.now();
let next = 0;
async function worker(): Promise<void> {
  while (next < count) {
    next++;
    await openOne();
  }
}
await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
console.log(`open ${sockets.length} in ${(performance.now() - t0).toFixed(0)} ms (failed ${failed})`);

await new Promise<void>((resolve) => {
  const t = setTimeout(resolve, holdS * 1000);
  const stop = () => { clearTimeout(t); resolve(); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
});
await Promise.all(sockets.map((s) => new Promise<void>((resolve) => {
  if (s.destroyed) return resolve();
  s.once('close', () => resolve());
  s.end();
  setTimeout(() => { s.destroy(); resolve(); }, 5_000).unref();
})));
console.log('closed');
process.exit(failed > 0 ? 1 : 0);
