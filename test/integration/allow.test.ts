// Who may ask: --allow, its defaults, and what happens to datagrams from elsewhere.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { join } from 'node:path';
import { test } from 'node:test';
import { AllowList, isLoopback, RateLimitedCounter } from '../../src/daemon/access.js';
import { parseArgs, UsageError } from '../../src/cli/args.js';
import { encodeRequest } from '../../src/protocol.js';
import { Store, TRIPLET_PREFIX } from '../../src/store/leveldb.js';
import { boundSocket, query, removeDir, runDaemon, startDaemon, tempDir } from '../helpers.js';

test('AllowList matches IPv4 and IPv6 ranges and single addresses', () => {
  const a = AllowList.parse(['192.0.2.0/24', '198.51.100.7', '2001:db8::/32', '::1', '10']);
  for (const ip of ['192.0.2.0', '192.0.2.255', '198.51.100.7', '2001:db8::1', '2001:db8:ffff::', '::1', '10.1.2.3', '::ffff:192.0.2.9']) {
    assert.ok(a.allows(ip), ip);
  }
  for (const ip of ['192.0.3.0', '198.51.100.8', '2001:db9::1', '::2', '11.0.0.0', '127.0.0.1', '::ffff:192.0.3.9', 'junk']) {
    assert.ok(!a.allows(ip), ip);
  }
  assert.ok(AllowList.parse(['0.0.0.0/0']).allows('203.0.113.9'));
  assert.ok(!AllowList.parse(['0.0.0.0/0']).allows('2001:db8::1'), 'an IPv4 range never matches IPv6');
  assert.ok(AllowList.parse(['::/0']).allows('2001:db8::1'));
  assert.throws(() => AllowList.parse(['192.0.2.0/33']), /prefix length/);
});

test('the default: loopback only on a loopback address, everyone elsewhere', () => {
  for (const h of ['127.0.0.1', '127.9.9.9', '::1']) assert.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '192.0.2.1', '2001:db8::1']) assert.ok(!isLoopback(h), h);
  const lo = AllowList.defaultFor('127.0.0.1');
  assert.ok(lo.restricted && lo.allows('127.0.0.1') && lo.allows('127.5.5.5') && lo.allows('::1'));
  assert.ok(!lo.allows('192.0.2.1') && !lo.allows('2001:db8::1'));
  const any = AllowList.defaultFor('0.0.0.0');
  assert.ok(!any.restricted && any.allows('192.0.2.1') && any.allows('2001:db8::1'));
  // several listen addresses: loopback-only only when every one is loopback
  assert.ok(AllowList.defaultFor(['127.0.0.1', '::1']).restricted);
  assert.ok(!AllowList.defaultFor(['127.0.0.1', '192.0.2.25']).restricted, 'a LAN address is there for other mail servers');
  assert.ok(!AllowList.defaultFor(['::1', '::']).restricted);
});

test('--allow is repeatable, takes blank- or comma-separated lists, and rejects junk with exit 100', async () => {
  const p = parseArgs(['--allow', '192.0.2.0/24', '--allow', ' 10.0.0.1,2001:db8::/32  ::1 ']);
  assert.equal(p.kind, 'run');
  if (p.kind === 'run') assert.deepEqual(p.options.allow, ['192.0.2.0/24', '10.0.0.1', '2001:db8::/32', '::1']);
  assert.throws(() => parseArgs(['--allow', 'mail.example']), (e: unknown) => e instanceof UsageError && /--allow: "mail.example"/.test(e.message));
  assert.throws(() => parseArgs(['--allow', '']), UsageError);
  const r = await runDaemon(['--allow', '192.0.2.0/40', '127.0.0.1:0', '/nonexistent/never']);
  assert.equal(r.code, 100);
  assert.match(r.stderr, /--allow: "192.0.2.0\/40" has a prefix length/);
});

test('the refusal log reports at most one line per period and counts every drop', () => {
  const lines: string[] = [];
  const c = new RateLimitedCounter((l) => lines.push(l), 'refused', 60_000);
  for (let i = 0; i < 5000; i++) c.note(`192.0.2.${i % 256}:1`);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /^refused client=192\.0\.2\.0:1 count=1 total=1$/);
  c.flush();
  assert.equal(lines.length, 2);
  assert.match(lines[1], /^refused client=192\.0\.2\.135:1 count=4999 total=5000 period=60s$/);
});

/** A socket bound to `from` that records every datagram it gets. */
async function clientFrom(from: string): Promise<{ sock: dgram.Socket; got: Buffer[] }> {
  const sock = await boundSocket(from);
  const got: Buffer[] = [];
  sock.on('message', (m) => got.push(m));
  return { sock, got };
}

