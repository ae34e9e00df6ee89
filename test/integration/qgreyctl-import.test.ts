// qgreyctl import: a greydaemon save file, imported with the daemon stopped and while it
// runs; the daemon's UDP replies prove that the times were kept and dead records skipped.
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { query, removeDir, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { ctlInProcess } from '../ctl-helpers.js';

function saveFile(dir: string): string {
  const now = Math.floor(Date.now() / 1000);
  const file = join(dir, 'savefile');
  writeFileSync(
    file,
    [
      `G ${now - 600} 192.0.2.10 a@x.example b@y.example`, // 10 minutes old: a retry passes
      `G ${now - 13 * 3600} 192.0.2.11 a@x.example b@y.example`, // 13 hours: dead with -g 12
      `I ${now - 3600} 192.0.2.12`, // known good an hour ago
      `I ${now - 8 * 86400} 192.0.2.13`, // idle 8 days: dead with -t 7
      `G ${now - 60} 192.0.2.14 c@x.example d@y.example`, // a minute old: too soon
      `G ${now - 600} 192.0.2.15 . list@y.example`, // a bounce
      `G ${now - 600} 2001:DB8::1 v6@x.example v6@y.example`, // IPv6, not in canonical form
      '',
    ].join('\n'),
    'latin1',
  );
  return file;
}

async function assertReplies(d: Daemon): Promise<void> {
  assert.equal(await query(d.port, '192.0.2.10', 'a@x.example', ['b@y.example']), '0103', 'first seen 10 minutes ago: passes');
  assert.equal(await query(d.port, '192.0.2.11', 'a@x.example', ['b@y.example']), '0001', 'dead at import: new');
  assert.equal(await query(d.port, '192.0.2.12', 'q@q.example', ['r@r.example']), '0102', 'known good');
  assert.equal(await query(d.port, '192.0.2.13', 'q@q.example', ['r@r.example']), '0001', 'known-good status had lapsed');
  assert.equal(await query(d.port, '192.0.2.14', 'c@x.example', ['d@y.example']), '0002', 'a minute old: too soon');
  assert.equal(await query(d.port, '192.0.2.15', '', ['list@y.example']), '0103', 'the bounce passes');
  assert.equal(await query(d.port, '2001:db8::1', 'v6@x.example', ['v6@y.example']), '0103', 'IPv6 keyed canonically');
}

const COUNTS = /7 records; 5 written, 2 skipped as dead, 0 kept the stored record/;

test('import with the daemon stopped keeps the times', async () => {
  const dir = tempDir();
  try {
    const file = saveFile(dir);
    const state = join(dir, 'data');
    const r = await ctlInProcess(['import', file, '--state', state]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, COUNTS);
    const again = await ctlInProcess(['--state', state, 'import', file]);
    assert.match(again.stdout, /0 written, 2 skipped as dead, 5 kept the stored record/, 'importing twice changes nothing');
    const d = await startDaemon(['127.0.0.1:0', state]);
    try {
      await assertReplies(d);
    } finally {
      await d.stop();
    }
  } finally {
    removeDir(dir);
  }
});

test('import while the daemon runs goes through it, with its settings, and is logged', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  const d = await startDaemon(['127.0.0.1:0', state]);
  try {
    const file = saveFile(dir);
    // -g 24 would keep the 13-hour triplet alive; the daemon's own -g 12 must win
    const r = await ctlInProcess(['import', '-g', '24', file, '--state', state]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /through the running daemon/);
    assert.match(r.stdout, COUNTS);
    assert.match(r.stderr, /the daemon is running, so its own settings apply .*-g ignored/);
    await d.waitForLine(/^admin op=import records=7 imported=5 dead=2 kept=0$/);
    await assertReplies(d);
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('a file with unreadable lines imports nothing, names the lines, and --skip-bad imports the rest', async () => {
  const dir = tempDir();
  try {
    const now = Math.floor(Date.now() / 1000);
    const file = join(dir, 'save');
    writeFileSync(
      file,
      [
        `I ${now} 192.0.2.1`,
        `G ${now} 192.0.2.1 a@x.example`, // 4 fields
        `X ${now} 192.0.2.1`,
        `I yesterday 192.0.2.2`,
        `I ${now} 192.0.2.300`,
        `I ${now + 30 * 86400} 192.0.2.3`, // a month ahead
        `G ${now} 192.0.2.4 a@x.example b@y.example`,
      ].join('\n') + '\n',
    );
    const state = join(dir, 'data');
    const r = await ctlInProcess(['import', file, '--state', state]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, /save:2: a G line has 5 fields/);
    assert.match(r.stderr, /save:3: starts with "X", not I or G/);
    assert.match(r.stderr, /save:4: time "yesterday" is not Unix seconds/);
    assert.match(r.stderr, /save:5: "192.0.2.300" is not an IPv4 or IPv6 address/);
    assert.match(r.stderr, /save:6: time \d+ is more than a day in the future/);
    assert.match(r.stderr, /has 5 unreadable lines of 7; nothing imported \(fix them, or give --skip-bad to import the 2 good records\)/);
    assert.deepEqual(readdirSync(dir), ['save'], 'not even a store was created');

    const dry = await ctlInProcess(['import', '--dry-run', file, '--state', state]);
    assert.match(dry.stdout, /7 lines, 2 records, 5 unreadable.*nothing written \(dry run\)/);

    const skip = await ctlInProcess(['import', '--skip-bad', file, '--state', state]);
    assert.equal(skip.code, 0, skip.stderr);
    assert.match(skip.stdout, /2 records; 2 written.*5 unreadable lines skipped/);
    const dump = await ctlInProcess(['dump', '--state', state]);
    assert.deepEqual(
      dump.stdout.trim().split('\n').map((l) => l.split(' ').slice(0, 2).join(' ')),
      ['known-good 192.0.2.1', 'triplet 192.0.2.4'],
    );
  } finally {
    removeDir(dir);
  }
});

test('import of a missing file, a directory or no file is a clear permanent error', async () => {
  const dir = tempDir();
  try {
    const missing = await ctlInProcess(['import', join(dir, 'nope'), '--state', join(dir, 'data')]);
    assert.equal(missing.code, 100);
    assert.match(missing.stderr, /^qgreyctl: import: cannot read .*nope \(ENOENT\); give a greydaemon save file\n$/);
    const directory = await ctlInProcess(['import', dir, '--state', join(dir, 'data')]);
    assert.equal(directory.code, 100);
    assert.match(directory.stderr, /\(EISDIR\)/);
    const none = await ctlInProcess(['import']);
    assert.equal(none.code, 100);
    assert.match(none.stderr, /import: needs one greydaemon save file/);
  } finally {
    removeDir(dir);
  }
});
