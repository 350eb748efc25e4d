/**
 * A bounded map that forgets the least recently used key. Map keeps insertion order, so the
 * first key is the oldest. A hit re-inserts its key only once the key has drifted into the
 * older half, which keeps hot keys alive while making a hit a single Map lookup most of the
 * time (a delete + set on every hit costs ~80 ns, the whole budget of a cached judge()).
 * Written here because it is a few lines and LRU packages bring options we do not need.
 */
interface Entry<V> {
  value: V;
  seq: number;
}

export class Lru<K, V> {
  readonly #max: number;
  readonly #map = new Map<K, Entry<V>>();
  #seq = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get(key: K): V | undefined {
    const e = this.#map.get(key);
    if (e === undefined) return undefined;
    if (this.#seq - e.seq > this.#max >> 1) {
      this.#map.delete(key);
      e.seq = ++this.#seq;
      this.#map.set(key, e);
    }
    return e.value;
  }

  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, { value, seq: ++this.#seq });
    if (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value as K);
  }

  get size(): number {
    return this.#map.size;
  }
}
