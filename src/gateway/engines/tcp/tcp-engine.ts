/**
 * The `tcp` engine: no protocol knowledge, bytes both ways with half-close and backpressure
 * (stream.pipe pauses the faster side), counting bytes for the session record.
 */
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Engine, EngineContext, EngineFactory } from '../engine.ts';

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
    ctx.record({ type: 'tcp.connected', target: `${ctx.connection.target.host}:${ctx.connection.target.port}` });
    const { stats } = ctx;
    await new Promise<void>((resolve, reject) => {
      let done = 0;
      const finish = () => { if (++done === 2) resolve(); };
      client.on('data', (b: Buffer) => { stats.bytesIn += b.length; });
      target.on('data', (b: Buffer) => { stats.bytesOut += b.length; });
      client.pipe(target).on('finish', finish);
      target.pipe(client);
      target.once('end', finish);
      target.once('error', reject);
      client.once('error', reject);
      client.once('close', () => { if (!target.destroyed) target.destroy(); resolve(); });
      target.once('close', () => { if (!client.destroyed) client.end(); resolve(); });
    });
  }

  terminate(): void {
    this.#target?.destroy();
  }
}

export const tcpEngine: EngineFactory = { type: 'tcp', defaultLocalPort: 0, create: (ctx) => new TcpEngine(ctx) };
