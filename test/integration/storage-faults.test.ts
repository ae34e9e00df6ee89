// Storage faults: a read-only state directory, a full disk (at start and at run time), a store
// locked by another process, a corrupt store and its repair. Start-up faults give one clear
// line naming the path and what to do; a run-time fault leaves the daemon answering (01 05)
// and logging, and it recovers by itself when storage comes back.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, mkdirSync, openSync, readdirSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { tripletKey } from '../../src/policy.js';
import { Store, TRIPLET_PREFIX } from '../../src/store/leveldb.js';
import { query, removeDir, runDaemon, sleep, startDaemon, tempDir } from '../helpers.js';
import { fill, mountTmpfs, ROOT, umount } from '../tmpfs.js';

const NEEDS_ROOT = ROOT ? false : 'needs root to mount a small tmpfs';

test('a read-only state directory: exit 100 naming the path and the fix', { skip: NEEDS_ROOT }, async () => {
  const dir = tempDir();
  const mnt = join(dir, 'ro');
  try {
    // an existing store on a file system that is now read-only
    mountTmpfs(mnt, '4m');
    const state = join(mnt, 'state');
    const d = await startDaemon(['127.0.0.1:0', state]);
    assert.equal(await d.stop(), 0);
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    let r = await runDaemon(['127.0.0.1:0', state]);
    assert.equal(r.code, 100, r.stderr);
    assert.match(r.stderr, new RegExp(`^qgreyd: state directory ${state}: cannot open the store, the file system is read-only .*remount it read-write`));
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    // a state directory that does not exist yet on a read-only file system
    r = await runDaemon(['127.0.0.1:0', join(mnt, 'new')]);
    assert.equal(r.code, 100, r.stderr);
    assert.match(r.stderr, new RegExp(`state directory ${join(mnt, 'new')}: cannot create it \\(EROFS\\); the file system is read-only; remount it read-write`));
  } finally {
    umount(mnt);
    removeDir(dir);
  }
});

test('a state directory the daemon may not write: exit 100 naming the path', { skip: ROOT ? 'root ignores permission bits (the read-only mount test covers root)' : false }, async () => {
  const dir = tempDir();
  const state = join(dir, 'state');
  try {
    const d = await startDaemon(['127.0.0.1:0', state]);
    assert.equal(await d.stop(), 0);
    for (const f of readdirSync(state)) chmodSync(join(state, f), 0o400);
    chmodSync(state, 0o500);
    const r = await runDaemon(['127.0.0.1:0', state]);
    assert.equal(r.code, 100, r.stderr);
    assert.match(r.stderr, new RegExp(`state directory ${state}: cannot open the store .*writable by the daemon's user`));
  } finally {
    chmodSync(state, 0o700);
    removeDir(dir);
  }
});

test('a full disk at start: exit 111 naming the path and the fix', { skip: NEEDS_ROOT }, async () => {
  const dir = tempDir();
  const mnt = join(dir, 'full');
  try {
    mountTmpfs(mnt, '1m');
    fill(mnt);
    const state = join(mnt, 'state');
    mkdirSync(state);
    const r = await runDaemon(['127.0.0.1:0', state]);
    assert.equal(r.code, 111, r.stderr);
    assert.match(r.stderr, new RegExp(`^qgreyd: state directory ${state}: cannot open the store, the disk is full .*free space`));
  } finally {
    umount(mnt);
    removeDir(dir);
  }
});

const RUNTIME_CASES = [
  // the write of the log record fails
  { name: 'a log write fails', size: '2m', preload: 0, leave: 0 },
  // the memtable flush fails in the background: LevelDB then fails every later write until
  // the database is reopened
  { name: 'a memtable flush fails, a sticky LevelDB error', size: '16m', preload: 900, leave: 600_000 },
];

