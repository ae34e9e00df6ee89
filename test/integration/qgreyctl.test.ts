// qgreyctl against a real store: dump, stats, export, allow and forget, with the daemon
// stopped (qgreyctl opens the store) and running (through its admin socket). The daemon's
// UDP replies show that the changes took effect, including in its cache.
import assert from 'node:assert/strict';
import { statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { query, removeDir, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { ctlInProcess } from '../ctl-helpers.js';

interface Fixture {
  dir: string;
  state: string;
  now: number;
  /** the save lines, in store key order */
  lines: string[];
}

/** A store with known contents, imported with -g 24 so that one 13-hour-old triplet is stored
 *  although it is dead by the default -g 12. */
async function fixture(): Promise<Fixture> {
  const dir = tempDir();
  const state = join(dir, 'data');
  const now = Math.floor(Date.now() / 1000);
  const lines = [
    `I ${now - 3600} 192.0.2.1`,
    `I ${now - 60} 198.51.100.7`,
    `G ${now - 600} 192.0.2.1 a@x.example b@y.example`,
    `G ${now - 13 * 3600} 192.0.2.2 a@x.example c@y.example`,
    `G ${now - 120} 192.0.2.2 bob@z.example c@y.example`,
    `G ${now - 30} 203.0.113.9 . list@y.example`,
  ];
  writeFileSync(join(dir, 'save'), lines.join('\n') + '\n');
  const r = await ctlInProcess(['import', '-g', '24', join(dir, 'save'), '--state', state]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /6 written/);
  return { dir, state, now, lines };
}

for (const running of [false, true]) {
  const mode = running ? 'daemon running' : 'daemon stopped';

  test(`dump, its filters and --json (${mode})`, async () => {
    const f = await fixture();
    const d = running ? await startDaemon(['127.0.0.1:0', f.state]) : null;
    try {
      const all = await ctlInProcess(['dump', '--state', f.state]);
      assert.equal(all.code, 0, all.stderr);
      const rows = all.stdout.trim().split('\n');
      assert.equal(rows.length, 6);
      assert.match(rows[0], /^known-good 192\.0\.2\.1 last-good=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ age=1h0m$/);
      assert.match(rows[2], /^triplet 192\.0\.2\.1 <a@x\.example> <b@y\.example> first-seen=\S+Z age=10m\d+s$/);
      assert.match(rows[3], /^triplet 192\.0\.2\.2 <a@x\.example> <c@y\.example> first-seen=\S+ age=13h0m dead$/);
      assert.equal(new Date(/last-good=(\S+)/.exec(rows[0])![1]).getTime() / 1000, f.now - 3600);

      const json = await ctlInProcess(['--state', f.state, 'dump', '--json', '--ip', '192.0.2.2']);
      const objs = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; sender: string; time: number; dead: boolean });
      assert.deepEqual(objs.map((o) => [o.kind, o.sender, o.time, o.dead]), [
        ['triplet', 'a@x.example', f.now - 13 * 3600, true],
        ['triplet', 'bob@z.example', f.now - 120, false],
      ]);
      const bySender = await ctlInProcess(['dump', '--sender', 'BOB@z.example', '--state', f.state]);
      assert.deepEqual(bySender.stdout.trim().split('\n').map((l) => l.split(' ')[1]), ['192.0.2.2']);
      const byDomain = await ctlInProcess(['dump', '--sender', '@x.example', '--rcpt', 'c@y.example', '--state', f.state]);
      assert.equal(byDomain.stdout.trim().split('\n').length, 1);
      const bounces = await ctlInProcess(['dump', '--sender', '', '--state', f.state]);
      assert.match(bounces.stdout, /^triplet 203\.0\.113\.9 <> <list@y\.example> /);
      const ips = await ctlInProcess(['dump', '--ips', '--state', f.state]);
      assert.deepEqual(ips.stdout.trim().split('\n').map((l) => l.split(' ')[1]), ['192.0.2.1', '198.51.100.7']);
      const trip = await ctlInProcess(['dump', '--triplets', '--ip', '192.0.2.1', '--state', f.state]);
      assert.equal(trip.stdout.trim().split('\n').length, 1);
      const none = await ctlInProcess(['dump', '--ip', '192.0.2.99', '--state', f.state]);
      assert.equal(none.code, 0);
      assert.equal(none.stdout, '');
      if (d) await d.waitForLine(/^admin op=dump records=2 ip=192\.0\.2\.2$/);
    } finally {
      await d?.stop();
      removeDir(f.dir);
    }
  });

  test(`stats counts records, dead ones and disk use (${mode})`, async () => {
    const f = await fixture();
    const d = running ? await startDaemon(['127.0.0.1:0', f.state]) : null;
    try {
      const r = await ctlInProcess(['stats', '--json', '--state', f.state]);
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout) as {
        mode: string;
        ips: { count: number; dead: number; oldest: number; newest: number };
        triplets: { count: number; dead: number; oldest: number; newest: number };
        diskBytes: number;
      };
      assert.equal(s.mode, running ? 'daemon' : 'direct');
      assert.deepEqual(s.ips, { count: 2, dead: 0, oldest: f.now - 3600, newest: f.now - 60 });
      assert.deepEqual(s.triplets, { count: 4, dead: 1, oldest: f.now - 13 * 3600, newest: f.now - 30 });
      assert.ok(s.diskBytes > 0);
      const text = await ctlInProcess(['--state', f.state, 'stats']);
      assert.match(text.stdout, /^triplets +4 \(dead, not yet swept: 1\); oldest /m);
      assert.match(text.stdout, running ? /daemon running, asked through its admin socket/ : /daemon not running, store opened directly/);
      if (!running) {
        // without the daemon, qgreyctl judges deadness by the flags it is given
        const wide = await ctlInProcess(['stats', '--json', '-g', '24', '--state', f.state]);
        assert.equal((JSON.parse(wide.stdout) as { triplets: { dead: number } }).triplets.dead, 0);
      }
    } finally {
      await d?.stop();
      removeDir(f.dir);
    }
  });

  test(`export writes the save file format, and importing it reproduces the store (${mode})`, async () => {
    const f = await fixture();
    const d = running ? await startDaemon(['127.0.0.1:0', f.state]) : null;
    try {
      const r = await ctlInProcess(['export', '--state', f.state]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), f.lines);
      assert.match(r.stderr, /exported 2 known-good IPs and 4 triplets/);
      writeFileSync(join(f.dir, 'exported'), r.stdout, 'latin1');
      const copy = join(f.dir, 'copy');
      const imp = await ctlInProcess(['import', '-g', '24', join(f.dir, 'exported'), '--state', copy]);
      assert.equal(imp.code, 0, imp.stderr);
      const again = await ctlInProcess(['export', '--state', copy]);
      assert.equal(again.stdout, r.stdout);
      if (d) await d.waitForLine(/^admin op=export records=6$/);
    } finally {
      await d?.stop();
      removeDir(f.dir);
    }
  });
}

