/**
 * Collects what one input chunk produces for one peer and writes it at once. Consecutive views of
 * the same chunk merge back into one range, so an unchanged chunk is written as the very Buffer
 * that was read (no copy, one write). Small mixed batches are concatenated into one write; large
 * ones go out corked so Node uses writev without copying.
 */
/** where an Outbox writes: a socket, or the tunnel's link (engine.ts clientLink) */
export interface Sink {
  write(b: Buffer): boolean;
  cork(): void;
  uncork(): void;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
}

const CONCAT_LIMIT = 64 * 1024;

export class Outbox {
  private segs: Buffer[] = [];
  private bytes = 0;
  private buf: Buffer | null = null;
  private s = 0;
  private e = 0;

  /** Queues `buf[start, end)` by reference. */
  range(buf: Buffer, start: number, end: number): void {
    if (buf === this.buf && start === this.e) { this.e = end; return; }
    this.cut();
    this.buf = buf;
    this.s = start;
    this.e = end;
  }

  push(b: Buffer): void {
    this.cut();
    this.segs.push(b);
    this.bytes += b.length;
  }

  get pending(): number {
    return this.bytes + (this.buf ? this.e - this.s : 0);
  }

  private cut(): void {
    const b = this.buf;
    if (!b) return;
    const seg = this.s === 0 && this.e === b.length ? b : b.subarray(this.s, this.e);
    this.segs.push(seg);
    this.bytes += seg.length;
    this.buf = null;
  }

  /** Writes everything queued; returns the number of bytes written and whether the stream wants more. */
  flush(stream: Sink): { bytes: number; ok: boolean } {
    this.cut();
    const segs = this.segs;
    const bytes = this.bytes;
    if (segs.length === 0) return { bytes: 0, ok: true };
    this.segs = [];
    this.bytes = 0;
    if (stream.destroyed || stream.writableEnded) return { bytes: 0, ok: true };
    let ok: boolean;
    if (segs.length === 1) ok = stream.write(segs[0]);
    else if (bytes <= CONCAT_LIMIT) ok = stream.write(Buffer.concat(segs, bytes));
    else {
      stream.cork();
      ok = true;
      for (const s of segs) ok = stream.write(s);
      stream.uncork();
    }
    return { bytes, ok };
  }

  clear(): void {
    this.segs = [];
    this.bytes = 0;
    this.buf = null;
  }
}