for (const c of RUNTIME_CASES) {
  test(`a full disk at run time (${c.name}): the daemon keeps answering (01 05), logs, and recovers by itself when space returns`, { skip: NEEDS_ROOT, timeout: 90_000 }, async (t) => {
    const dir = tempDir();
    const mnt = join(dir, 'tmpfs');
    mountTmpfs(mnt, c.size);
    const state = join(mnt, 'state');
    const d = await startDaemon(['-m', '600', '127.0.0.1:0', state]);
    const known: string[] = [];
    try {
      assert.equal(await query(d.port, '192.0.2.1', 'before@x.example', ['a@y.example']), '0001');
      known.push(tripletKey('192.0.2.1', 'before@x.example', 'a@y.example'));
      // bring the memtable (4 MB) close to its flush with incompressible senders
      // (addresses stay under the 512-byte limit: the bytes go into four triplets a request)
      const hex = () => `${randomBytes(240).toString('hex')}@y.example`;
      for (let i = 0; i < c.preload; i++) {
        const sender = `${randomBytes(240).toString('hex')}@x.example`;
        assert.equal(await query(d.port, '192.0.2.9', sender, ['a@y.example', hex(), hex(), hex()]), '0001');
      }
      const filler = fill(mnt, c.leave);

      let accepted = 0;
      let sent = 0;
      for (; sent < 2000 && accepted < 5; sent++) {
        const sender = `full${sent}-${randomBytes(240).toString('hex')}@x.example`;
        const reply = await query(d.port, '192.0.2.2', sender, ['a@y.example', hex(), hex()]);
        assert.ok(reply === '0001' || reply === '0105', `a reply comes, and it is new or not decided: ${reply}`);
        if (reply === '0105') accepted++;
        else known.push(tripletKey('192.0.2.2', sender, 'a@y.example'));
      }
      assert.equal(accepted, 5, `writes never failed in ${sent} requests`);
      assert.ok(d.lines.some((l) => / reply=01:05 reason=store-error error=".*"$/.test(l)), 'store errors are logged per request');
      const errorLine = await d.waitForLine(/^error store /);
      assert.match(errorLine, new RegExp(`^error store state=${state} ".*" answering=accept retry-in=\\d+ms$`));
      assert.equal(d.proc.exitCode, null, 'still running');

      unlinkSync(filler);
      // a bounded wait for the reopen backoff (at most 15 s between attempts)
      let reply: string | null = null;
      let tries = 0;
      for (; tries < 100 && reply !== '0001'; tries++) {
        reply = await query(d.port, '192.0.2.3', 'after@x.example', ['a@y.example']);
        if (reply !== '0001') await sleep(250);
      }
      assert.equal(reply, '0001', 'normal decisions resume without a restart');
      known.push(tripletKey('192.0.2.3', 'after@x.example', 'a@y.example'));
      assert.equal(await query(d.port, '192.0.2.3', 'after@x.example', ['a@y.example']), '0002');
      assert.equal(await query(d.port, '192.0.2.1', 'before@x.example', ['a@y.example']), '0002', 'what was stored before the fault is still known');
      assert.match(await d.waitForLine(/^store recovered /), new RegExp(`^store recovered state=${state} after=\\d+ms$`));
      t.diagnostic(`${c.name}: failed after ${sent - accepted} more writes; recovered after ${tries} probes; first error: ${errorLine.slice(0, 160)}`);
      assert.equal(await d.stop(), 0);
      const store = await Store.open(state);
      try {
        const keys = new Set<string>();
        for await (const chunk of store.scan(TRIPLET_PREFIX)) for (const r of chunk) keys.add(r.key.slice(TRIPLET_PREFIX.length));
        for (const k of known) assert.ok(keys.has(k), `answered 00 01 and kept: ${k.slice(0, 80)}`);
      } finally {
        await store.close();
      }
    } finally {
      await d.stop('SIGKILL');
      umount(mnt);
      removeDir(dir);
    }
  });
}

test('a store locked by another process: exit 111 naming the path, and --repair refuses too', async () => {
  const dir = tempDir();
  const state = join(dir, 'state');
  const d = await startDaemon(['127.0.0.1:0', state]);
  try {
    const r = await runDaemon(['127.0.0.1:0', state]);
    assert.equal(r.code, 111, r.stderr);
    assert.match(r.stderr, new RegExp(`^qgreyd: state directory ${state} is locked by another process .*stop that process`));
    const rep = await runDaemon(['--repair', state]);
    assert.equal(rep.code, 111, rep.stderr);
    assert.match(rep.stderr, /is locked by another process/);
    // the running daemon was not disturbed
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

for (const [name, corrupt] of [
  ['CURRENT names a manifest that is gone', (state: string) => writeFileSync(join(state, 'CURRENT'), 'MANIFEST-999999\n')],
  ['the manifest is damaged', (state: string) => {
    const m = readdirSync(state).find((f) => f.startsWith('MANIFEST-'))!;
    const fd = openSync(join(state, m), 'r+');
    writeSync(fd, Buffer.from('garbage garbage garbage'), 0, 23, 0);
    closeSync(fd);
  }],
] as const) {
  test(`a corrupt store (${name}): exit 100 with the repair command; qgreyd --repair brings the records back`, async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      const d = await startDaemon(['127.0.0.1:0', state]);
      for (let i = 0; i < 20; i++) assert.equal(await query(d.port, '192.0.2.1', `s${i}@x.example`, ['b@y.example']), '0001');
      assert.equal(await d.stop(), 0);
      corrupt(state);

      const r = await runDaemon(['127.0.0.1:0', state]);
      assert.equal(r.code, 100, r.stderr);
      assert.match(r.stderr, new RegExp(`^qgreyd: state directory ${state}: the store is corrupt \\(.*\\); stop every process using it and run: qgreyd --repair ${state}\\n$`));

      const rep = await runDaemon(['--repair', state]);
      assert.equal(rep.code, 0, rep.stderr);
      assert.equal(rep.stdout, `repair ok state=${state} ips=0 triplets=20\n`);

      const d2 = await startDaemon(['127.0.0.1:0', state]);
      try {
        for (let i = 0; i < 20; i++) assert.equal(await query(d2.port, '192.0.2.1', `s${i}@x.example`, ['b@y.example']), '0002');
      } finally {
        await d2.stop();
      }
    } finally {
      removeDir(dir);
    }
  });
}

test('--repair on a path that is not a state directory: exit 100 naming it', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'file'), 'x');
    let r = await runDaemon(['--repair', join(dir, 'file')]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, new RegExp(`state directory ${join(dir, 'file')} is not a directory`));
    r = await runDaemon(['--repair', join(dir, 'missing')]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, new RegExp(`state directory ${join(dir, 'missing')}: cannot examine it \\(ENOENT\\)`));
  } finally {
    removeDir(dir);
  }
});
