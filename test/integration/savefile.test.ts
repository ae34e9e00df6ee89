// The save file round trip: whatever bytes a stored address holds, `qgreyctl export` writes a
// file that `import` reads back to the identical records (the daemon stopped, and through the
// running daemon); plain greydaemon files are read byte for byte as before. And qgreyctl does
// not wait forever on a daemon that does not answer.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { formatSaveLine, parseSaveLine } from '../../src/savefile.js';
import { tripletKey } from '../../src/policy.js';
import { ipKey, IP_PREFIX, Store, TRIPLET_PREFIX, tripletDbKey } from '../../src/store/leveldb.js';
import { ctlInProcess } from '../ctl-helpers.js';
import { query, removeDir, startDaemon, tempDir } from '../helpers.js';

const NOW = Math.floor(Date.now() / 1000);

/** every byte value but the space, which the daemon removes from every address before keying
 *  (so no stored record can hold one) */
const BYTES = Array.from({ length: 256 }, (_, b) => b).filter((b) => b !== 0x20);

async function records(dir: string): Promise<Array<[string, number]>> {
  const store = await Store.open(dir);
  const out: Array<[string, number]> = [];
  try {
    for (const prefix of [IP_PREFIX, TRIPLET_PREFIX]) {
      for await (const chunk of store.scan(prefix)) for (const r of chunk) out.push([r.key, r.time]);
    }
  } finally {
    await store.close();
  }
  return out;
}

test('export then import restores identical records for every byte value in addresses and text client IPs', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  const a = join(dir, 'a');
  try {
    // through the wire, as qmail-smtpd would send them: every byte but NUL (the field end)
    const d = await startDaemon(['127.0.0.1:0', a]);
    try {
      for (const b of BYTES.filter((b) => b !== 0)) {
        const c = String.fromCharCode(b);
        const reply = await query(d.port, `192.0.2.${b % 200}`, `s${c}x@x.example`, [`r${c}y@y.example`, `${c}`]);
        assert.equal(reply, '0001', `byte ${b}`);
      }
    } finally {
      await d.stop();
    }
    // what the wire cannot carry: NUL in addresses, and clients that did not know their
    // address (sent as text), with every byte; keyed with the daemon's own key functions
    const store = await Store.open(a);
    const ops: Array<[string, number]> = [[tripletDbKey(tripletKey('192.0.2.250', 's\0x@x.example', '\0')), NOW - 100]];
    for (const b of BYTES) {
      const ip = `unk${String.fromCharCode(b)}nown`;
      ops.push([ipKey(ip), NOW - 50], [tripletDbKey(tripletKey(ip, `s${String.fromCharCode(b)}@x`, 'r@y')), NOW - 40]);
    }
    await store.write(ops);
    await store.close();
    const original = await records(a);
    // the triplet key is lower-cased as a whole, so "unkAnown" and "unkanown" share triplets
    assert.equal(original.length, 254 * 2 + 1 + 255 + (255 - 26));

    const exported = await ctlInProcess(['export', '--state', a]);
    assert.equal(exported.code, 0, exported.stderr);
    const text = exported.stdout;
    const lines = text.slice(0, -1).split('\n');
    assert.equal(lines.length, original.length, 'one line per record');
    for (const l of lines) assert.match(l, /^[IG]%? \d+ /);
    // a record with nothing to escape is the line greydaemon writes, byte for byte
    const high = original.find(([k]) => k === 'G 192.0.2.128 s\x80x@x.example r\x80y@y.example');
    assert.ok(high !== undefined && lines.includes(`G ${high[1]} 192.0.2.128 s\x80x@x.example r\x80y@y.example`));
    assert.ok(lines.includes(`I ${NOW - 50} unk%nown`), 'a "%" in a plain line is itself');
    // and one with a control character is escaped
    assert.ok(lines.includes(`G% ${NOW - 100} 192.0.2.250 s%00x@x.example %00`));
    assert.ok(lines.includes(`I% ${NOW - 50} unk%0Anown`));
    const file = join(dir, 'save');
    writeFileSync(file, text, 'latin1');

    // daemon stopped: qgreyctl opens the new store itself
    const b = join(dir, 'b');
    const offline = await ctlInProcess(['import', file, '--state', b]);
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stdout, new RegExp(`${original.length} written`));
    assert.deepEqual(await records(b), original, 'offline import');

    // through the running daemon
    const c = join(dir, 'c');
    const d2 = await startDaemon(['127.0.0.1:0', c]);
    try {
      const viaDaemon = await ctlInProcess(['import', file, '--state', c]);
      assert.equal(viaDaemon.code, 0, viaDaemon.stderr);
      assert.match(viaDaemon.stdout, /through the running daemon/);
      const again = await ctlInProcess(['export', '--state', c]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(Buffer.from(again.stdout, 'latin1').equals(Buffer.from(text, 'latin1')), true, 'the daemon exports the same file');
    } finally {
      await d2.stop();
    }
    assert.deepEqual(await records(c), original, 'import through the daemon');
  } finally {
    removeDir(dir);
  }
});

