// The built daemon, spawned on an ephemeral port and spoken to over UDP.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { encodeRequest } from '../../src/protocol.js';
import { boundSocket, query, runDaemon, sendRaw, setTestClock, type Daemon, tracked } from '../helpers.js';

const { dir, daemon } = tracked();
function start(args: string[], env?: NodeJS.ProcessEnv): Promise<Daemon> {
  return daemon(args, env === undefined ? {} : { env });
}

// -m 0.02: min-resend 1.2 s; time passes through the daemon's test clock hook (a file of
// seconds added to its wall clock, read at start and on SIGUSR2), not through sleeps
const FAST = ['-m', '0.02'];
const LATER = 10;

function clockFile(offset: number): NodeJS.ProcessEnv {
  const file = join(dir(), 'clock');
  writeFileSync(file, `${offset}\n`);
  return { ...process.env, QGREYD_TEST_CLOCK_FILE: file };
}

async function advance(d: Daemon, env: NodeJS.ProcessEnv, offset: number): Promise<void> {
  await setTestClock(d, env.QGREYD_TEST_CLOCK_FILE!, offset);
}

describe('qgreyd over UDP', () => {
  it('answers the greylisting sequence and logs each decision', async () => {
    const state = dir();
    const env = clockFile(0);
    const d = await start([...FAST, '127.0.0.1:0', state], env);
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0002');
    await advance(d, env, LATER);
    assert.equal(await query(d.port, '192.0.2.1', 'A@X.EXAMPLE', ['B@Y.EXAMPLE']), '0103');
    assert.equal(await query(d.port, '192.0.2.1', 'other@z.example', ['c@y.example']), '0102');
    assert.equal(await query(d.port, '192.0.2.3', '', ['list-bounce-u=h.example@lists.example']), '0104');
    assert.equal(await query(d.port, '192.0.2.5', 'a@x.example', []), '0103');
    const line = await d.waitForLine(/ip=192\.0\.2\.1 .*reason=new/);
    assert.match(line, /^client=127\.0\.0\.1:\d+ ip=192\.0\.2\.1 from=<a@x\.example> to=<b@y\.example> reply=00:01 reason=new$/);
    await d.waitForLine(/reply=00:02 reason=too-soon$/);
    await d.waitForLine(/reply=01:03 reason=passed$/);
    await d.waitForLine(/from=<other@z\.example> to=<c@y\.example> reply=01:02 reason=known-good$/);
    await d.waitForLine(/from=<> to=<list-bounce-u=h\.example@lists\.example> reply=01:04 reason=verp-bounce$/);
    assert.equal(await d.stop(), 0);
  });

  it('keeps state across a clean restart', async () => {
    const state = dir();
    let d = await start([...FAST, '127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.20', 'a@x', ['b@y']), '0001');
    assert.equal(await d.stop(), 0);
    assert.ok(d.lines.some((l) => /^stopped received=1 replied=1 /.test(l)));
    d = await start([...FAST, '127.0.0.1:0', state], clockFile(LATER));
    assert.equal(await query(d.port, '192.0.2.20', 'a@x', ['b@y']), '0103');
    assert.equal(await query(d.port, '192.0.2.20', 'new@x', ['new@y']), '0102');
    assert.equal(await d.stop(), 0);
  });

  it('loses no answered decision when killed with SIGKILL right after replying', async () => {
    const state = dir();
    let d = await start(['-m', '5', '127.0.0.1:0', state]);
    const N = 200;
    const replies = await Promise.all(
      Array.from({ length: N }, (_, i) => query(d.port, `198.51.100.${i % 250}`, `s${i}@x`, [`r${i}@y`, `q${i}@y`])),
    );
    assert.ok(replies.every((r) => r === '0001'), replies.join(' '));
    // one more, and the kill follows the reply at once
    assert.equal(await query(d.port, '203.0.113.9', 'last@x', ['last@y']), '0001');
    d.proc.kill('SIGKILL');
    await d.exited;
    d = await start(['-m', '5', '127.0.0.1:0', state]);
    const again = await Promise.all(
      Array.from({ length: N }, (_, i) => query(d.port, `198.51.100.${i % 250}`, `s${i}@x`, [`r${i}@y`, `q${i}@y`])),
    );
    assert.ok(again.every((r) => r === '0002'), again.join(' '));
    assert.equal(await query(d.port, '203.0.113.9', 'last@x', ['last@y']), '0002');
    assert.equal(await d.stop(), 0);
  });

  it('ignores malformed datagrams: no reply, logged with the reason, no state change', async () => {
    const state = dir();
    const d = await start([...FAST, '127.0.0.1:0', state]);
    const bad = [
      Buffer.from('X192.0.2.30\0Fa@x\0Tb@y\0\0', 'latin1'),
      Buffer.from('I192.0.2.30\0Fa@x\0Tb@y\0Qjunk\0\0', 'latin1'),
      Buffer.from('I192.0.2.30\0Fa@x\0\0Tb@y\0\0', 'latin1'),
      Buffer.from('Inot an ip\0Fa@x\0Tb@y\0\0', 'latin1'),
      Buffer.alloc(0),
      Buffer.from([0xff, 0xfe, 0x00, 0x01]),
      encodeRequest('192.0.2.30', 'a@x', ['b@y', 'r'.repeat(513)]),
    ];
    for (const b of bad) assert.equal(await sendRaw(d.port, b, '127.0.0.1', 300), null);
    // the triplet in the bad datagrams was never stored: a good request for it is new
    assert.equal(await query(d.port, '192.0.2.30', 'a@x', ['b@y']), '0001');
    await d.waitForLine(/reason=malformed bytes=\d+ detail="first field does not start with I"/);
    await d.waitForLine(/ip=192\.0\.2\.30 reply=none reason=malformed bytes=\d+ detail="field 4 does not start with T"/);
    await d.waitForLine(/reason=malformed bytes=0 detail="empty datagram"/);
    await d.waitForLine(/detail="client IP is neither an address nor printable text without spaces"/);
    await d.waitForLine(/detail="recipient 2 of length 513 is longer than 512"/);
    assert.equal(d.proc.exitCode, null);
    assert.equal(await d.stop(), 0);
  });

  it('escapes addresses so that they cannot forge a log line', async () => {
    const state = dir();
    const d = await start([...FAST, '127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.40', 'evil@x\nclient=1.2.3.4 reply=01:01', ['a b@y\r']), '0001');
    const line = await d.waitForLine(/ip=192\.0\.2\.40/);
    assert.equal(line, 'client=127.0.0.1:' + /client=127\.0\.0\.1:(\d+)/.exec(line)![1] +
      ' ip=192.0.2.40 from=<evil@x\\x0aclient=1.2.3.4\\x20reply=01:01> to=<a\\x20b@y\\x0d> reply=00:01 reason=new');
    assert.ok(!d.lines.some((l) => l.startsWith('client=1.2.3.4')));
    await d.stop();
  });

  it('reloads the whitelist on SIGHUP and keeps the old one when the new file is bad', async () => {
    const state = dir();
    const wl = join(dir(), 'whitelist');
    writeFileSync(wl, '# test\n127.0.0.1\n');
    const d = await start([...FAST, '-w', wl, '127.0.0.1:0', state]);
    assert.match(d.lines[0], /whitelist-entries=1 /);
    assert.equal(await query(d.port, '192.0.2.50', 'a@x', ['b@y']), '0001');
    writeFileSync(wl, '127.0.0.1\n192.0.2.0/24\n');
    d.proc.kill('SIGHUP');
    await d.waitForLine(/^whitelist reloaded file=.* entries=2$/);
    assert.equal(await query(d.port, '192.0.2.50', 'a@x', ['b@y']), '0101');
    await d.waitForLine(/ip=192\.0\.2\.50 .*reply=01:01 reason=whitelisted whitelist=.*:2$/);
    writeFileSync(wl, '127.0.0.1\nnot-an-address\n');
    d.proc.kill('SIGHUP');
    await d.waitForLine(/^error whitelist reload failed, keeping the old list \(2 entries\): .*:2: \\x22not-an-address\\x22 has no address in it/);
    assert.equal(await query(d.port, '192.0.2.50', 'a@x', ['b@y']), '0101');
    assert.equal(await d.stop(), 0);
  });

  it('exits 0 on SIGTERM and on SIGINT, closing the database', async () => {
    const state = dir();
    let d = await start(['127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.60', 'a@x', ['b@y']), '0001');
    assert.equal(await d.stop('SIGTERM'), 0);
    assert.ok(d.lines.includes('stop signal=SIGTERM'));
    // the lock was released: a new daemon opens the same store at once
    d = await start(['127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.60', 'a@x', ['b@y']), '0002');
    assert.equal(await d.stop('SIGINT'), 0);
    assert.ok(d.lines.includes('stop signal=SIGINT'));
  });

  it('listens on IPv6 loopback', async () => {
    const state = dir();
    const d = await start(['[::1]:0', state]);
    assert.match(d.lines[0], /listen=\[::1\]:\d+ /);
    assert.equal(await query(d.port, '2001:db8::1', 'a@x', ['b@y'], '::1'), '0001');
    assert.equal(await query(d.port, '2001:DB8:0::1', 'a@x', ['b@y'], '::1'), '0002');
    await d.waitForLine(/^client=\[::1\]:\d+ ip=2001:db8::1 /);
    await d.stop();
  });

  it('sweeps dead records every -s minutes', async () => {
    const state = dir();
    // grey window 0.0005 h = 1.8 s, sweep every 0.01 min = 0.6 s
    const d = await start(['-m', '0.01', '-g', '0.0005', '-s', '0.01', '127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.70', 'a@x', ['b@y']), '0001');
    await d.waitForLine(/^sweep scanned=\d+ deleted=1 ms=\d+$/, 8000);
    // deleted, so it is new again rather than stale
    assert.equal(await query(d.port, '192.0.2.70', 'a@x', ['b@y']), '0001');
    await d.stop();
  });

  it('logs each triplet with -d', async () => {
    const state = dir();
    const d = await start(['-d', '127.0.0.1:0', state]);
    assert.equal(await query(d.port, '192.0.2.80', 'A@x', ['b@y', 'c@y']), '0001');
    await d.waitForLine(/^debug client=127\.0\.0\.1:\d+ triplet=<192\.0\.2\.80\\x20a@x\\x20c@y> outcome=new age=-$/);
    await d.stop();
  });
});

