/**
 * Writes behind the data path, in batches: items wait in memory for at most `ms` (or until `max`
 * are queued) and are then written together, in order, by one call (one store transaction):
 * a tunnelled connection does not wait for the store, and a burst of connections costs one
 * transaction per batch instead of one per row (an autocommit in SQLite's WAL mode writes
 * every page it touches: ~80 µs per session row, bench/RESULTS.md connsetup).
 * With `key`, a later item replaces a queued one with the same key (a row's newest state).
 * Crash window: a gateway crash loses at most the last `ms` of items; `flush()` (called on
 * shutdown) writes everything queued.
 */
export interface BatcherOptions<T> {
  ms: number;
  max: number;
  /** items with the same key collapse to the latest */
  key?: (item: T) => string;
}

export class WriteBatcher<T> {
  readonly #write: (items: T[]) => Promise<void>;
  readonly #onError: (err: unknown, items: T[]) => void;
  readonly #opts: BatcherOptions<T>;
  #list: T[] = [];
  #byKey = new Map<string, T>();
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  readonly #onTimer = () => { this.#timer = undefined; void this.flush(); };

  constructor(write: (items: T[]) => Promise<void>, onError: (err: unknown, items: T[]) => void, opts: BatcherOptions<T>) {
    this.#write = write;
    this.#onError = onError;
    this.#opts = opts;
  }

  add(item: T): void {
    const key = this.#opts.key;
    let size: number;
    if (key) {
      const k = key(item);
      this.#byKey.delete(k); // re-inserted last: rows are written in the order of their last change
      size = this.#byKey.set(k, item).size;
    } else size = this.#list.push(item);
    if (size >= this.#opts.max) void this.flush();
    else if (!this.#timer) {
      this.#timer = setTimeout(this.#onTimer, this.#opts.ms);
      this.#timer.unref();
    }
  }

  /** Writes everything queued; resolves when all items added so far are written (or failed). */
  flush(): Promise<void> {
    if (this.#timer) { clearTimeout(this.#timer); this.#timer = undefined; }
    let batch: T[];
    if (this.#opts.key) {
      batch = [...this.#byKey.values()];
      this.#byKey = new Map();
    } else {
      batch = this.#list;
      this.#list = [];
    }
    if (!batch.length) return this.#writing;
    this.#writing = this.#writing.then(() => this.#write(batch).catch((err) => this.#onError(err, batch)));
    return this.#writing;
  }
}