test('allow and forget while the daemon runs take effect at once, past its cache, and are logged', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  const d = await startDaemon(['127.0.0.1:0', state]);
  try {
    // the daemon has now cached "no record" for the IP and the triplet it stored
    assert.equal(await query(d.port, '192.0.2.20', 'a@x.example', ['b@y.example']), '0001');
    const allow = await ctlInProcess(['allow', '192.0.2.20', '--state', state]);
    assert.equal(allow.code, 0, allow.stderr);
    assert.match(allow.stdout, /^allowed 192\.0\.2\.20: known good from \S+Z \(was not known\)\n$/);
    await d.waitForLine(/^admin op=allow ip=192\.0\.2\.20 time=\d+ previous=-$/);
    assert.equal(await query(d.port, '192.0.2.20', 'q@q.example', ['r@r.example']), '0102');

    const forget = await ctlInProcess(['--state', state, 'forget', '192.0.2.20']);
    assert.equal(forget.code, 0, forget.stderr);
    assert.match(forget.stdout, /^forgot 192\.0\.2\.20 and its triplets: 2 records deleted\n$/);
    await d.waitForLine(/^admin op=forget ip=192\.0\.2\.20 deleted=2$/);
    // a stale cache would still say known good (01 02), or too soon for the triplet
    assert.equal(await query(d.port, '192.0.2.20', 'a@x.example', ['b@y.example']), '0001');

    assert.equal(await query(d.port, '192.0.2.21', 'c@x.example', ['d@y.example']), '0001');
    assert.equal(await query(d.port, '192.0.2.21', 'c@x.example', ['d@y.example']), '0002');
    const one = await ctlInProcess(['forget', '192.0.2.21', 'C@X.example', 'd@Y.EXAMPLE', '--state', state]);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /^forgot triplet 192\.0\.2\.21 <c@x\.example> <d@y\.example>: 1 record deleted\n$/);
    await d.waitForLine(/^admin op=forget ip=192\.0\.2\.21 sender=<c@x\.example> rcpt=<d@y\.example> deleted=1$/);
    assert.equal(await query(d.port, '192.0.2.21', 'c@x.example', ['d@y.example']), '0001', 'new again, not too soon');

    const nothing = await ctlInProcess(['forget', '192.0.2.99', '--state', state]);
    assert.equal(nothing.code, 1);
    assert.match(nothing.stdout, /^nothing to forget: no record of 192\.0\.2\.99 and its triplets\n$/);
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('allow and forget with the daemon stopped are what it finds when it starts', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  let d: Daemon | null = null;
  try {
    const allow = await ctlInProcess(['allow', '::ffff:192.0.2.30', '--state', state]);
    assert.equal(allow.code, 0, allow.stderr);
    assert.match(allow.stdout, /^allowed 192\.0\.2\.30: /, 'keyed as the daemon keys a mapped address');
    d = await startDaemon(['127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.30', 'q@q.example', ['r@r.example']), '0102');
    assert.equal(await query(d.port, '192.0.2.31', 'a@x.example', ['b@y.example']), '0001');
    await d.stop();
    d = null;
    const forget = await ctlInProcess(['forget', '192.0.2.30', '--state', state]);
    assert.match(forget.stdout, /1 record deleted/);
    const one = await ctlInProcess(['forget', '192.0.2.31', 'a@x.example', 'b@y.example', '--state', state]);
    assert.match(one.stdout, /1 record deleted/);
    d = await startDaemon(['127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.30', 'q@q.example', ['r@r.example']), '0001');
    assert.equal(await query(d.port, '192.0.2.31', 'a@x.example', ['b@y.example']), '0001');
  } finally {
    await d?.stop();
    removeDir(dir);
  }
});