describe('qgreyd start-up errors', () => {
  it('prints usage for --help and the version for --version', async () => {
    const h = await runDaemon(['--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /^usage: qgreyd /);
    const v = await runDaemon(['--version']);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^qgreyd \d+\.\d+\.\d+\n$/);
  });

  const cases: Array<[string, string[], number, RegExp]> = [
    ['an unknown flag', ['-x', '127.0.0.1:0'], 100, /unknown option -x/],
    ['a non-numeric -m', ['-m', 'five', '127.0.0.1:0'], 100, /-m \(--min-resend\): "five" is not a number of minutes/],
    ['a zero -t', ['-t', '0', '127.0.0.1:0'], 100, /-t \(--timeout\): "0" is not a positive number of days/],
    ['-g not longer than -m', ['-g', '0.05', '-m', '3', '127.0.0.1:0'], 100, /no retry could ever pass/],
    ['a bad address', ['mail.example:1999'], 100, /ipaddr: "mail.example" is not an IPv4 or IPv6 address/],
    ['a bad port', ['127.0.0.1:70000'], 100, /port: "70000" is not a port number/],
    ['too many arguments', ['127.0.0.1:0', 'a', 'b'], 100, /too many arguments/],
    ['an unknown user', ['-u', 'no-such-user-qgreyd', '127.0.0.1:0'], 100, /user "no-such-user-qgreyd" does not exist; create it/],
  ];
  for (const [what, args, code, re] of cases) {
    it(`exits ${code} for ${what}`, async () => {
      const state = dir();
      const r = await runDaemon([...args, ...(args.length < 3 && !args.some((a) => a === 'a') ? [join(state, 's')] : [])]);
      assert.equal(r.code, code, r.stderr);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /^qgreyd: [^\n]*\n$/);
    });
  }

  it('exits 100 for a bad whitelist line, naming file:line and the text', async () => {
    const wl = join(dir(), 'wl');
    writeFileSync(wl, '127.0.0.1\n\n# x\nmx.example.com\n');
    const r = await runDaemon(['-w', wl, '127.0.0.1:0', join(dir(), 's')]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, new RegExp(`whitelist ${wl}:4: "mx.example.com" has no address in it`));
  });

  it('exits 100 for a missing whitelist file', async () => {
    const r = await runDaemon(['-w', '/nonexistent/wl', '127.0.0.1:0', join(dir(), 's')]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, /whitelist \/nonexistent\/wl: cannot read it \(ENOENT\)/);
  });

  it('exits 100 when the state path is a regular file with no save-file record in it', async () => {
    const f = join(dir(), 'notes');
    writeFileSync(f, 'remember the milk\n');
    const r = await runDaemon(['127.0.0.1:0', f]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, /save file .*notes: no line of it is a greydaemon record \(line 1: .*\), so it is not a save file/);
  });

  it('exits 111 when the address is in use', async () => {
    const sock = await boundSocket('127.0.0.1');
    try {
      const r = await runDaemon([`127.0.0.1:${sock.address().port}`, join(dir(), 's')]);
      assert.equal(r.code, 111);
      assert.match(r.stderr, /address in use/);
    } finally {
      sock.close();
    }
  });

  it('exits 111 when another daemon holds the store', async () => {
    const state = dir();
    const d = await start(['127.0.0.1:0', state]);
    const r = await runDaemon(['127.0.0.1:0', state]);
    assert.equal(r.code, 111);
    assert.match(r.stderr, /is locked by another process/);
    await d.stop();
  });
});
