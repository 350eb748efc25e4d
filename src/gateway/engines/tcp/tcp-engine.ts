/**
 * The `tcp` engine: no protocol knowledge, bytes both ways with half-close and backpressure,
 * counting bytes for the session row. Nothing is recorded per session: the session row (bytes,
 * times, close reason) and the audit events say all there is to say about an opaque byte stream.
 *
 * A tunnel stream that can bridge (src/shared/ws-duplex.ts) is wired straight to the target
 * socket, with no stream machinery in between; any other Duplex is piped.
 */
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Engine, EngineContext, EngineFactory } from '../engine.ts';
import type { WsDuplex } from '../../../shared/ws-duplex.ts';

class TcpEngine implements Engine {
  readonly #ctx: EngineContext;
  #target: Socket | undefined;
  constructor(ctx: EngineContext) {
    this.#ctx = ctx;
  }

  async handle(client: Duplex): Promise<void> {
    const ctx = this.#ctx;
    const target = (this.#target = await ctx.dialTarget());
    if (client.destroyed) {
      // the client went away while we dialled
      target.destroy();
      return;
    }
    const { stats } = ctx;
    if (typeof (client as WsDuplex).bridge === 'function') {
      return (client as WsDuplex).bridge(target, {
        fromTunnel: (n) => { stats.bytesIn += n; },
        fromSocket: (n) => { stats.bytesOut += n; },
      });
    }
    await new Promise<void>((resolve, reject) => {
      client.on('data', (b: Buffer) => { stats.bytesIn += b.length; });
      target.on('data', (b: Buffer) => { stats.bytesOut += b.length; });
      client.pipe(target);
      target.pipe(client);
      target.once('error', reject);
      client.once('error', reject);
      // done when both sides are closed: resolving on the target's 'end' could cut off what the pipe
      // still holds for the client
      client.once('close', () => { if (!target.destroyed) target.destroy(); resolve(); });
      target.once('close', () => {
        if (client.destroyed || client.writableFinished) return resolve();
        client.once('finish', resolve);
        client.end();
      });
    });
  }

  terminate(): void {
    this.#target?.destroy();
  }
}

export const tcpEngine: EngineFactory = { type: 'tcp', create: (ctx) => new TcpEngine(ctx) };
