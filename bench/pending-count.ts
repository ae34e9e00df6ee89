// What --max-pending costs at start-up: the scan that rebuilds the per-network counts, on a
// store of N triplets spread over networks of 1..200 triplets. A measurement, not a test:
//   node dist/bench/pending-count.js [triplets=500000]
import { join } from 'node:path';
import { PendingCounts } from '../src/pending.js';
import { Store, TRIPLET_PREFIX, tripletDbKey } from '../src/store/leveldb.js';
import { removeDir, tempDir } from '../test/helpers.js';

const n = Number(process.argv[2]) || 500_000;
const dir = tempDir('qgreyd-bench-');
try {
  const store = await Store.open(join(dir, 'state'));
  const now = Math.floor(Date.now() / 1000);
  const t0 = performance.now();
  for (let i = 0; i < n; i += 10_000) {
    const ops: Array<[string, number]> = [];
    for (let j = i; j < Math.min(n, i + 10_000); j++) {
      const net = `10.${(j >> 16) & 255}.${(j >> 8) & 255}.0/24`;
      ops.push([tripletDbKey(`${net} sender${j}@bulk.example rcpt${j % 97}@here.example`), now]);
    }
    await store.write(ops);
  }
  const filled = performance.now() - t0;
  await store.close();

  const reopened = await Store.open(join(dir, 'state'));
  const heap0 = process.memoryUsage().heapUsed;
  const t1 = performance.now();
  const counts = new PendingCounts();
  const counted = await counts.count(reopened.scan(TRIPLET_PREFIX, { chunk: 5000 }), TRIPLET_PREFIX);
  const ms = performance.now() - t1;
  const heapMb = (process.memoryUsage().heapUsed - heap0) / 1048576;
  // per request: one Map lookup by the client key
  const keys = Array.from({ length: 1_000_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.0/24`);
  const t2 = performance.now();
  let sum = 0;
  for (const k of keys) sum += counts.get(k);
  const lookupNs = ((performance.now() - t2) * 1e6) / keys.length;
  await reopened.close();
  console.log(
    `filled ${n} triplets in ${(filled / 1000).toFixed(1)} s; start-up count: ${counted} triplets, ${counts.networks} networks in ${ms.toFixed(0)} ms ` +
      `(${((ms * 1000) / counted).toFixed(2)} us per record), heap +${heapMb.toFixed(1)} MB; lookup ${lookupNs.toFixed(0)} ns (checksum ${sum})`,
  );
} finally {
  removeDir(dir);
}
