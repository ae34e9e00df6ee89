import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Level } from 'level';
import { Greylist } from '../../src/daemon/queue.js';
import { settingsFrom } from '../../src/policy.js';
import { ipKey, Store, StoreError, tripletDbKey } from '../../src/store/leveldb.js';
import { Whitelist } from '../../src/whitelist.js';
import { removeDir, tempDir } from '../helpers.js';
import { req } from '../requests.js';


describe('store', () => {
  it('keeps records across close and open', async () => {
    const dir = tempDir();
    try {
      let s = await Store.open(join(dir, 'state'));
      await s.write([
        [ipKey('192.0.2.1'), 1000],
        [tripletDbKey('192.0.2.1 a@b c@d'), 900],
        [tripletDbKey('192.0.2.1 é@b c@d'), 901],
      ]);
      await s.close();
      s = await Store.open(join(dir, 'state'));
      assert.deepEqual(await s.get([ipKey('192.0.2.1'), tripletDbKey('192.0.2.1 a@b c@d'), tripletDbKey('192.0.2.1 é@b c@d'), ipKey('192.0.2.9')]), [1000, 900, 901, undefined]);
      await s.write([[ipKey('192.0.2.1'), null]]);
      assert.deepEqual(await s.get([ipKey('192.0.2.1')]), [undefined]);
      await s.close();
    } finally {
      removeDir(dir);
    }
  });

  it('writes a format version and refuses a store of another format or origin', async () => {
    const dir = tempDir();
    try {
      const s = await Store.open(join(dir, 'a'));
      await s.close();
      const raw = new Level<string, Buffer>(join(dir, 'a'), { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      assert.deepEqual(await raw.get('!format').then((b) => b?.length !== undefined), true);
      await raw.put('!format', Buffer.from([0x81, 0xa6, ...Buffer.from('format'), 0x63]));
      await raw.close();
      await assert.rejects(Store.open(join(dir, 'a')), (e: unknown) => e instanceof StoreError && e.code === 'QGREYD_STORE_FORMAT' && /format 99/.test(e.message));
      const other = new Level(join(dir, 'b'));
      await other.put('hello', 'world');
      await other.close();
      await assert.rejects(Store.open(join(dir, 'b')), /did not write/);
    } finally {
      removeDir(dir);
    }
  });

  it('refuses a regular file as the state directory', async () => {
    const dir = tempDir();
    try {
      writeFileSync(join(dir, 'savefile'), 'I 1700000000 192.0.2.1\n');
      await assert.rejects(Store.open(join(dir, 'savefile')), (e: unknown) => e instanceof StoreError && e.code === 'QGREYD_STORE_NOT_DIR' && /regular file/.test(e.message));
    } finally {
      removeDir(dir);
    }
  });

  it('reports a store locked by another opener as temporary', async () => {
    const dir = tempDir();
    try {
      const a = await Store.open(dir);
      await assert.rejects(Store.open(dir), (e: unknown) => e instanceof StoreError && e.code === 'QGREYD_STORE_LOCKED' && e.temporary);
      await a.close();
    } finally {
      removeDir(dir);
    }
  });
});

describe('greylist queue and expiry', () => {
  const settings = settingsFrom(7, 12, 5);

  it('decides a batch in order, later requests seeing earlier changes, and persists them', async () => {
    const dir = tempDir();
    try {
      let now = 1_000_000;
      const store = await Store.open(dir);
      const g = new Greylist(store, settings, Whitelist.empty(), () => now);
      const r1 = g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      const r2 = g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      const [a, b] = await Promise.all([r1, r2]);
      assert.ok(a.kind === 'decision' && a.decision.verdict === 'new');
      assert.ok(b.kind === 'decision' && b.decision.verdict === 'too-soon');
      now += 400;
      const c = await g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      assert.ok(c.kind === 'decision' && c.decision.verdict === 'passed');
      await g.stop();
      await store.close();
      const again = await Store.open(dir);
      assert.deepEqual(await again.get([ipKey('192.0.2.1'), tripletDbKey('192.0.2.1 a@b c@d')]), [1_000_400, 1_000_000]);
      await again.close();
    } finally {
      removeDir(dir);
    }
  });

  it('sweeps dead triplets and IPs, keeps live ones and ones refreshed meanwhile', async () => {
    const dir = tempDir();
    try {
      const now = 2_000_000;
      const store = await Store.open(dir);
      const ops: Array<[string, number]> = [];
      for (let i = 0; i < 1200; i++) ops.push([tripletDbKey(`192.0.2.1 dead${i}@x r@y`), now - 13 * 3600]);
      for (let i = 0; i < 300; i++) ops.push([tripletDbKey(`192.0.2.1 live${i}@x r@y`), now - 3600]);
      ops.push([ipKey('192.0.2.50'), now - 8 * 86400], [ipKey('192.0.2.51'), now - 86400]);
      await store.write(ops);
      const g = new Greylist(store, settings, Whitelist.empty(), () => now);
      const report = await g.sweep(100);
      assert.equal(report.scanned, 1502);
      assert.equal(report.deleted, 1201);
      let left = 0;
      for await (const chunk of store.scan('G ')) left += chunk.length;
      assert.equal(left, 300);
      assert.deepEqual(await store.get([ipKey('192.0.2.50'), ipKey('192.0.2.51')]), [undefined, now - 86400]);
      await store.close();
    } finally {
      removeDir(dir);
    }
  });

  it('does not delete a record that a request refreshed after the sweep read it', async () => {
    const dir = tempDir();
    try {
      let now = 3_000_000;
      const store = await Store.open(dir);
      await store.write([[tripletDbKey('192.0.2.1 a@b c@d'), now - 13 * 3600]]);
      const g = new Greylist(store, settings, Whitelist.empty(), () => now);
      g.sweepFromIndex = false;
      // the request is queued before the sweep's delete task runs: it restarts the clock (00 03)
      const sweep = g.sweep();
      const r = await g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      assert.ok(r.kind === 'decision' && r.decision.verdict === 'too-late');
      await sweep;
      now += 400;
      const again = await g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      assert.ok(again.kind === 'decision' && again.decision.verdict === 'passed', JSON.stringify(again));
      await store.close();
    } finally {
      removeDir(dir);
    }
  });

  it('from the index: a request during the sweep either meets the stale triplet or a new one, and its write stands', async () => {
    const dir = tempDir();
    try {
      let now = 3_000_000;
      const store = await Store.open(dir);
      const key = tripletDbKey('192.0.2.1 a@b c@d');
      const others: Array<[string, number]> = [];
      for (let i = 0; i < 3000; i++) others.push([tripletDbKey(`192.0.2.2 s${i}@b c@d`), now - 13 * 3600]);
      await store.write([[key, now - 13 * 3600], ...others]);
      const g = new Greylist(store, settings, Whitelist.empty(), () => now);
      g.sweepSliceSlots = 512;
      const sweep = g.sweep();
      const r = await g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      // decided before the slice holding the triplet (it restarts its clock: 00 03) or after
      // (the sweep deleted it: a new triplet, 00 01); both defer and store the time now
      assert.ok(r.kind === 'decision' && (r.decision.verdict === 'too-late' || r.decision.verdict === 'new'), JSON.stringify(r));
      const report = await sweep;
      assert.ok(report.deleted >= 3000, `deleted ${report.deleted}`);
      assert.deepEqual(await store.get([key]), [now]);
      await store.flush();
      let inLevelDb = 0;
      for await (const chunk of store.scan('G ')) {
        for (const rec of chunk) {
          assert.deepEqual([rec.key, rec.time], [key, now]);
          inLevelDb++;
        }
      }
      assert.equal(inLevelDb, 1, 'LevelDB holds the request\'s write and nothing the sweep expired');
      now += 400;
      const again = await g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      assert.ok(again.kind === 'decision' && again.decision.verdict === 'passed', JSON.stringify(again));
      await store.close();
    } finally {
      removeDir(dir);
    }
  });
});
