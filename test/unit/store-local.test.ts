// The local store's own guarantees, beyond the shared suite: the index against a Map, the
// write-ahead log replayed at open (what a killed daemon left is seen by every reader), a
// torn log tail, the record bound.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { RecordIndex } from '../../src/store/index.js';
import { ipKey, TRIPLET_PREFIX, tripletDbKey } from '../../src/store/keys.js';
import { SNAPSHOT_FILE, Store, StoreError } from '../../src/store/leveldb.js';
import { Prng } from '../prng.js';
import { removeDir, ROOT, tempDir } from '../helpers.js';

const LEVELDB_JS = join(ROOT, 'dist', 'src', 'store', 'leveldb.js');

/** Opens the store in another process, commits `n` triplets, and dies by SIGKILL without
 *  closing: what it committed is only in the log (the feed waits 100 ms). */
function commitAndDie(state: string, n: number): void {
  const script = `
    const { Store } = await import(${JSON.stringify(LEVELDB_JS)});
    const s = await Store.open(process.argv[1]);
    const changes = [];
    for (let i = 0; i < ${n}; i++) changes.push(['G 192.0.2.1 s' + i + '@x r@y', 1700000000 + i]);
    s.commitSync([{ expect: [], changes }]);
    process.kill(process.pid, 'SIGKILL');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, state], { encoding: 'utf8' });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
}

describe('the record index', () => {
  it('agrees with a Map over random sets and deletes, through growth and backward-shift deletion', () => {
    const r = new Prng(7);
    const ix = new RecordIndex(16);
    const oracle = new Map<string, number>();
    for (let i = 0; i < 60_000; i++) {
      const key = (r.int(0, 1) ? 'I ' : 'G ') + String(r.int(0, 20_000));
      if (r.int(0, 3) === 0) {
        assert.equal(ix.delete(key), oracle.delete(key));
      } else {
        const t = r.int(0, 2 ** 31);
        ix.set(key, t);
        oracle.set(key, t);
      }
    }
    assert.equal(ix.size, oracle.size);
    for (let k = 0; k <= 20_000; k++) {
      for (const p of ['I ', 'G ']) assert.equal(ix.get(p + String(k)), oracle.get(p + String(k)), p + String(k));
    }
  });

  it('visit() in small steps judges every record at least once; its deletions and re-datings agree with a Map, odd times included', () => {
    const r = new Prng(11);
    const ix = new RecordIndex(16);
    const oracle = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      const key = (r.int(0, 1) ? 'I ' : 'G ') + String(i);
      const t = r.int(0, 9) === 0 ? 2 ** 32 + i : r.int(0, 1000);
      ix.set(key, t);
      oracle.set(key, t);
    }
    // the rule: below 300 goes, 500 becomes 7, odd times (over 2^32) become 9; kinds are told
    const rule = (ip: boolean, key: string | null, t: number): number | null | undefined => {
      if (key !== null) assert.equal(ip, key.startsWith('I '));
      return t > 2 ** 32 ? 9 : t < 300 ? null : t === 500 ? 7 : undefined;
    };
    let judged = 0;
    const fn = (ip: boolean, t: number) => (judged++, rule(ip, null, t));
    let from = 0;
    let steps = 0;
    // steps smaller than the runs, so that deletions shift entries across step boundaries and
    // across the end of the table
    while (from >= 0) {
      from = ix.visit(from, 37, fn);
      steps++;
    }
    ix.visitOdd(fn);
    assert.ok(steps > 100);
    assert.ok(judged >= oracle.size, `judged ${judged} of ${oracle.size}`);
    for (const [key, t] of oracle) {
      const want = rule(key.startsWith('I '), key, t);
      if (want === null) oracle.delete(key);
      else if (want !== undefined) oracle.set(key, want);
    }
    assert.equal(ix.size, oracle.size);
    for (let i = 0; i < 20_000; i++) for (const p of ['I ', 'G ']) assert.equal(ix.get(p + String(i)), oracle.get(p + String(i)), p + String(i));
  });

  it('keeps times a uint32 cannot hold exactly', () => {
    const ix = new RecordIndex();
    ix.set('I a', 2 ** 32 + 7);
    ix.set('I b', -5);
    ix.set('I c', 1.5);
    assert.deepEqual([ix.get('I a'), ix.get('I b'), ix.get('I c')], [2 ** 32 + 7, -5, 1.5]);
    ix.set('I a', 10);
    assert.equal(ix.get('I a'), 10);
  });
});

describe('the write-ahead log', () => {
  it('what a killed process committed is replayed at open: lookups, scans (export) and --repair see it', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      const s0 = await Store.open(state);
      await s0.close();
      commitAndDie(state, 500);
      assert.ok(readdirSync(state).some((f) => f.startsWith('wal-')), 'the log was left behind');
      const s = await Store.open(state);
      try {
        assert.deepEqual(await s.get([tripletDbKey('192.0.2.1 s0@x r@y'), tripletDbKey('192.0.2.1 s499@x r@y')]), [1_700_000_000, 1_700_000_499]);
        let n = 0;
        for await (const chunk of s.scan(TRIPLET_PREFIX)) n += chunk.length;
        assert.equal(n, 500);
      } finally {
        await s.close();
      }
      commitAndDie(state, 600);
      const rep = await Store.repair(state);
      try {
        let n = 0;
        for await (const chunk of rep.scan(TRIPLET_PREFIX)) n += chunk.length;
        assert.equal(n, 600, 'the repaired store holds what was only in the log');
      } finally {
        await rep.close();
      }
    } finally {
      removeDir(dir);
    }
  });

  it('a torn frame at the end of the log ends its replay; the frames before it are kept', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      const s0 = await Store.open(state);
      await s0.close();
      commitAndDie(state, 3);
      const wal = readdirSync(state).find((f) => f.startsWith('wal-'))!;
      appendFileSync(join(state, wal), Buffer.from([40, 0, 0, 0, 1, 2, 3, 4, 0, 0xff]));
      const s = await Store.open(state);
      try {
        assert.deepEqual(await s.get([tripletDbKey('192.0.2.1 s2@x r@y')]), [1_700_000_002]);
      } finally {
        await s.close();
      }
    } finally {
      removeDir(dir);
    }
  });

  it('a clean close leaves no log and a snapshot; the next open uses it and consumes it', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      const s = await Store.open(state);
      await s.write([[ipKey('192.0.2.1'), 5]]);
      await s.close();
      const files = readdirSync(state);
      assert.ok(!files.some((f) => f.startsWith('wal-')));
      assert.ok(files.includes(SNAPSHOT_FILE));
      const again = await Store.open(state);
      assert.ok(!readdirSync(state).includes(SNAPSHOT_FILE), 'a crash from here on must not find a stale snapshot');
      assert.deepEqual(await again.get([ipKey('192.0.2.1')]), [5]);
      await again.close();
    } finally {
      removeDir(dir);
    }
  });
});

describe('the live snapshot', () => {
  /** commits 300, saves a live snapshot, commits 200 more and a delete, dies by SIGKILL */
  function snapshotAndDie(state: string): void {
    const script = `
      const { Store } = await import(${JSON.stringify(LEVELDB_JS)});
      const s = await Store.open(process.argv[1]);
      const batch = (from, to) => Array.from({ length: to - from }, (_, i) => ['G 192.0.2.1 s' + (from + i) + '@x r@y', 1700000000 + from + i]);
      s.commitSync([{ expect: [], changes: batch(0, 300) }]);
      await s.saveLiveSnapshot();
      s.commitSync([{ expect: [], changes: batch(300, 500) }]);
      s.commitSync([{ expect: [], changes: [['G 192.0.2.1 s7@x r@y', null]] }]);
      process.kill(process.pid, 'SIGKILL');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, state], { encoding: 'utf8' });
    assert.equal(r.signal, 'SIGKILL', r.stderr);
  }

  it('a start after a crash loads it and replays the logs since, instead of walking LevelDB', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      snapshotAndDie(state);
      const s = await Store.open(state);
      try {
        assert.equal(s.indexSource, 'live-snapshot');
        const keys = Array.from({ length: 500 }, (_, i) => tripletDbKey(`192.0.2.1 s${i}@x r@y`));
        const got = await s.get(keys);
        for (let i = 0; i < 500; i++) assert.equal(got[i], i === 7 ? undefined : 1_700_000_000 + i, `record ${i}`);
        assert.equal(s.memoryRecords, 499);
      } finally {
        await s.close();
      }
    } finally {
      removeDir(dir);
    }
  });

  it('is not trusted when a log it needs is missing: the index is walked from LevelDB', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      snapshotAndDie(state);
      const logs = readdirSync(state).filter((f) => f.startsWith('wal-')).sort();
      // the log after the snapshot is gone (lost, or removed by hand)
      rmSync(join(state, logs[logs.length - 1]));
      const s = await Store.open(state);
      try {
        assert.equal(s.indexSource, 'walk');
        assert.equal(s.memoryRecords, 300, 'what LevelDB and the remaining log hold');
      } finally {
        await s.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});

