// Which sockets the listen addresses stand for (src/listen.ts) and how they are given on the
// command line. Binding them for real, with secondary and IPv6 addresses, is netns.test.ts.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { NetworkInterfaceInfo } from 'node:os';
import { parseArgs, parseListenList, UsageError } from '../../src/cli/args.js';
import { bindTargets, isWildcard, type Interfaces } from '../../src/daemon/listen.js';
import { removeDir, runDaemon, startDaemon, tempDir } from '../helpers.js';

function info(address: string, family: 'IPv4' | 'IPv6', scopeid = 0): NetworkInterfaceInfo {
  const common = { address, netmask: '', mac: '00:00:00:00:00:00', internal: false, cidr: null };
  return family === 'IPv4' ? { ...common, family } : { ...common, family, scopeid };
}

const HOST: Interfaces = {
  lo: [info('127.0.0.1', 'IPv4'), info('::1', 'IPv6')],
  eth0: [info('192.0.2.1', 'IPv4'), info('192.0.2.2', 'IPv4'), info('2001:db8::1', 'IPv6'), info('fe80::1', 'IPv6', 2)],
  eth1: [info('fe80::1', 'IPv6', 3)],
};

const view = (specs: Array<{ host: string; port: number }>) => bindTargets(specs, HOST).map((t) => `${t.family} ${t.address} ${t.port}${t.fromWildcard ? ' *' : ''}`);

test('0.0.0.0 is every IPv4 address, each on its own IPv4 socket', () => {
  assert.deepEqual(view([{ host: '0.0.0.0', port: 1999 }]), ['4 127.0.0.1 1999 *', '4 192.0.2.1 1999 *', '4 192.0.2.2 1999 *']);
});

test(':: is every IPv4 and IPv6 address; a link-local one is bound on its own interface', () => {
  for (const host of ['::', '0:0:0:0:0:0:0:0']) {
    assert.deepEqual(view([{ host, port: 25 }]), [
      '4 127.0.0.1 25 *',
      '6 ::1 25 *',
      '4 192.0.2.1 25 *',
      '4 192.0.2.2 25 *',
      '6 2001:db8::1 25 *',
      '6 fe80::1%eth0 25 *',
      '6 fe80::1%eth1 25 *',
    ]);
  }
});

test('explicit addresses are bound as given, in order; duplicates once; a wildcard adds the rest', () => {
  assert.deepEqual(view([{ host: '127.0.0.1', port: 1999 }, { host: '192.0.2.2', port: 1999 }, { host: '::1', port: 1999 }]), ['4 127.0.0.1 1999', '4 192.0.2.2 1999', '6 ::1 1999']);
  assert.deepEqual(view([{ host: '192.0.2.2', port: 1 }, { host: '0.0.0.0', port: 1 }]), ['4 192.0.2.2 1', '4 127.0.0.1 1 *', '4 192.0.2.1 1 *']);
  assert.deepEqual(view([{ host: '127.0.0.1', port: 1 }, { host: '127.0.0.1', port: 2 }]), ['4 127.0.0.1 1', '4 127.0.0.1 2']);
  assert.ok(isWildcard('::') && isWildcard('0.0.0.0') && !isWildcard('::1') && !isWildcard('127.0.0.1'));
});

test('the positional ipaddr[:port] takes several addresses separated by commas', () => {
  assert.deepEqual(parseListenList(''), [{ host: '127.0.0.1', port: 1999 }]);
  assert.deepEqual(parseListenList(':'), [{ host: '127.0.0.1', port: 1999 }]);
  assert.deepEqual(parseListenList('127.0.0.1,192.0.2.25:2000,[::1]:3000,::'), [
    { host: '127.0.0.1', port: 1999 },
    { host: '192.0.2.25', port: 2000 },
    { host: '::1', port: 3000 },
    { host: '::', port: 1999 },
  ]);
  const p = parseArgs(['127.0.0.1:5,192.0.2.25:5', 'state']);
  assert.equal(p.kind, 'run');
  if (p.kind === 'run') {
    assert.deepEqual(p.options.listen, [{ host: '127.0.0.1', port: 5 }, { host: '192.0.2.25', port: 5 }]);
    assert.equal(p.options.host, '127.0.0.1');
    assert.equal(p.options.stateDir, 'state');
  }
  assert.throws(() => parseListenList('127.0.0.1,mail.example'), (e: unknown) => e instanceof UsageError && /ipaddr: "mail\.example"/.test(e.message));
});

test('an address of several that cannot be bound stops start-up, named, with the exit code for its cause', async () => {
  const dir = tempDir();
  try {
    // 192.0.2.0/24 is documentation space: not on this host
    const r = await runDaemon(['127.0.0.1:0,192.0.2.254:0', join(dir, 's')]);
    assert.equal(r.code, 100, r.stderr);
    assert.match(r.stderr, /^qgreyd: cannot listen on 192\.0\.2\.254:\d+: that address is not on this host\n/);
    const d = await startDaemon(['127.0.0.1:0', join(dir, 'a')]);
    try {
      const busy = await runDaemon([`[::1]:${d.port},127.0.0.1:${d.port}`, join(dir, 'b')]);
      assert.equal(busy.code, 111, busy.stderr);
      assert.equal(busy.stderr, `qgreyd: cannot listen on 127.0.0.1:${d.port}: address in use (another qgreyd or greydaemon running?)\n`);
    } finally {
      await d.stop();
    }
  } finally {
    removeDir(dir);
  }
});
