// Copied from shared/perf-baseline/server-relay.js (the performance anchors' baseline definition, reference run
// summary-2026-11-22.md), unchanged but for this header; .cjs because the project is "type": "module".
'use strict';
// WebSocket -> TCP server relay (one TCP connection per accepted WebSocket).
// usage: node server-relay.js LISTEN_PORT TARGET_HOST TARGET_PORT   e.g. 56010 127.0.0.1 55432
// Binds 127.0.0.1 only. Binary frames, no compression, TCP_NODELAY on both sockets,
// backpressure in both directions.
const net = require('net');
const { WebSocketServer } = require('ws');

const [listenPort, host, port] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
const HWM = 1 << 20; // pause TCP reads when >1 MiB queued towards the WebSocket
let mask = 'js'; // ws uses the optional native bufferutil addon unless WS_NO_BUFFER_UTIL is set
if (!process.env.WS_NO_BUFFER_UTIL) { try { require.resolve('bufferutil'); mask = 'bufferutil'; } catch (e) { /* js */ } }

const wss = new WebSocketServer({ host: '127.0.0.1', port: listenPort, perMessageDeflate: false,
  skipUTF8Validation: true, maxPayload: 0 });
wss.on('connection', (ws, req) => {
  req.socket.setNoDelay(true);
  const sock = net.connect({ host, port, noDelay: true });
  sock.setNoDelay(true);
  let pending = 0, wsPaused = false;
  const done = () => { sock.destroy(); ws.terminate(); };
  // WebSocket -> TCP (writes before 'connect' are queued by net.Socket)
  ws.on('message', (d) => {
    if (!sock.write(d) && !wsPaused) {
      wsPaused = true; ws.pause();
      sock.once('drain', () => { wsPaused = false; ws.resume(); });
    }
  });
  // TCP -> WebSocket
  sock.on('data', (d) => {
    pending += d.length;
    ws.send(d, { binary: true }, () => {
      pending -= d.length;
      if (pending < HWM && sock.isPaused()) sock.resume();
    });
    if (pending >= HWM) sock.pause();
  });
  ws.on('close', () => sock.end());
  ws.on('error', done);
  sock.on('end', () => ws.close());
  sock.on('error', done);
  sock.on('close', () => { if (ws.readyState === 1) ws.close(); else ws.terminate(); });
});
wss.on('listening', () => console.log(`server-relay ws://127.0.0.1:${listenPort}/ -> ${host}:${port} (masking: ${mask})`));