describe('the record bound', () => {
  it('refuses a commit that would add a record past --max-records; refreshes and deletes go on', async () => {
    const dir = tempDir();
    try {
      const s = await Store.open(join(dir, 'state'), { maxRecords: 3 });
      try {
        await s.write([[ipKey('192.0.2.1'), 1], [ipKey('192.0.2.2'), 1], [ipKey('192.0.2.3'), 1]]);
        await assert.rejects(s.write([[ipKey('192.0.2.4'), 1]]), (e: unknown) => e instanceof StoreError && e.code === 'QGREYD_STORE_FULL' && e.temporary && /--max-records/.test(e.message));
        assert.deepEqual(await s.get([ipKey('192.0.2.4')]), [undefined], 'nothing of the refused commit');
        await s.write([[ipKey('192.0.2.1'), 2]]);
        await s.write([[ipKey('192.0.2.2'), null]]);
        await s.write([[ipKey('192.0.2.4'), 3]]);
        assert.deepEqual(await s.get([ipKey('192.0.2.1'), ipKey('192.0.2.2'), ipKey('192.0.2.4')]), [2, undefined, 3]);
      } finally {
        await s.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});

describe('the sweep from the index, behind it in LevelDB', () => {
  it('a record written while LevelDB is cleaned is never deleted behind the index, whether its delete was queued already or not', async () => {
    const dir = tempDir();
    try {
      const store = await Store.open(dir);
      const keys = Array.from({ length: 3000 }, (_, i) => tripletDbKey(`192.0.2.1 s${String(i).padStart(4, '0')}@x r@y`));
      await store.write(keys.map((k) => [k, 1000] as [string, number]));
      await store.flush();
      let pauses = 0;
      const first = keys[0];
      const last = keys[keys.length - 1];
      const report = await store.expireIndex((_kind, t) => (t === 1000 ? null : undefined), {
        pause: async () => {
          // after the first chunk: `first`'s delete is queued for LevelDB, `last` not reached
          if (pauses++ === 0) await store.write([[first, 2000], [last, 3000]]);
        },
      });
      assert.equal(report.deleted, 3000);
      assert.ok(pauses >= 3, `cleaned in chunks: ${pauses}`);
      assert.deepEqual(await store.get([first, last, keys[1]]), [2000, 3000, undefined]);
      await store.flush();
      const held: Array<[string, number]> = [];
      for await (const chunk of store.scan(TRIPLET_PREFIX)) for (const rec of chunk) held.push([rec.key, rec.time]);
      assert.deepEqual(held, [[first, 2000], [last, 3000]]);
      await store.close();
      // and after a restart
      const again = await Store.open(dir);
      assert.deepEqual(await again.get([first, last, keys[1]]), [2000, 3000, undefined]);
      await again.close();
    } finally {
      removeDir(dir);
    }
  });
});
