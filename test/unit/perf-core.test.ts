// The parts changed for speed (issue 6): the two-generation cache, the store's time codec and
// one-read batches, and the sweep's check that runs while batches run.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import msgpack from 'msgpack-lite';
import { Level } from 'level';
import { RecentCache } from '../../src/store/cache.js';
import { Greylist, type Result } from '../../src/daemon/queue.js';
import { settingsFrom } from '../../src/policy.js';
import { ipKey, Store, tripletDbKey } from '../../src/store/leveldb.js';
import { Whitelist } from '../../src/whitelist.js';
import { removeDir, tempDir } from '../helpers.js';
import { req } from '../requests.js';

const settings = settingsFrom(7, 12, 5);


describe('RecentCache', () => {
  it('never holds more than its capacity', () => {
    const c = new RecentCache<number>(100);
    for (let i = 0; i < 10_000; i++) {
      c.set(`k${i}`, i);
      assert.ok(c.size <= 100, `size ${c.size} after ${i + 1} sets`);
    }
    assert.equal(c.get('k9999'), 9999);
    assert.equal(c.get('k0'), undefined);
  });

  it('keeps what is used, and the latest value of a key', () => {
    const c = new RecentCache<number | null>(10);
    c.set('hot', 1);
    for (let i = 0; i < 100; i++) {
      c.set(`cold${i}`, i);
      assert.equal(c.get('hot'), 1, `hot entry lost after ${i + 1} other sets`);
    }
    c.set('hot', 2);
    assert.equal(c.get('hot'), 2);
    c.set('absent', null);
    assert.equal(c.get('absent'), null);
    c.delete('hot');
    assert.equal(c.get('hot'), undefined);
  });
});

describe('store time codec', () => {
  it('reads times that are not msgpack uint32 through the general decoder', async () => {
    const dir = tempDir();
    try {
      // a store as a release with other number encodings might have left it
      const s0 = await Store.open(dir);
      await s0.close();
      const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
      await db.open();
      await db.put(ipKey('192.0.2.1'), msgpack.encode(5)); // fixint
      await db.put(ipKey('192.0.2.2'), msgpack.encode(2 ** 32 + 7)); // beyond uint32
      await db.put(ipKey('192.0.2.3'), msgpack.encode(1_700_000_000)); // uint32
      await db.close();
      const s = await Store.open(dir);
      assert.deepEqual(await s.get([ipKey('192.0.2.1'), ipKey('192.0.2.2'), ipKey('192.0.2.3')]), [5, 2 ** 32 + 7, 1_700_000_000]);
      // one batch, several times: each record keeps its own
      await s.write([[ipKey('192.0.2.4'), 100], [ipKey('192.0.2.5'), 100], [ipKey('192.0.2.6'), 200], [ipKey('192.0.2.7'), 100]]);
      await s.close();
      const again = await Store.open(dir);
      assert.deepEqual(await again.get([ipKey('192.0.2.4'), ipKey('192.0.2.5'), ipKey('192.0.2.6'), ipKey('192.0.2.7'), ipKey('192.0.2.9')]), [100, 100, 200, 100, undefined]);
      await again.close();
    } finally {
      removeDir(dir);
    }
  });
});

describe('decision queue', () => {
  it('decides a batch mixing cached, stored and unknown records with one read', async () => {
    const dir = tempDir();
    try {
      const now = 5_000_000;
      let store = await Store.open(dir);
      await store.write([
        [ipKey('192.0.2.1'), now - 60], // known good
        [tripletDbKey('192.0.2.2 a@b c@d'), now - 600], // retry passes
        [tripletDbKey('192.0.2.3 a@b c@d'), now - 60], // too soon
      ]);
      await store.close();
      store = await Store.open(dir); // nothing cached
      const g = new Greylist(store, settings, Whitelist.empty(), () => now);
      const verdicts = await Promise.all([
        g.decideAsync(req('192.0.2.1', 'x@y', ['z@w'])),
        g.decideAsync(req('192.0.2.2', 'a@b', ['c@d'])),
        g.decideAsync(req('192.0.2.3', 'a@b', ['c@d'])),
        g.decideAsync(req('192.0.2.4', 'a@b', ['c@d'])),
        g.decideAsync(req('192.0.2.2', 'q@r', ['s@t'])), // 192.0.2.2 became known good just before
        g.decideAsync(req('192.0.2.4', 'a@b', ['c@d'])), // stored by the request before, same second
      ]);
      assert.deepEqual(verdicts.map((r) => (r.kind === 'decision' ? r.decision.verdict : r.kind)), ['known-good', 'passed', 'too-soon', 'new', 'known-good', 'too-soon']);
      await store.close();
      store = await Store.open(dir);
      assert.deepEqual(await store.get([ipKey('192.0.2.2'), tripletDbKey('192.0.2.4 a@b c@d')]), [now, now]);
      await store.close();
    } finally {
      removeDir(dir);
    }
  });

  it('the sweep keeps a record a request refreshed after the sweep read it', async () => {
    const dir = tempDir();
    try {
      let now = 3_000_000;
      let store = await Store.open(dir);
      const key = tripletDbKey('192.0.2.1 a@b c@d');
      const other = tripletDbKey('192.0.2.9 a@b c@d');
      await store.write([[key, now - 13 * 3600], [other, now - 13 * 3600]]);
      const g = new Greylist(store, settings, Whitelist.empty(), () => now);
      // (the scanning sweep: the one that reads before it deletes)
      g.sweepFromIndex = false;
      // the refresh is decided after the sweep read the dead time, before its delete
      const scan = store.scan.bind(store);
      const refresh: { p: Promise<Result> | null } = { p: null };
      store.scan = async function* (prefix, opts) {
        for await (const chunk of scan(prefix, opts)) {
          refresh.p ??= g.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
          yield chunk;
        }
      };
      const report = await g.sweep();
      const r = await refresh.p;
      assert.ok(r !== null);
      assert.ok(r.kind === 'decision' && r.decision.verdict === 'too-late');
      assert.equal(report.deleted, 1);
      await store.close();
      store = await Store.open(dir);
      assert.deepEqual(await store.get([key, other]), [now, undefined]);
      const g2 = new Greylist(store, settings, Whitelist.empty(), () => now);
      now += 400;
      const again = await g2.decideAsync(req('192.0.2.1', 'a@b', ['c@d']));
      assert.ok(again.kind === 'decision' && again.decision.verdict === 'passed', JSON.stringify(again));
      await store.close();
    } finally {
      removeDir(dir);
    }
  });
});