test('the admin socket is 0600 in a 0700 state directory; a stale one is ignored and replaced', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  let d = await startDaemon(['127.0.0.1:0', state]);
  try {
    const sock = join(state, 'admin.sock');
    await d.waitForLine(new RegExp(`^admin listen=${sock.replace(/[.]/g, '\\.')}$`));
    assert.ok(statSync(sock).isSocket());
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    assert.equal(statSync(state).mode & 0o777, 0o700);
    // a daemon killed outright leaves its socket file behind
    await d.stop('SIGKILL');
    assert.ok(statSync(sock).isSocket());
    const direct = await ctlInProcess(['allow', '192.0.2.40', '--state', state]);
    assert.equal(direct.code, 0, direct.stderr);
    d = await startDaemon(['127.0.0.1:0', state]);
    const through = await ctlInProcess(['stats', '--json', '--state', state]);
    assert.equal((JSON.parse(through.stdout) as { mode: string; ips: { count: number } }).mode, 'daemon');
    assert.equal(await query(d.port, '192.0.2.40', 'q@q.example', ['r@r.example']), '0102');
    await d.stop();
    assert.throws(() => statSync(sock), /ENOENT/, 'a clean stop removes the socket');
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('a daemon stopped in the middle of an import keeps the batches it received and logs the import incomplete', async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  const d = await startDaemon(['127.0.0.1:0', state]);
  const sock = net.createConnection(join(state, 'admin.sock'));
  try {
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const now = Math.floor(Date.now() / 1000);
    sock.write(JSON.stringify({ op: 'import' }) + '\n');
    sock.write(JSON.stringify({ records: [{ kind: 'triplet', ip: '192.0.2.60', sender: 'a@x.example', rcpt: 'b@y.example', time: now - 600 }] }) + '\n');
    // the first batch is in once a dump through the daemon shows it; no end mark is sent
    let seen = false;
    for (let i = 0; i < 50 && !seen; i++) seen = (await ctlInProcess(['dump', '--ip', '192.0.2.60', '--state', state])).stdout !== '';
    assert.ok(seen, 'the first batch was imported');
    assert.equal(await d.stop(), 0);
    assert.ok(d.lines.includes('admin op=import records=1 imported=1 dead=0 kept=0 incomplete=yes'), d.lines.join('\n'));
    assert.ok(!d.lines.some((l) => l.startsWith('error ')), 'a shutdown is not an error');
  } finally {
    sock.destroy();
    await d.stop();
  }
  const again = await startDaemon(['127.0.0.1:0', state]);
  try {
    assert.equal(await query(again.port, '192.0.2.60', 'a@x.example', ['b@y.example']), '0103');
  } finally {
    await again.stop();
    removeDir(dir);
  }
});
