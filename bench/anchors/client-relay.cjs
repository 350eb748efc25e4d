// Copied from shared/perf-baseline/client-relay.js (the performance anchors' baseline definition, reference run
// summary-2026-11-22.md), unchanged but for this header; .cjs because the project is "type": "module".
'use strict';
// TCP -> WebSocket client relay (one WebSocket per accepted TCP connection).
// usage: node client-relay.js LISTEN_PORT WS_URL      e.g. 56001 ws://127.0.0.1:56000/
// Binds 127.0.0.1 only. Binary frames, no compression, TCP_NODELAY on both sockets,
// backpressure in both directions.
const net = require('net');
const WebSocket = require('ws');

const listenPort = Number(process.argv[2]);
const url = process.argv[3];
const HWM = 1 << 20; // pause TCP reads when >1 MiB queued towards the WebSocket
let mask = 'js'; // ws uses the optional native bufferutil addon unless WS_NO_BUFFER_UTIL is set
if (!process.env.WS_NO_BUFFER_UTIL) { try { require.resolve('bufferutil'); mask = 'bufferutil'; } catch (e) { /* js */ } }

const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (sock) => {
  sock.setNoDelay(true);
  const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true, maxPayload: 0 });
  let pending = 0, wsPaused = false;
  const done = () => { sock.destroy(); ws.terminate(); };
  ws.on('open', () => {
    ws._socket.setNoDelay(true);
    sock.on('data', (d) => {
      pending += d.length;
      ws.send(d, { binary: true }, () => {
        pending -= d.length;
        if (pending < HWM && sock.isPaused()) sock.resume();
      });
      if (pending >= HWM) sock.pause();
    });
    sock.resume();
  });
  ws.on('message', (d) => {
    if (!sock.write(d) && !wsPaused) {
      wsPaused = true; ws.pause();
      sock.once('drain', () => { wsPaused = false; ws.resume(); });
    }
  });
  ws.on('close', () => sock.end());
  ws.on('error', done);
  sock.on('end', () => ws.close());
  sock.on('error', done);
  sock.on('close', () => { if (ws.readyState === WebSocket.OPEN) ws.close(); else ws.terminate(); });
});
server.listen(listenPort, '127.0.0.1', () => console.log(`client-relay 127.0.0.1:${listenPort} -> ${url} (masking: ${mask})`));
