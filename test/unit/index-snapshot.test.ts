// The index snapshot: an image saved while the table goes on changing holds the table as it
// was when the image was taken (not a mix), and a damaged snapshot file is refused, so that
// the store walks LevelDB instead.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { RecordIndex } from '../../src/store/index.js';
import { ipKey, tripletDbKey } from '../../src/store/keys.js';
import { LIVE_SNAPSHOT_FILE, SNAPSHOT_FILE, Store } from '../../src/store/leveldb.js';
import { Prng } from '../prng.js';
import { removeDir, ROOT, tempDir } from '../helpers.js';

const STAMP = Buffer.from('0123456789abcdef');
const key = (n: number) => (n % 7 === 0 ? 'I ' : 'G ') + String(n);
const turn = () => new Promise<void>((r) => setImmediate(r));

/** Fills an index with `n` records; returns it and a Map of the same. */
function filled(n: number, r: Prng): { ix: RecordIndex; oracle: Map<string, number> } {
  const ix = new RecordIndex();
  const oracle = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const t = r.int(0, 2 ** 31);
    ix.set(key(i), t);
    oracle.set(key(i), t);
  }
  return { ix, oracle };
}

/** Every record of `oracle` is in `ix` with its time, and nothing else. */
function sameAs(ix: RecordIndex, oracle: ReadonlyMap<string, number>, universe: number): void {
  assert.equal(ix.size, oracle.size, 'records');
  for (let i = 0; i < universe; i++) assert.equal(ix.get(key(i)), oracle.get(key(i)), key(i));
}

describe('an index image saved while the table changes', () => {
  // 300,000 records take 2^19 slots: the image is written in two steps, with turns between
  // the writes in which the table changes
  const N = 300_000;

  it('holds the table as it was when taken: sets, deletes (backward shifts), inserts meanwhile', async () => {
    const seed = Number(process.env.QGREYD_IMAGE_SEED ?? 11);
    const r = new Prng(seed);
    const { ix, oracle } = filled(N, r);
    const dir = tempDir();
    try {
      const image = ix.beginImage();
      assert.ok(image !== null);
      assert.equal(ix.beginImage(), null, 'one image at a time');
      const path = join(dir, 'snap');
      let done = false;
      const saving = ix.saveImage(image, path, STAMP).finally(() => (done = true));
      let kept = 0;
      let changes = 0;
      const live = new Map(oracle);
      while (!done) {
        // a turn's worth of changes over the whole table: refreshes, deletes, new records
        for (let k = 0; k < 3000; k++) {
          const n = r.int(0, N + 50_000);
          if (r.int(0, 2) === 0) {
            ix.delete(key(n));
            live.delete(key(n));
          } else {
            const t = r.int(0, 2 ** 31);
            ix.set(key(n), t);
            live.set(key(n), t);
          }
          changes++;
        }
        kept = Math.max(kept, image.keptPieces);
        await turn();
      }
      await saving;
      assert.ok(changes >= 3000 && kept > 0, `the table changed under the image (seed ${seed})`);
      const loaded = RecordIndex.load(path, STAMP);
      assert.ok(loaded !== null, 'the image loads');
      sameAs(loaded, oracle, N + 50_000);
      sameAs(ix, live, N + 50_000);
    } finally {
      removeDir(dir);
    }
  });

  it('holds the table as it was when the table grows under it', async () => {
    const r = new Prng(12);
    const { ix, oracle } = filled(N, r);
    const dir = tempDir();
    try {
      const capacity = ix.capacity;
      const image = ix.beginImage()!;
      const path = join(dir, 'snap');
      let done = false;
      const saving = ix.saveImage(image, path, STAMP).finally(() => (done = true));
      let grown = false;
      let n = N;
      while (!done) {
        for (let k = 0; k < 20_000; k++) ix.set(key(n++), 1);
        for (let k = 0; k < 1000; k++) ix.delete(key(r.int(0, N)));
        grown ||= ix.capacity > capacity;
        await turn();
      }
      await saving;
      assert.ok(grown, 'the table grew while the image was written');
      const loaded = RecordIndex.load(path, STAMP)!;
      assert.equal(loaded.capacity, capacity);
      sameAs(loaded, oracle, n);
      assert.ok(ix.beginImage() !== null, 'the image ended');
    } finally {
      removeDir(dir);
    }
  });
});

