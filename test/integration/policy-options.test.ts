// The policy options end to end: a daemon with all of them on (--ipv4-prefix 24,
// --ipv6-prefix 64, --normalise-senders, --exceptions, --max-pending, -w twice with a
// directory), spoken to over UDP. Time passes through the test clock hook
// (QGREYD_TEST_CLOCK_FILE, re-read on SIGUSR2), never through sleeps.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { encodeRequest } from '../../src/protocol.js';
import { query, removeDir, runDaemon, setTestClock, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { ctlInProcess } from '../ctl-helpers.js';
import { UdpPool } from '../udp-pool.js';

const dirs: string[] = [];
const daemons: Daemon[] = [];
after(async () => {
  for (const d of daemons) await d.stop('SIGKILL');
  for (const d of dirs) removeDir(d);
});

interface Setup {
  dir: string;
  state: string;
  clock: string;
  exceptions: string;
  own: string;
  listDir: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

function setup(maxPending = 20): Setup {
  const dir = tempDir();
  dirs.push(dir);
  const exceptions = join(dir, 'exceptions');
  writeFileSync(exceptions, '# never greylisted\npostmaster@\nabuse@\n');
  const own = join(dir, 'whitelist');
  writeFileSync(own, '# the admin\'s own\n100.64.0.1\n');
  const listDir = join(dir, 'whitelist.d');
  mkdirSync(listDir);
  writeFileSync(join(listDir, 'spf-bigsenders'), '# generated\n100.65.0.0/16  # example.com 2026-11-23\n');
  writeFileSync(join(listDir, '.spf-bigsenders.tmp-1'), 'not a whitelist at all\n');
  const clock = join(dir, 'clock');
  writeFileSync(clock, '0\n');
  const state = join(dir, 'data');
  const args = [
    '--ipv4-prefix', '24', '--ipv6-prefix', '64', '--normalise-senders', '--exceptions', exceptions,
    '--max-pending', String(maxPending), '-w', own, '-w', listDir, '127.0.0.1:0', state,
  ];
  return { dir, state, clock, exceptions, own, listDir, args, env: { ...process.env, QGREYD_TEST_CLOCK_FILE: clock } };
}

async function start(s: Setup): Promise<Daemon> {
  const d = await startDaemon(s.args, { env: s.env });
  daemons.push(d);
  return d;
}

describe('policy options over UDP', () => {
  it('a retry from another host of the /24 and of the /64 passes; the log shows address and network', async () => {
    const s = setup();
    const d = await start(s);
    assert.match(d.lines.find((l) => l.startsWith('start '))!, / ipv4-prefix=24 ipv6-prefix=64 normalise-senders=yes exceptions=\S+ exceptions-entries=2 max-pending=20$/);
    assert.equal(await query(d.port, '192.0.2.10', 'news@big.example', ['ann@here.example']), '0001');
    assert.equal(await query(d.port, '2001:db8:1:2::25', 'news@big.example', ['ann@here.example']), '0001');
    await setTestClock(d, s.clock, 400);
    assert.equal(await query(d.port, '192.0.2.77', 'news@big.example', ['ann@here.example']), '0103');
    assert.equal(await query(d.port, '2001:db8:1:2:aaaa::9', 'news@big.example', ['ann@here.example']), '0103');
    // the networks are known good now; a neighbour network is not
    assert.equal(await query(d.port, '192.0.2.200', 'other@x.example', ['bob@here.example']), '0102');
    assert.equal(await query(d.port, '192.0.3.10', 'news@big.example', ['ann@here.example']), '0001');
    await d.waitForLine(/ip=192\.0\.2\.77 from=<news@big\.example> to=<ann@here\.example> reply=01:03 reason=passed net=192\.0\.2\.0\/24$/);
    await d.waitForLine(/ip=2001:db8:1:2:aaaa::9 .*reply=01:03 reason=passed net=2001:db8:1:2::\/64$/);
  });

  it('a BATV sender with a new tag on retry passes; the log shows both forms', async () => {
    const s = setup();
    const d = await start(s);
    assert.equal(await query(d.port, '198.51.100.1', 'prvs=1111aaaa=bob@sender.example', ['ann@here.example']), '0001');
    await setTestClock(d, s.clock, 400);
    assert.equal(await query(d.port, '198.51.100.1', 'prvs=2222bbbb=bob@sender.example', ['ann@here.example']), '0103');
    await d.waitForLine(/from=<prvs=2222bbbb=bob@sender\.example> to=<ann@here\.example> reply=01:03 reason=passed net=198\.51\.100\.0\/24 key-from=<bob@sender\.example>$/);
  });

  it('postmaster@ is never deferred; mixed with others the others decide; reload keeps a good list over a bad one', async () => {
    const s = setup();
    const d = await start(s);
    for (let i = 0; i < 3; i++) assert.equal(await query(d.port, '203.0.113.5', 'spam@spam.example', ['postmaster@here.example']), '0106');
    await d.waitForLine(/to=<postmaster@here\.example> reply=01:06 reason=exception net=203\.0\.113\.0\/24 exception=\S+exceptions:2$/);
    assert.equal(await query(d.port, '203.0.113.5', 'spam@spam.example', ['abuse@here.example', 'ann@here.example']), '0001');
    // a bad line on reload: the old list stays
    writeFileSync(s.exceptions, 'postmaster@\nnot an address\n');
    let from = d.lines.length;
    d.proc.kill('SIGHUP');
    const err = await d.waitForLine(/^error exceptions reload failed/, 10_000, from);
    assert.match(err, /keeping the old list \(2 entries\).*exceptions:2: \\x22not an address\\x22 needs exactly one @/);
    assert.equal(await query(d.port, '203.0.113.6', 'spam@spam.example', ['abuse@here.example']), '0106');
    // a good one replaces it
    writeFileSync(s.exceptions, 'sales@here.example\n');
    from = d.lines.length;
    d.proc.kill('SIGHUP');
    await d.waitForLine(/^exceptions reloaded file=\S+ entries=1$/, 10_000, from);
    assert.equal(await query(d.port, '203.0.113.7', 'spam@spam.example', ['abuse@here.example']), '0001');
    assert.equal(await query(d.port, '203.0.113.7', 'spam@spam.example', ['Sales@Here.example']), '0106');
  });

  it('several whitelist files: each match logs its file and line; a file added to the directory counts after SIGHUP', async () => {
    const s = setup();
    const d = await start(s);
    assert.equal(await query(d.port, '100.64.0.1', 'a@x.example', ['b@y.example']), '0101');
    assert.equal(await query(d.port, '100.65.3.4', 'a@x.example', ['b@y.example']), '0101');
    // the whitelist is matched by the exact address: 100.64.0.2 shares the /24 but is not listed
    assert.equal(await query(d.port, '100.64.0.2', 'a@x.example', ['b@y.example']), '0001');
    await d.waitForLine(new RegExp(`ip=100\\.64\\.0\\.1 .*reason=whitelisted whitelist=${s.own}:2`));
    await d.waitForLine(new RegExp(`ip=100\\.65\\.3\\.4 .*reason=whitelisted whitelist=${s.listDir}/spf-bigsenders:2`));
    writeFileSync(join(s.listDir, 'local'), '100.66.0.0/16\n');
    const from = d.lines.length;
    d.proc.kill('SIGHUP');
    await d.waitForLine(/^whitelist reloaded file=\S+ entries=3$/, 10_000, from);
    assert.equal(await query(d.port, '100.66.1.1', 'a@x.example', ['b@y.example']), '0101');
    await d.waitForLine(new RegExp(`ip=100\\.66\\.1\\.1 .*whitelist=${s.listDir}/local:1`));
  });

  it('the pending cap holds under a flood, and again after a restart (counts rebuilt from the store)', async () => {
    const s = setup(20);
    let d = await start(s);
    const pool = await UdpPool.open(d.port, 50);
    const replies = await Promise.all(
      Array.from({ length: 400 }, (_, i) => pool.request(encodeRequest(`10.1.1.${i % 250}`, `spam${i}@spam.example`, [`u${i}@here.example`]))),
    );
    pool.close();
    const count = (r: string) => replies.filter((x) => x === r).length;
    assert.equal(count('0001'), 20, 'exactly the cap is stored');
    assert.equal(count('0005'), 380, 'the rest are deferred with their own reply');
    await d.waitForLine(/ip=10\.1\.1\.\d+ .*reply=00:05 reason=pending-cap net=10\.1\.1\.0\/24$/);
    // another network is not affected
    assert.equal(await query(d.port, '10.1.2.1', 'x@spam.example', ['y@here.example']), '0001');
    assert.equal(await d.stop(), 0);

    d = await start(s);
    await d.waitForLine(/^pending counted triplets=21 networks=2 ms=\d+$/);
    assert.equal(await query(d.port, '10.1.1.1', 'new@spam.example', ['z@here.example']), '0005');
    // a stored triplet is still decided at the cap: its retry passes
    const stored = replies.indexOf('0001');
    await setTestClock(d, s.clock, 400);
    assert.equal(await query(d.port, `10.1.1.${stored % 250}`, `spam${stored}@spam.example`, [`u${stored}@here.example`]), '0103');
  });

  it('qgreyctl forget and dump through the daemon key a client by its network; forgetting frees the cap', async () => {
    const s = setup(2);
    const d = await start(s);
    assert.equal(await query(d.port, '10.2.2.1', 'a@spam.example', ['1@here.example', '2@here.example', '3@here.example']), '0005');
    const dump = await ctlInProcess(['dump', '--ip', '10.2.2.99', '--state', s.state]);
    assert.equal(dump.code, 0, dump.stderr);
    assert.deepEqual(dump.stdout.trim().split('\n').map((l) => l.replace(/ first-seen=.*$/, '')), ['triplet 10.2.2.0/24 <a@spam.example> <1@here.example>', 'triplet 10.2.2.0/24 <a@spam.example> <2@here.example>']);
    const forget = await ctlInProcess(['forget', '10.2.2.50', '--state', s.state]);
    assert.equal(forget.code, 0, forget.stderr);
    assert.equal(await query(d.port, '10.2.2.1', 'b@spam.example', ['4@here.example']), '0001');
  });

  it('a bad exceptions line, a bad whitelist file in the directory, a bad option: named, exit 100', async () => {
    const s = setup();
    writeFileSync(s.exceptions, 'postmaster@\n\nfoo@bar@baz\n');
    let r = await runDaemon(s.args);
    assert.equal(r.code, 100);
    assert.match(r.stderr, new RegExp(`exceptions ${s.exceptions}:3: "foo@bar@baz" needs exactly one @`));
    writeFileSync(s.exceptions, 'postmaster@\n');
    writeFileSync(join(s.listDir, 'broken'), '# x\nno address here\n');
    r = await runDaemon(s.args);
    assert.equal(r.code, 100);
    assert.match(r.stderr, new RegExp(`whitelist ${s.listDir}/broken:2: "no address here" has no address`));
    r = await runDaemon(['--ipv4-prefix', '33', '127.0.0.1:0', s.state]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, /--ipv4-prefix: 33 is out of range; give a prefix length from 8 to 32/);
    r = await runDaemon(['--max-pending', 'lots', '127.0.0.1:0', s.state]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, /--max-pending: "lots" is not a positive whole number/);
  });
});
