/**
 * Terminal recording for one channel, as asciicast v2 wants it: output as UTF-8 text (a
 * multi-byte character split across chunks is kept whole), coalesced for COALESCE_MS so a busy
 * screen is tens of events a second, not one per packet; input likewise when
 * `recording.input` is on; a resize flushes pending output first so the order stays true.
 *
 * Event shapes (`ch` is the channel number within the SSH connection):
 *   term.output { ch, data, err? }   term.input { ch, data }   term.resize { ch, cols, rows }
 * A channel without a pty (exec) records at most `cap` bytes of output, then term.truncated.
 */
import { StringDecoder } from 'node:string_decoder';
import type { RecordEvent } from '../engine.ts';

export const COALESCE_MS = 20;
const MAX_EVENT_CHARS = 64 * 1024;

class Stream {
  readonly #dec = new StringDecoder('utf8');
  #buf = '';
  readonly #type: string;
  readonly #extra: Record<string, unknown>;
  constructor(type: string, extra: Record<string, unknown>) {
    this.#type = type;
    this.#extra = extra;
  }
  add(b: Buffer): boolean {
    this.#buf += this.#dec.write(b);
    return this.#buf.length >= MAX_EVENT_CHARS;
  }
  flush(record: (e: RecordEvent) => void): void {
    if (!this.#buf) return;
    record({ type: this.#type, ...this.#extra, data: this.#buf });
    this.#buf = '';
  }
  end(record: (e: RecordEvent) => void): void {
    this.#buf += this.#dec.end();
    this.flush(record);
  }
}

export class TermTap {
  readonly #record: (e: RecordEvent) => void;
  readonly #out: Stream;
  readonly #err: Stream;
  readonly #in: Stream | undefined;
  readonly #ch: number;
  #timer: NodeJS.Timeout | undefined;
  #left: number;
  #truncated = false;
  readonly #onTimer = () => { this.#timer = undefined; this.flush(); };

  constructor(record: (e: RecordEvent) => void, ch: number, opts: { input: boolean; cap: number }) {
    this.#record = record;
    this.#ch = ch;
    this.#out = new Stream('term.output', { ch });
    this.#err = new Stream('term.output', { ch, err: true });
    this.#in = opts.input ? new Stream('term.input', { ch }) : undefined;
    this.#left = opts.cap;
  }

  output(b: Buffer, err = false): void {
    if (this.#left <= 0) {
      if (!this.#truncated) { this.#truncated = true; this.flush(); this.#record({ type: 'term.truncated', ch: this.#ch }); }
      return;
    }
    if (b.length > this.#left) b = b.subarray(0, this.#left);
    this.#left -= b.length;
    // stderr and stdout interleave on a terminal: keep their order by flushing the other one
    (err ? this.#out : this.#err).flush(this.#record);
    if ((err ? this.#err : this.#out).add(b)) this.flush();
    else this.#arm();
  }

  input(b: Buffer): void {
    if (!this.#in) return;
    this.#out.flush(this.#record);
    this.#err.flush(this.#record);
    if (this.#in.add(b)) this.flush();
    else this.#arm();
  }

  resize(cols: number, rows: number): void {
    this.flush();
    this.#record({ type: 'term.resize', ch: this.#ch, cols, rows });
  }

  flush(): void {
    if (this.#timer) { clearTimeout(this.#timer); this.#timer = undefined; }
    this.#in?.flush(this.#record);
    this.#out.flush(this.#record);
    this.#err.flush(this.#record);
  }

  end(): void {
    if (this.#timer) { clearTimeout(this.#timer); this.#timer = undefined; }
    this.#in?.end(this.#record);
    this.#out.end(this.#record);
    this.#err.end(this.#record);
  }

  #arm(): void {
    if (!this.#timer) {
      this.#timer = setTimeout(this.#onTimer, COALESCE_MS);
      this.#timer.unref();
    }
  }
}
