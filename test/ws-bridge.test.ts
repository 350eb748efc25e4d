/**
 * The tunnel's socket bridge (src/shared/ws-duplex.ts `bridge`) on its own, with real sockets and
 * a real WebSocket pair: half-close both ways, bytes that arrive before the bridge is attached,
 * and an application close code reaching the other end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { WebSocketServer, WebSocket } from 'ws';
import { wsDuplex, TunnelClosed, CloseCode, type WsDuplex } from '../src/shared/ws-duplex.ts';

/** A target that reads until FIN, then answers with the sha256 of what it got and closes. */
async function hashingTarget(): Promise<{ port: number; close(): Promise<void> }> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    const h = createHash('sha256');
    s.on('data', (d) => h.update(d));
    s.on('end', () => s.end(h.digest('hex')));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => new Promise((r) => srv.close(() => r())) };
}

/**
 * client socket → [local listener + bridge over ws client] → ws → [ws server + bridge] → target.
 * `delayMs` holds the server-side bridge back, as the gateway does while it dials the target.
 */
async function tunnel(targetPort: number, delayMs = 0) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const serverSide: Array<{ stream: WsDuplex; done: Promise<unknown> }> = [];
  wss.on('connection', (ws) => {
    const stream = wsDuplex(ws);
    const done = new Promise((r) => setTimeout(r, delayMs)).then(() => {
      const target = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
      return stream.bridge(target).then(() => 'ok', (e: Error) => e);
    });
    serverSide.push({ stream, done });
  });
  const url = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`;
  const clientSide: Array<Promise<unknown>> = [];
  const local = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once('open', () => clientSide.push(wsDuplex(ws).bridge(s).then(() => 'ok', (e: Error) => e)));
  });
  await new Promise<void>((r) => local.listen(0, '127.0.0.1', r));
  return {
    port: (local.address() as net.AddressInfo).port, serverSide, clientSide,
    close: async () => { local.close(); wss.close(); },
  };
}

function sendAndHash(port: number, total: number): Promise<{ sent: string; answer: string; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const h = createHash('sha256');
    let answer = '';
    let sent = 0;
    const write = () => {
      while (sent < total) {
        const b = randomBytes(Math.min(100_000, total - sent));
        h.update(b);
        sent += b.length;
        if (!s.write(b)) return void s.once('drain', write);
      }
      s.end(); // half-close: the answer must still arrive
    };
    s.on('connect', write);
    s.on('data', (d) => { answer += d; });
    s.on('end', () => resolve({ sent: h.digest('hex'), answer, ended: true }));
    s.on('error', reject);
  });
}

test('half-close both ways: the target answers after our FIN, the answer and its FIN come back', async () => {
  const target = await hashingTarget();
  const t = await tunnel(target.port);
  try {
    const r = await sendAndHash(t.port, 20 * 1024 * 1024);
    assert.equal(r.answer, r.sent);
    assert.deepEqual(await Promise.all(t.clientSide), ['ok']);
    assert.deepEqual(await Promise.all(t.serverSide.map((x) => x.done)), ['ok']);
  } finally {
    await t.close();
    await target.close();
  }
});

test('bytes (and the FIN) that arrive before the bridge is attached are relayed first, in order', async () => {
  const target = await hashingTarget();
  const t = await tunnel(target.port, 300);
  try {
    const started = Date.now();
    // 256 KB: more than the target socket buffers while it connects, so the bridge starts out
    // holding the WebSocket for 'drain' — which an ending socket never emits (regression: the
    // close handshake then waited for ws's 30 s timeout)
    const r = await sendAndHash(t.port, 256 * 1024); // all sent and ended long before the bridge exists
    assert.equal(r.answer, r.sent);
    assert.deepEqual(await Promise.all(t.clientSide), ['ok']);
    assert.deepEqual(await Promise.all(t.serverSide.map((x) => x.done)), ['ok']);
    await new Promise((res) => (t.serverSide[0].stream.destroyed ? res(null) : t.serverSide[0].stream.once('close', res)));
    assert.ok(Date.now() - started < 5000, `tunnel took ${Date.now() - started} ms to close`);
  } finally {
    await t.close();
    await target.close();
  }
});

test('an application close code (lease expired) reaches the other bridge as TunnelClosed and resets its socket', async () => {
  const target = net.createServer((s) => s.on('error', () => {}));
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
  const t = await tunnel((target.address() as net.AddressInfo).port);
  try {
    const s = net.connect({ port: t.port, host: '127.0.0.1' });
    s.on('error', () => {});
    const closed = new Promise((r) => s.once('close', r));
    s.write('hello');
    for (let i = 0; i < 100 && t.serverSide.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    t.serverSide[0].stream.closeWith(CloseCode.leaseExpired, 'lease expired');
    await closed;
    for (let i = 0; i < 100 && t.clientSide.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const err = await t.clientSide[0];
    assert.ok(err instanceof TunnelClosed, String(err));
    assert.equal(err.code, CloseCode.leaseExpired);
    assert.equal(err.reason, 'lease expired');
  } finally {
    await t.close();
    target.close();
  }
});

/**
 * The multiplexed tunnel with each way of writing frames: through ws's Sender with random masks
 * (a gateway that is neither on loopback nor behind TLS), and straight to the socket with an
 * all-zero key. Several streams at once, each bridged to the hashing target, with half-close.
 */
for (const writer of ['ws', 'zero-mask'] as const) {
  test(`multiplexed streams (client frames written by ${writer}) arrive intact, each with its FIN`, async () => {
    const { MuxChannel, MUX_PROTOCOL } = await import('../src/shared/mux.ts');
    const target = await hashingTarget();
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, handleProtocols: () => MUX_PROTOCOL });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (ws) => {
      new MuxChannel(ws, {
        writer: 'server',
        onOpen: (s) => {
          const stream = wsDuplex(s as unknown as WebSocket);
          void stream.bridge(net.connect({ port: target.port, host: '127.0.0.1', allowHalfOpen: true })).catch(() => {});
        },
      });
    });
    const opts: ConstructorParameters<typeof WebSocket>[2] = { perMessageDeflate: false };
    if (writer === 'zero-mask') opts.generateMask = (m: Buffer) => { m.fill(0); };
    const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`, [MUX_PROTOCOL], opts);
    await new Promise((r) => ws.once('open', r));
    const ch = new MuxChannel(ws, { writer });
    try {
      const sizes = [0, 1, 70_000, 3 * 1024 * 1024];
      const results = await Promise.all(sizes.map(async (n) => {
        const data = randomBytes(n);
        // a local socket pair: what the client writes goes through the stream to the target
        const srv = net.createServer({ allowHalfOpen: true }, (local) => {
          void wsDuplex(ch.open() as unknown as WebSocket).bridge(local).catch(() => {});
        });
        await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
        const c = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
        let answer = '';
        c.on('data', (d) => { answer += d; });
        const ended = new Promise((r) => c.once('end', r));
        c.end(data);
        await ended;
        srv.close();
        return [answer, createHash('sha256').update(data).digest('hex')];
      }));
      for (const [got, want] of results) assert.equal(got, want);
    } finally {
      ws.terminate();
      wss.close();
      await target.close();
    }
  });
}
