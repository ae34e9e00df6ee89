// A bounded cache with O(1) work per operation: two generations of Maps. New and recently
// used entries go into the young generation; when it holds half the capacity it becomes the
// old one and the previous old generation is dropped whole. A hit in the old generation
// copies the entry back into the young one, so what is used stays. This approximates LRU
// without the per-hit delete+set of a Map-ordered LRU, whose eviction (the first key in
// insertion order) must skip every deleted slot left at the front of V8's hash table and
// showed up as the daemon's hottest line under load (see "Performance" in the README).

export class RecentCache<V> {
  private young = new Map<string, V>();
  private old = new Map<string, V>();
  private readonly half: number;

  /** capacity: the most entries held (both generations together) */
  constructor(capacity: number) {
    this.half = Math.max(1, Math.floor(capacity / 2));
  }

  get(key: string): V | undefined {
    const v = this.young.get(key);
    if (v !== undefined) return v;
    const o = this.old.get(key);
    if (o !== undefined) this.set(key, o);
    return o;
  }

  set(key: string, v: V): void {
    this.young.set(key, v);
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
  }

  delete(key: string): void {
    this.young.delete(key);
    this.old.delete(key);
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
  }

  /** entries held; a key present in both generations counts twice */
  get size(): number {
    return this.young.size + this.old.size;
  }
}
