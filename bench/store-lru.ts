// The store's LRU cache under a stream of keys it has never seen (an import, a spam run):
// every access misses and evicts. Prints the time of a cache as large as the default against
// a tiny one; the ratio should stay near 1 (eviction must not cost O(cache size)).
//   node dist/bench/store-lru.js [N=300000]
import { Importer } from '../src/admin/ops.js';
import { type SaveRecord } from '../src/savefile.js';
import { settingsFrom } from '../src/policy.js';
import { Store } from '../src/store/leveldb.js';
import { removeDir, tempDir } from '../test/helpers.js';

const N = Number(process.argv[2] ?? 300_000);

async function run(cacheSize: number): Promise<number[]> {
  const dir = tempDir('qgreyd-lru-');
  const store = await Store.open(dir, { cacheSize });
  const now = Math.floor(Date.now() / 1000);
  const ctx = { store, settings: settingsFrom(7, 12, 5), clock: () => now, exclusive: <T>(fn: () => Promise<T>) => fn(), write: (ops: ReadonlyArray<readonly [string, number | null]>) => store.write(ops) };
  const times: number[] = [];
  try {
    // pass 0 writes every record, pass 1 only reads them (all kept)
    for (let pass = 0; pass < 2; pass++) {
      const imp = new Importer(ctx);
      const t = process.hrtime.bigint();
      for (let b = 0; b < N; b += 2000) {
        const batch: SaveRecord[] = [];
        for (let i = b; i < Math.min(N, b + 2000); i++) {
          batch.push({ kind: 'triplet', ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, sender: `s${i}@e.com`, rcpt: 'r@e.org', time: now - 100 });
        }
        await imp.add(batch);
      }
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  } finally {
    await store.close();
    removeDir(dir);
  }
  return times;
}

const small = await run(1000);
const large = await run(100_000);
console.log(`N=${N} new keys; ms for write pass / read pass`);
console.log(`cache   1000: ${small.map((t) => t.toFixed(0)).join(' / ')}`);
console.log(`cache 100000: ${large.map((t) => t.toFixed(0)).join(' / ')}`);
console.log(`ratio large/small: ${(large[0] / small[0]).toFixed(2)} / ${(large[1] / small[1]).toFixed(2)}`);
