// The daemon and its clock, end to end: the wall clock is jumped through the test hook
// QGREYD_TEST_CLOCK_FILE (seconds added to the wall clock, re-read on SIGUSR2), never the
// machine's. A jump is logged once with its size; the sweep during a forward jump keeps the
// known-good IPs; after the correction, what was touched during the jump waits min-resend at
// most; qgreyctl stats reports future-dated records; a corrupt block is logged once.
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ipKey, Store, tripletDbKey } from '../../src/store/leveldb.js';
import { ctlInProcess } from '../ctl-helpers.js';
import { query, removeDir, setTestClock, startDaemon, tempDir, type Daemon } from '../helpers.js';

const D = 86400;

/** Resolves once pred holds for the daemon's output lines (checked as lines arrive). */
function until(d: Daemon, pred: (lines: string[]) => boolean, ms = 15_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!pred(d.lines)) return;
      clearTimeout(t);
      d.proc.stdout!.off('data', onData);
      resolve();
    };
    // after the helper's own listener has split the chunk into lines
    const onData = () => setImmediate(check);
    const t = setTimeout(() => {
      d.proc.stdout!.off('data', onData);
      reject(new Error(`timed out; stdout: ${d.lines.join('\n')}`));
    }, ms);
    d.proc.stdout!.on('data', onData);
    check();
  });
}

const sweepsAfter = (from: number) => (lines: string[]) => lines.slice(from).filter((l) => l.startsWith('sweep ')).length;

test('a 30-day clock jump and its correction: logged, no known-good IP lost, at most min-resend of deferral', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  const clockFile = join(dir, 'clock');
  const now = Math.floor(Date.now() / 1000);
  try {
    const store = await Store.open(state);
    await store.write([
      [ipKey('192.0.2.1'), now - D], // known good
      [ipKey('192.0.2.2'), now - 8 * D], // dead: shows the sweep runs
    ]);
    await store.close();
    writeFileSync(clockFile, '0\n');
    // sweep every 0.6 s; min-resend 5 minutes
    const d = await startDaemon(['-s', '0.01', '127.0.0.1:0', state], { env: { ...process.env, QGREYD_TEST_CLOCK_FILE: clockFile } });
    try {
      await d.waitForLine(/^sweep scanned=2 deleted=1 /);

      let mark = await setTestClock(d, clockFile, 30 * D);
      assert.equal(d.lines.filter((l) => l.startsWith('warning clock jumped forward 2592000s against the monotonic clock')).length, 1, d.lines.join('\n'));
      // touched during the jump: first seen 30 days "ahead"
      assert.equal(await query(d.port, '192.0.2.3', 'a@x.example', ['b@y.example']), '0001');
      // sweeps that run against the jumped clock
      await until(d, (lines) => sweepsAfter(mark)(lines) >= 3);
      assert.ok(d.lines.slice(mark).every((l) => !l.startsWith('sweep ') || / deleted=0 /.test(l)), d.lines.slice(mark).join('\n'));

      mark = await setTestClock(d, clockFile, 0);
      assert.equal(d.lines.filter((l) => l.startsWith('warning clock jumped back 2592000s against the monotonic clock')).length, 1, d.lines.join('\n'));
      // the known-good IP survived the sweeps during the jump
      assert.equal(await query(d.port, '192.0.2.1', 'q@x.example', ['r@y.example']), '0102');
      // what was first seen during the jump waits min-resend from now, not 30 days
      assert.equal(await query(d.port, '192.0.2.3', 'a@x.example', ['b@y.example']), '0002');
      await setTestClock(d, clockFile, 301);
      assert.equal(await query(d.port, '192.0.2.3', 'a@x.example', ['b@y.example']), '0103');
      assert.equal(d.lines.filter((l) => l.startsWith('warning clock jumped')).length, 3, 'each jump logged once');
    } finally {
      await d.stop();
    }
  } finally {
    removeDir(dir);
  }
});

test('qgreyctl stats reports future-dated records: count and the furthest ahead', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  const now = Math.floor(Date.now() / 1000);
  try {
    const store = await Store.open(state);
    await store.write([
      [ipKey('192.0.2.1'), now + 30 * D],
      [tripletDbKey('192.0.2.1 a@x b@y'), now + 2 * D],
      [tripletDbKey('192.0.2.1 a@x c@y'), now - 60],
    ]);
    await store.close();
    for (const running of [true, false]) {
      const d = running ? await startDaemon(['127.0.0.1:0', state]) : null;
      try {
        const r = await ctlInProcess(['stats', '--json', '--state', state]);
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual((JSON.parse(r.stdout) as { future: unknown }).future, { count: 2, furthest: now + 30 * D });
        const text = await ctlInProcess(['stats', '--state', state]);
        assert.match(text.stdout, /^known-good IPs +1 .*newest \S+ \(in (29d23h|30d0h)\)$/m);
        assert.match(text.stdout, /^future-dated +2 \(dated ahead of now.*; furthest \S+ \((29d23h|30d0h) ahead\)$/m);
      } finally {
        await d?.stop();
      }
    }
  } finally {
    removeDir(dir);
  }
});

test('a corrupt block: the daemon logs it once, and its sweeps go on past it', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  const now = Math.floor(Date.now() / 1000);
  try {
    const store = await Store.open(state);
    for (let b = 0; b < 30_000; b += 5000) {
      const ops: Array<[string, number]> = [];
      for (let i = b; i < b + 5000; i++) ops.push([tripletDbKey(`192.0.2.${i % 250} s${String(i).padStart(7, '0')}@x.example r@y.example`), now - 60]);
      await store.write(ops);
    }
    await store.write([[ipKey('203.0.113.1'), now - 8 * D]]);
    await store.compact();
    await store.close();
    const table = join(state, readdirSync(state).find((f) => f.endsWith('.ldb'))!);
    const fd = openSync(table, 'r+');
    writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, Math.floor(statSync(table).size / 3));
    closeSync(fd);

    const d = await startDaemon(['-s', '0.01', '127.0.0.1:0', state]);
    try {
      // the dead IP lies after the damaged block
      await d.waitForLine(/^sweep scanned=\d+ deleted=1 /);
      await until(d, (lines) => sweepsAfter(0)(lines) >= 3);
      const errors = d.lines.filter((l) => l.startsWith('error sweep'));
      assert.equal(errors.length, 1, d.lines.join('\n'));
      assert.match(errors[0], /^error sweep stepped over a corrupt part of the store, and will each time until it is repaired: ".*Corruption: .*qgreyd --repair /);
      assert.equal(await query(d.port, '192.0.2.9', 'a@x.example', ['b@y.example']), '0001', 'requests are answered');
    } finally {
      await d.stop();
    }
  } finally {
    removeDir(dir);
  }
});