describe('a snapshot file that does not match its header', () => {
  function saved(dir: string): string {
    const { ix } = filled(5000, new Prng(3));
    const path = join(dir, 'snap');
    ix.save(path, STAMP);
    assert.ok(RecordIndex.load(path, STAMP) !== null);
    return path;
  }

  it('is refused when its record count is wrong', () => {
    const dir = tempDir();
    try {
      const path = saved(dir);
      const fd = openSync(path, 'r+');
      const b = Buffer.alloc(4);
      b.writeUInt32LE(4999);
      writeSync(fd, b, 0, 4, 12);
      closeSync(fd);
      assert.equal(RecordIndex.load(path, STAMP), null);
    } finally {
      removeDir(dir);
    }
  });

  it('is refused when it is short or long', () => {
    const dir = tempDir();
    try {
      const path = saved(dir);
      const whole = readFileSync(path);
      truncateSync(path, whole.length - 4);
      assert.equal(RecordIndex.load(path, STAMP), null, 'short');
      writeFileSync(path, Buffer.concat([whole, Buffer.alloc(4)]));
      assert.equal(RecordIndex.load(path, STAMP), null, 'long');
      writeFileSync(path, whole);
      assert.ok(RecordIndex.load(path, STAMP) !== null);
    } finally {
      removeDir(dir);
    }
  });

  it('makes the store walk LevelDB, which holds every record', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      const s = await Store.open(state);
      await s.write([[ipKey('192.0.2.1'), 5], [tripletDbKey('192.0.2.1 a@x b@y'), 6]]);
      await s.close();
      const path = join(state, SNAPSHOT_FILE);
      // the count in the header says one record more than the table holds
      const fd = openSync(path, 'r+');
      const b = Buffer.alloc(4);
      b.writeUInt32LE(readFileSync(path).readUInt32LE(12) + 1);
      writeSync(fd, b, 0, 4, 12);
      closeSync(fd);
      const again = await Store.open(state);
      try {
        assert.equal(again.indexSource, 'walk');
        assert.equal(again.memoryRecords, 2);
        assert.deepEqual(await again.get([ipKey('192.0.2.1'), tripletDbKey('192.0.2.1 a@x b@y')]), [5, 6]);
        assert.ok(!readdirSync(state).includes(SNAPSHOT_FILE));
      } finally {
        await again.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});

describe('the clean snapshot, once loaded', () => {
  it('becomes the live snapshot: a crash after the start loads it and replays the logs since', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      const s0 = await Store.open(state);
      await s0.write([[ipKey('192.0.2.1'), 5], [tripletDbKey('192.0.2.1 a@x b@y'), 6], [tripletDbKey('192.0.2.1 gone@x b@y'), 7]]);
      await s0.close();
      // a start from the clean snapshot, a commit and a delete, then SIGKILL before any feed
      const script = `
        const { Store } = await import(${JSON.stringify(join(ROOT, 'dist', 'src', 'store', 'leveldb.js'))});
        const s = await Store.open(process.argv[1]);
        if (s.indexSource !== 'snapshot') process.exit(3);
        s.commitSync([{ expect: [], changes: [['G 192.0.2.1 new@x b@y', 8], ['G 192.0.2.1 gone@x b@y', null]] }]);
        process.kill(process.pid, 'SIGKILL');`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, state], { encoding: 'utf8' });
      assert.equal(r.signal, 'SIGKILL', r.stderr + String(r.status));
      const files = readdirSync(state);
      assert.ok(files.includes(LIVE_SNAPSHOT_FILE) && !files.includes(SNAPSHOT_FILE), files.join(' '));
      const crashedLog = files.find((f) => f.startsWith('wal-'))!;
      const s = await Store.open(state);
      try {
        assert.equal(s.indexSource, 'live-snapshot');
        assert.equal(s.memoryRecords, 3);
        const keys = [ipKey('192.0.2.1'), tripletDbKey('192.0.2.1 a@x b@y'), tripletDbKey('192.0.2.1 gone@x b@y'), tripletDbKey('192.0.2.1 new@x b@y')];
        assert.deepEqual(await s.get(keys), [5, 6, undefined, 8]);
        // the crashed log goes to LevelDB through the feed, which a scan waits for
        const scanned: string[] = [];
        for await (const chunk of s.scan('G ')) for (const r of chunk) scanned.push(`${r.key}=${r.time}`);
        assert.deepEqual(scanned, ['G 192.0.2.1 a@x b@y=6', 'G 192.0.2.1 new@x b@y=8']);
        assert.ok(readdirSync(state).includes(LIVE_SNAPSHOT_FILE) && readdirSync(state).includes(crashedLog), 'kept while the live snapshot just loaded needs it');
        await s.saveLiveSnapshot(); // (the first feed started one: this waits for it)
        await s.write([[ipKey('192.0.2.9'), 9]]);
        await s.flush();
        assert.ok(!readdirSync(state).includes(crashedLog), 'deleted once LevelDB and a newer live snapshot hold it');
      } finally {
        await s.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});