test('datagrams from outside --allow get no reply, change nothing, and are counted and logged at a rate limit', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  // 127.0.0.2 may ask; 127.0.0.1 may not (both are this host's loopback)
  const d = await startDaemon(['-m', '600', '--allow', '127.0.0.2', '127.0.0.1:0', join(dir, 's')]);
  const outsider = await clientFrom('127.0.0.1');
  const insider = await clientFrom('127.0.0.2');
  try {
    assert.match(d.lines[0], / allow=127\.0\.0\.2 /);
    const started = Date.now();
    const SENT = 1000;
    for (let i = 0; i < SENT; i++) {
      outsider.sock.send(encodeRequest(`203.0.113.${i % 250}`, 'spam@x.example', [`victim${i}@y.example`]), d.port, '127.0.0.1');
      if (i % 100 === 99) {
        // a well-formed request from the allowed address, answered only after everything
        // sent before it was read (one socket, one queue)
        const before = insider.got.length;
        insider.sock.send(encodeRequest('192.0.2.1', 'a@x.example', [`b${i}@y.example`]), d.port, '127.0.0.1');
        for (let k = 0; k < 200 && insider.got.length === before; k++) await new Promise((r) => setTimeout(r, 10));
        assert.equal(insider.got.length, before + 1, 'the allowed client is answered');
        assert.equal(insider.got[before].toString('hex'), '0001');
      }
    }
    const elapsed = Date.now() - started;
    assert.equal(outsider.got.length, 0, 'no reply to a refused client');
    const refusedLines = () => d.lines.filter((l) => l.startsWith('refused '));
    // one line at the first drop, then at most one per 10 s period
    assert.ok(refusedLines().length <= 2 + Math.floor(elapsed / 10_000), refusedLines().join('\n'));
    assert.match(refusedLines()[0], /^refused client=127\.0\.0\.1:\d+ count=1 total=1$/);
    assert.equal(d.lines.filter((l) => l.includes('203.0.113.')).length, 0, 'a refused datagram is not decoded or logged as a request');

    assert.equal(await d.stop(), 0);
    const stopped = await d.waitForLine(/^stopped /);
    assert.match(stopped, new RegExp(` refused=${SENT} `));
    assert.match(stopped, / received=10 /);
    const counted = refusedLines().reduce((n, l) => n + Number(/ count=(\d+)/.exec(l)![1]), 0);
    assert.equal(counted, SENT, 'the summary lines account for every refused datagram');

    const store = await Store.open(join(dir, 's'));
    try {
      let n = 0;
      for await (const chunk of store.scan(TRIPLET_PREFIX)) {
        for (const rec of chunk) assert.match(rec.key, /^G 192\.0\.2\.1 /, 'only the allowed client made records');
        n += chunk.length;
      }
      assert.equal(n, 10);
    } finally {
      await store.close();
    }
  } finally {
    outsider.sock.close();
    insider.sock.close();
    await d.stop('SIGKILL');
    removeDir(dir);
  }
});

test('on loopback with no --allow, loopback clients are answered and no warning is given', async () => {
  const dir = tempDir();
  const d = await startDaemon(['127.0.0.1:0', join(dir, 's')]);
  try {
    assert.match(d.lines[0], / allow=127\.0\.0\.0\/8,::1 /);
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(d.lines.filter((l) => l.startsWith('warning')).length, 0);
    assert.equal(d.stderr(), '');
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('on a non-loopback address with no --allow, start-up warns loudly on stdout and stderr and answers anyone', async () => {
  const dir = tempDir();
  const d = await startDaemon(['0.0.0.0:0', join(dir, 's')]);
  try {
    const warning = await d.waitForLine(/^warning /);
    assert.match(warning, /answers ANY host.*--allow/);
    for (let i = 0; i < 50 && !d.stderr().includes('--allow'); i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(d.stderr(), /^qgreyd: warning .*answers ANY host.*--allow/);
    assert.match(d.lines[0], / allow=everyone /);
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
  } finally {
    await d.stop();
    removeDir(dir);
  }
  const dir2 = tempDir();
  const d2 = await startDaemon(['--allow', '127.0.0.1', '0.0.0.0:0', join(dir2, 's')]);
  try {
    assert.equal(await query(d2.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(d2.lines.filter((l) => l.startsWith('warning')).length, 0, 'no warning once --allow is given');
  } finally {
    await d2.stop();
    removeDir(dir2);
  }
});

test('IPv6: --allow ::1 answers ::1, a list without it refuses ::1', async () => {
  const dir = tempDir();
  const d = await startDaemon(['--allow', '::1', '[::1]:0', join(dir, 's')]);
  try {
    assert.equal(await query(d.port, '2001:db8::5', 'a@x.example', ['b@y.example'], '::1'), '0001');
  } finally {
    await d.stop();
  }
  const d2 = await startDaemon(['--allow', '2001:db8::/32', '[::1]:0', join(dir, 's2')]);
  try {
    assert.equal(await query(d2.port, '2001:db8::5', 'a@x.example', ['b@y.example'], '::1'), null);
    await d2.waitForLine(/^refused client=\[::1\]:\d+ count=1 total=1$/);
  } finally {
    await d2.stop();
    removeDir(dir);
  }
});
