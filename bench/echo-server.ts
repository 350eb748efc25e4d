/**
 * The target of the `idle` benchmark's tcp connection: echoes bytes back and keeps every socket
 * open until the peer closes, so a tunnelled connection can be proven live (one byte out, the same
 * byte back) and then left idle.
 * usage: node bench/echo-server.ts PORT
 */
import net from 'node:net';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: node bench/echo-server.ts PORT\n');
  process.exit(2);
}
const server = net.createServer({ allowHalfOpen: false, noDelay: true }, (s) => {
  s.on('error', () => {});
  s.pipe(s);
});
server.maxConnections = 20_000;
server.listen(port, '127.0.0.1', () => console.log(`echo 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
