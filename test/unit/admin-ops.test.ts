// The store operations behind qgreyctl, on a real store: the save-file format and how an
// import merges with what is stored.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { dump, Importer, recordFromKey, type OpsContext } from '../../src/admin/ops.js';
import { formatSaveLine, parseSaveLine, type SaveRecord } from '../../src/savefile.js';
import { settingsFrom } from '../../src/policy.js';
import { ipKey, Store, tripletDbKey } from '../../src/store/leveldb.js';
import { removeDir, tempDir } from '../helpers.js';

const NOW = 1_700_000_000;

test('save lines parse as the daemon keys them', () => {
  assert.deepEqual(parseSaveLine('I 1699999000 192.0.2.1', NOW), { kind: 'ip', ip: '192.0.2.1', time: 1699999000 });
  assert.deepEqual(parseSaveLine('G 1699999000 ::FFFF:192.0.2.1 A@X.example b@y.example\r', NOW), {
    kind: 'triplet', ip: '192.0.2.1', sender: 'a@x.example', rcpt: 'b@y.example', time: 1699999000,
  });
  assert.deepEqual(parseSaveLine('G 1699999000 2001:DB8:0:0::1 . ', NOW), { kind: 'triplet', ip: '2001:db8::1', sender: '.', rcpt: '', time: 1699999000 });
  assert.equal(parseSaveLine('   ', NOW), null);
  assert.deepEqual(parseSaveLine('G 1699999000 192.0.2.1  b@y.example', NOW), { error: 'empty sender (the save file writes a bounce as ".")' });
  assert.match((parseSaveLine('I -5 192.0.2.1', NOW) as { error: string }).error, /not Unix seconds/);
  assert.match((parseSaveLine(`I ${NOW + 2 * 86400} 192.0.2.1`, NOW) as { error: string }).error, /in the future/);
  const r: SaveRecord = { kind: 'triplet', ip: '192.0.2.1', sender: '.', rcpt: 'x@y', time: 5 };
  assert.equal(formatSaveLine(r), 'G 5 192.0.2.1 . x@y');
  assert.deepEqual(recordFromKey(tripletDbKey('192.0.2.1 . x@y'), 5), r);
  assert.deepEqual(recordFromKey(ipKey('::1'), 7), { kind: 'ip', ip: '::1', time: 7 });
});

test('import keeps the better evidence: later last-good, earlier live first-seen', async () => {
  const dir = tempDir();
  const store = await Store.open(join(dir, 'data'));
  try {
    const ctx: OpsContext = { store, settings: settingsFrom(7, 12, 5), clock: () => NOW, exclusive: (fn) => fn(), write: (ops) => store.write(ops) };
    const deadTriplet = NOW - 13 * 3600;
    await store.write([
      [ipKey('192.0.2.1'), NOW - 100],
      [ipKey('192.0.2.2'), NOW - 100],
      [tripletDbKey('192.0.2.3 a@x b@y'), NOW - 600],
      [tripletDbKey('192.0.2.4 a@x b@y'), NOW - 600],
      [tripletDbKey('192.0.2.5 a@x b@y'), deadTriplet],
    ]);
    const imp = new Importer(ctx);
    await imp.add([
      { kind: 'ip', ip: '192.0.2.1', time: NOW - 50 }, // later: replaces
      { kind: 'ip', ip: '192.0.2.2', time: NOW - 500 }, // earlier: kept
      { kind: 'triplet', ip: '192.0.2.3', sender: 'a@x', rcpt: 'b@y', time: NOW - 900 }, // earlier: replaces
      { kind: 'triplet', ip: '192.0.2.4', sender: 'a@x', rcpt: 'b@y', time: NOW - 400 }, // later: kept
      { kind: 'triplet', ip: '192.0.2.5', sender: 'a@x', rcpt: 'b@y', time: NOW - 1000 }, // stored one is dead: replaces
      { kind: 'triplet', ip: '192.0.2.6', sender: 'a@x', rcpt: 'b@y', time: NOW - 700 },
      { kind: 'triplet', ip: '192.0.2.6', sender: 'A@X', rcpt: 'b@y', time: NOW - 800 }, // same key, earlier: wins
      { kind: 'triplet', ip: '192.0.2.7', sender: 'a@x', rcpt: 'b@y', time: deadTriplet }, // dead: skipped
    ]);
    assert.deepEqual(imp.counts, { records: 8, imported: 4, dead: 1, kept: 3 });
    const got = await store.get([
      ipKey('192.0.2.1'),
      ipKey('192.0.2.2'),
      tripletDbKey('192.0.2.3 a@x b@y'),
      tripletDbKey('192.0.2.4 a@x b@y'),
      tripletDbKey('192.0.2.5 a@x b@y'),
      tripletDbKey('192.0.2.6 a@x b@y'),
      tripletDbKey('192.0.2.7 a@x b@y'),
    ]);
    assert.deepEqual(got, [NOW - 50, NOW - 100, NOW - 900, NOW - 600, NOW - 1000, NOW - 800, undefined]);
    // an IP's triplets are found by prefix without catching 192.0.2.30 for 192.0.2.3
    await store.write([[tripletDbKey('192.0.2.30 a@x b@y'), NOW]]);
    const chunks: SaveRecord[][] = [];
    for await (const c of dump(ctx, { ip: '192.0.2.3', only: 'triplet' })) chunks.push(c);
    assert.deepEqual(chunks.flat().map((r) => r.ip), ['192.0.2.3']);
  } finally {
    await store.close();
    removeDir(dir);
  }
});