test('save lines: plain greydaemon lines are literal, escaped lines decode, bad escapes are named', () => {
  // greydaemon files may hold "%" and "\" in addresses: taken as they are
  assert.deepEqual(parseSaveLine(`G ${NOW} 192.0.2.1 a%41b@x c\\x0a@y`, NOW), { kind: 'triplet', ip: '192.0.2.1', sender: 'a%41b@x', rcpt: 'c\\x0a@y', time: NOW });
  assert.deepEqual(parseSaveLine(`G% ${NOW} 192.0.2.1 a%0Ab@x %25%FF`, NOW), { kind: 'triplet', ip: '192.0.2.1', sender: 'a\nb@x', rcpt: '%\xff', time: NOW });
  // IndiMail's client sends "unknown" for a client without an address
  assert.deepEqual(parseSaveLine(`I ${NOW} unknown`, NOW), { kind: 'ip', ip: 'unknown', time: NOW });
  assert.match((parseSaveLine(`I ${NOW} 192.0.2.300`, NOW) as { error: string }).error, /"192\.0\.2\.300" is not an IPv4 or IPv6 address/);
  assert.match((parseSaveLine(`G% ${NOW} 192.0.2.1 a%2 b`, NOW) as { error: string }).error, /field 4 .* "%" not followed by two hex digits/);
  assert.match((parseSaveLine(`G% ${NOW} 192.0.2.1 a%20b c`, NOW) as { error: string }).error, /field 4 holds an escaped space/);
  assert.match((parseSaveLine(`X% ${NOW} 192.0.2.1`, NOW) as { error: string }).error, /not I or G/);
  for (let b = 0; b < 256; b++) {
    if (b === 0x20) continue;
    const c = String.fromCharCode(b);
    const r = { kind: 'triplet', ip: '192.0.2.1', sender: `s${c}`, rcpt: `${c}r`, time: NOW } as const;
    const line = formatSaveLine(r);
    assert.ok(!line.includes('\n') && !line.endsWith('\r'), `byte ${b}: one line`);
    const lower = { ...r, sender: r.sender.toLowerCase(), rcpt: r.rcpt.toLowerCase() };
    assert.deepEqual(parseSaveLine(line, NOW), b >= 0x41 && b <= 0x5a ? lower : r, `byte ${b}: ${JSON.stringify(line)}`);
  }
});

test('qgreyctl gives up on a daemon that does not answer: exit 111 naming the socket, --wait sets how long', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const state = join(dir, 's');
  const d = await startDaemon(['127.0.0.1:0', state]);
  try {
    d.proc.kill('SIGSTOP');
    for (const args of [['stats'], ['export'], ['allow', '192.0.2.1']]) {
      const r = await ctlInProcess([...args, '--wait', '0.5', '--state', state]);
      assert.equal(r.code, 111, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^qgreyctl: ${join(state, 'admin.sock').replace(/[.]/g, '\\.')}: the daemon did not answer within 0\\.5 s .*--wait SECONDS`));
    }
    const bad = await ctlInProcess(['stats', '--wait', '0', '--state', state]);
    assert.equal(bad.code, 100);
    assert.match(bad.stderr, /^qgreyctl: stats: --wait "0" is not a number of seconds/);
    d.proc.kill('SIGCONT');
    // the same daemon, resumed, answers
    const ok = await ctlInProcess(['stats', '--json', '--wait', '5', '--state', state]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as { mode: string }).mode, 'daemon');
  } finally {
    d.proc.kill('SIGCONT');
    await d.stop();
    removeDir(dir);
  }
});
