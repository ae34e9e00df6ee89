// bench fill: write N triplets (and the known-good half of the hot set) into a qgreyd state
// directory, fast, in the store's own format: Store.open (format record, checks) and
// Store.write (level batch API, msgpack times), in large batches.
//
//   node dist/bench/fill.js --dir DIR [--count N] [--dead] [--known-good K] [--grey-hours 12]
//
// Live triplets are 10 minutes to 5 hours old, so with the default -m/-g a retry passes.
// --dead makes them older than the grey window, so the expiry sweep deletes all of them.
import { pathToFileURL } from 'node:url';
import minimist from 'minimist';
import { ipKey, Store, tripletDbKey } from '../src/store/leveldb.js';
import { tripletKey } from '../src/policy.js';
import { hotIp, MAX_STORED, tripletFor } from './workload.js';

export interface FillOptions {
  dir: string;
  count: number;
  dead: boolean;
  knownGood: number;
  greyHours: number;
  now?: number;
}

export async function fill(o: FillOptions): Promise<{ records: number; ms: number }> {
  if (o.count > MAX_STORED) throw new Error(`--count ${o.count}: at most ${MAX_STORED} distinct triplets`);
  const started = Date.now();
  const now = o.now ?? Math.floor(Date.now() / 1000);
  const store = await Store.open(o.dir, { cacheSize: 1 });
  let records = 0;
  try {
    const BATCH = 20_000;
    let ops: Array<[string, number]> = [];
    const flush = async () => {
      await store.write(ops);
      records += ops.length;
      ops = [];
    };
    // a fixed pseudo-random spread of ages, so refills are comparable
    let x = 12345;
    const spread = () => ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < o.count; i++) {
      const t = tripletFor(i);
      const age = o.dead ? o.greyHours * 3600 + 60 + Math.floor(spread() * 30 * 86400) : 600 + Math.floor(spread() * 5 * 3600);
      ops.push([tripletDbKey(tripletKey(t.ip, t.sender, t.rcpt)), now - age]);
      if (ops.length >= BATCH) await flush();
    }
    for (let k = 1; k < o.knownGood; k += 2) ops.push([ipKey(hotIp(k)), now]);
    await flush();
  } finally {
    await store.close();
  }
  return { records, ms: Date.now() - started };
}

async function main(): Promise<void> {
  const a = minimist(process.argv.slice(2), { string: ['dir'], boolean: ['dead'] });
  if (typeof a.dir !== 'string' || a.dir === '') {
    process.stderr.write('usage: fill --dir DIR [--count N] [--dead] [--known-good K] [--grey-hours 12]\n');
    process.exit(100);
  }
  const r = await fill({
    dir: a.dir,
    count: Number(a.count ?? 0),
    dead: Boolean(a.dead),
    knownGood: Number(a['known-good'] ?? 0),
    greyHours: Number(a['grey-hours'] ?? 12),
  });
  process.stdout.write(`filled records=${r.records} ms=${r.ms} dir=${a.dir}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`fill: ${(e as Error).message}\n`);
    process.exit(111);
  });
}
