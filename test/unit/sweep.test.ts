// The sweep on a real store, driven step by step through its test seam (no sleeps): admin
// writes made while it is between its snapshot read and its delete survive; it expires by
// the expiry clock and sets future-dated records to now; it steps over a corrupt block; and
// after a mass expiry it compacts the store so the disk space comes back.
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { allow, diskUsage, forgetIp, Importer } from '../../src/admin/ops.js';
import { Greylist, type StoreOp } from '../../src/daemon/queue.js';
import { settingsFrom } from '../../src/policy.js';
import { decodeRequest, encodeRequest } from '../../src/protocol.js';
import { ipKey, Store, tripletDbKey } from '../../src/store/leveldb.js';
import { Whitelist } from '../../src/whitelist.js';
import { removeDir, tempDir } from '../helpers.js';

const settings = settingsFrom(7, 12, 5);
const NOW = 1_700_000_000;
const H = 3600;
const D = 86400;

async function withStore(fn: (store: Store, dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = await Store.open(join(dir, 'data'));
  try {
    await fn(store, join(dir, 'data'));
  } finally {
    await store.close();
    removeDir(dir);
  }
}

async function count(store: Store, prefix: string): Promise<number> {
  let n = 0;
  // (past a corrupt block, if there is one)
  for await (const chunk of store.scan(prefix, { onCorrupt: () => undefined })) n += chunk.length;
  return n;
}

describe('admin writes during a scanning sweep', () => {
  it('an allow and an import made between the snapshot read and the delete are not undone', () =>
    withStore(async (store) => {
      const allowed = ipKey('192.0.2.1');
      const imported = ipKey('192.0.2.2');
      const importedTriplet = tripletDbKey('192.0.2.3 a@x b@y');
      const forgotten = ipKey('192.0.2.4');
      await store.write([
        [allowed, NOW - 8 * D],
        [imported, NOW - 8 * D],
        [importedTriplet, NOW - 13 * H],
        [forgotten, NOW - 8 * D],
        [ipKey('192.0.2.5'), NOW - 8 * D],
      ]);
      const g = new Greylist(store, settings, Whitelist.empty(), () => NOW);
      g.sweepFromIndex = false;
      const ctx = g.opsContext();
      const seen: StoreOp[] = [];
      g.onSweepChunk = async (ops) => {
        seen.push(...ops);
        // the sweep has read these records as dead and not yet deleted them
        const chosen = new Set(ops.map(([k]) => k));
        if (chosen.has(allowed)) await allow(ctx, '192.0.2.1');
        const imp = new Importer(ctx);
        if (chosen.has(imported)) await imp.add([{ kind: 'ip', ip: '192.0.2.2', time: NOW - D }]);
        if (chosen.has(importedTriplet)) await imp.add([{ kind: 'triplet', ip: '192.0.2.3', sender: 'a@x', rcpt: 'b@y', time: NOW - H }]);
        if (chosen.has(forgotten)) await forgetIp(ctx, '192.0.2.4');
        assert.equal(imp.counts.imported, imp.counts.records, 'the import wrote its records');
      };
      const report = await g.sweep();
      // the race really was set up: the sweep had chosen to delete the records the admin wrote
      assert.ok(seen.some(([k, t]) => k === allowed && t === null));
      assert.ok(seen.some(([k, t]) => k === imported && t === null));
      assert.ok(seen.some(([k, t]) => k === importedTriplet && t === null));
      assert.deepEqual(await store.get([allowed, imported, importedTriplet]), [NOW, NOW - D, NOW - H]);
      // what nobody touched went; what was forgotten stays gone
      assert.deepEqual(await store.get([forgotten, ipKey('192.0.2.5')]), [undefined, undefined]);
      assert.equal(report.deleted, 1, 'only the untouched dead IP is counted as the sweep\'s');
      // and the next sweep, with nothing written meanwhile, leaves the live records alone
      g.onSweepChunk = null;
      assert.equal((await g.sweep()).deleted, 0);
      assert.deepEqual(await store.get([allowed, imported, importedTriplet]), [NOW, NOW - D, NOW - H]);
    }));
});

/** What LevelDB holds once fed, by key; each record also what the index holds. */
async function levelDb(store: Store): Promise<Record<string, number>> {
  await store.flush();
  const out: Record<string, number> = {};
  for (const prefix of ['I ', 'G ']) {
    for await (const chunk of store.scan(prefix)) {
      const inIndex = await store.get(chunk.map((r) => r.key));
      chunk.forEach((r, i) => {
        assert.equal(inIndex[i], r.time, `LevelDB's ${r.key} is the index's`);
        out[r.key] = r.time;
      });
    }
  }
  return out;
}

describe('admin writes during a sweep from the index', () => {
  it('an allow, an import and a forget made between slices hold; LevelDB is cleaned to match', () =>
    withStore(async (store) => {
      const allowed = ipKey('192.0.2.1');
      const imported = tripletDbKey('192.0.2.3 a@x b@y');
      const forgotten = ipKey('192.0.2.4');
      const dead: Array<[string, number]> = [];
      // enough records for several slices and cleaning chunks
      for (let i = 0; i < 5000; i++) dead.push([tripletDbKey(`192.0.2.9 s${i}@x b@y`), NOW - 13 * H]);
      await store.write([[allowed, NOW - 8 * D], [imported, NOW - 13 * H], [forgotten, NOW - 8 * D], [ipKey('192.0.2.5'), NOW - 8 * D], ...dead]);
      await store.flush();
      const g = new Greylist(store, settings, Whitelist.empty(), () => NOW);
      const ctx = g.opsContext();
      let slices = 0;
      g.sweepSliceSlots = 1024;
      g.onSweepSlice = async () => {
        if (slices++ !== 1) return;
        // after the first slice: wherever these records sit, the sweep has not judged them
        // all yet, and some it may have deleted already
        await allow(ctx, '192.0.2.1');
        const imp = new Importer(ctx);
        await imp.add([{ kind: 'triplet', ip: '192.0.2.3', sender: 'a@x', rcpt: 'b@y', time: NOW - H }]);
        await forgetIp(ctx, '192.0.2.4');
      };
      const report = await g.sweep();
      assert.ok(slices > 2, `the pass ran in slices: ${slices}`);
      assert.deepEqual(await store.get([allowed, imported]), [NOW, NOW - H]);
      assert.deepEqual(await store.get([forgotten, ipKey('192.0.2.5')]), [undefined, undefined]);
      assert.equal((await store.get(dead.map(([k]) => k))).filter((t) => t !== undefined).length, 0);
      assert.ok(report.deleted >= 5001 && report.deleted <= 5003, `deleted ${report.deleted}`);
      assert.ok((report.cleaned ?? 0) >= 5001, `cleaned behind: ${report.cleaned}`);
      assert.deepEqual(await levelDb(store), { [allowed]: NOW, [imported]: NOW - H });
    }));
});

for (const fromIndex of [true, false]) describe(`the sweep and the clock (${fromIndex ? 'from the index' : 'scanning'})`, () => {
  it('expires by the expiry clock, never by one ahead of the request clock', () =>
    withStore(async (store) => {
      await store.write([
        [ipKey('192.0.2.1'), NOW - 8 * D],
        [tripletDbKey('192.0.2.1 a@x b@y'), NOW - 13 * H],
      ]);
      const g = new Greylist(store, settings, Whitelist.empty(), () => NOW);
      g.sweepFromIndex = fromIndex;
      // the wall clock jumped 30 days ahead: the sweep judges by the clock before the jump
      g.expiryClock = () => NOW - 30 * D;
      assert.equal((await g.sweep()).deleted, 0);
      assert.equal((await count(store, 'I ')) + (await count(store, 'G ')), 2, 'both records are still there');
      // an expiry clock ahead of the request clock is not trusted
      g.expiryClock = () => NOW + 100 * D;
      assert.equal((await g.sweep()).deleted, 2);
      assert.deepEqual(await store.get([ipKey('192.0.2.1'), tripletDbKey('192.0.2.1 a@x b@y')]), [undefined, undefined]);
    }));

  it('sets records dated ahead of now to now, unless a request wrote them meanwhile', () =>
    withStore(async (store) => {
      const ip = ipKey('192.0.2.1');
      const triplet = tripletDbKey('192.0.2.1 a@x b@y');
      const written = tripletDbKey('192.0.2.2 a@x b@y');
      const near = tripletDbKey('192.0.2.3 a@x b@y');
      await store.write([
        [ip, NOW + 30 * D],
        [triplet, NOW + 30 * D],
        [written, NOW + 30 * D],
        [near, NOW + 30],
      ]);
      const g = new Greylist(store, settings, Whitelist.empty(), () => NOW);
      g.sweepFromIndex = fromIndex;
      // scanning: between the read and the commit; from the index: before the first slice
      const write = async () => {
        await g.exclusive(() => g.write([[written, NOW - 60]]));
      };
      if (fromIndex) g.onSweepSlice = write;
      else g.onSweepChunk = write;
      const report = await g.sweep();
      assert.equal(report.normalised, 2);
      assert.equal(report.deleted, 0);
      assert.deepEqual(await store.get([ip, triplet, written, near]), [NOW, NOW, NOW - 60, NOW + 30]);
      assert.deepEqual(await levelDb(store), { [ip]: NOW, [triplet]: NOW, [written]: NOW - 60, [near]: NOW + 30 });
    }));
});

/** A store of `n` triplets (their first-seen time `t`) and 100 IPs, all in LevelDB table
 *  files (compacted), closed cleanly. */
async function bigStore(dir: string, n: number, t: number): Promise<void> {
  const store = await Store.open(dir);
  for (let b = 0; b < n; b += 5000) {
    const ops: Array<[string, number]> = [];
    for (let i = b; i < Math.min(n, b + 5000); i++) ops.push([tripletDbKey(`192.0.2.${i % 250} s${String(i).padStart(7, '0')}@x.example r@y.example`), t]);
    await store.write(ops);
  }
  const ips: Array<[string, number]> = [];
  for (let i = 0; i < 100; i++) ips.push([ipKey(`198.51.100.${i}`), t]);
  await store.write(ips);
  await store.compact();
  await store.close();
}

for (const fromIndex of [true, false]) describe(`a corrupt block (${fromIndex ? 'from the index' : 'scanning'})`, () => {
  it('is reported and stepped over: this sweep and the next expire the records after it', async () => {
    const dir = tempDir();
    const state = join(dir, 'data');
    try {
      const N = 30_000;
      await bigStore(state, N, NOW - 13 * H);
      // damage a data block a third of the way into the table (its data blocks come first)
      const tables = readdirSync(state).filter((f) => f.endsWith('.ldb'));
      assert.equal(tables.length, 1);
      const path = join(state, tables[0]);
      const fd = openSync(path, 'r+');
      writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, Math.floor(statSync(path).size / 3));
      closeSync(fd);

      const store = await Store.open(state);
      try {
        // the records in the damaged block cannot be read
        const lost = N - (await count(store, 'G '));
        assert.ok(lost > 0 && lost < 500, `lost ${lost}`);
        const g = new Greylist(store, settings, Whitelist.empty(), () => NOW + 8 * D);
        g.sweepFromIndex = fromIndex;
        const first = await g.sweep();
        assert.match(first.corrupt ?? '', /Corruption: .*; the records in the damaged part were skipped; stop qgreyd and run: qgreyd --repair /);
        // every readable record is gone, the IPs after the block included
        assert.equal(first.deleted, N - lost + 100);
        assert.equal(await count(store, 'G '), 0);
        assert.equal(await count(store, 'I '), 0, 'the IPs, after the corrupt block, were swept');
        assert.equal(first.compactMs, undefined, 'no compaction over a corrupt block');

        // the next sweep too gets past the block
        const later: Array<[string, number]> = [
          [tripletDbKey('192.0.2.249 zzz@x.example r@y.example'), NOW - 13 * H],
          [ipKey('203.0.113.1'), NOW - 8 * D],
        ];
        await store.write(later);
        const second = await g.sweep();
        assert.ok(second.corrupt !== undefined);
        assert.equal(second.deleted, 2);
        assert.deepEqual(await store.get(later.map(([k]) => k)), [undefined, undefined]);
      } finally {
        await store.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});

for (const fromIndex of [true, false]) describe(`compaction (${fromIndex ? 'from the index' : 'scanning'})`, () => {
  it('a sweep that empties a big store gives the disk space back', async () => {
    const dir = tempDir();
    const state = join(dir, 'data');
    try {
      await bigStore(state, 60_000, NOW - 13 * H);
      const store = await Store.open(state);
      try {
        const before = await diskUsage(state);
        const g = new Greylist(store, settings, Whitelist.empty(), () => NOW + 8 * D);
        g.sweepFromIndex = fromIndex;
        const report = await g.sweep();
        assert.equal(report.deleted, 60_100);
        const after = await diskUsage(state);
        assert.ok(before > 500_000, `the store was big: ${before} bytes`);
        assert.ok(after < before / 10, `after the sweep ${after} bytes, before ${before}`);
        assert.ok(report.compactMs !== undefined, 'compacted');
        // requests still work on the compacted store
        const d = decodeRequest(encodeRequest('192.0.2.1', 'a@x', ['b@y']));
        assert.ok(d.ok);
        const r = await g.decideAsync(d.request);
        assert.ok(r.kind === 'decision' && r.decision.verdict === 'new', JSON.stringify(r));
      } finally {
        await store.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});
