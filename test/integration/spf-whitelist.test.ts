// qgreyctl spf-whitelist against a real DNS server: Debian's dnsmasq on a loopback port serves
// TXT, A, AAAA and MX records for includes, redirect, ip4/ip6, a/mx, a loop, a chain deeper than
// the lookup limit and a domain whose lookups fail; the file written must load in qgreyd.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { accessSync, chmodSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isDomainName, parseDomainList } from '../../src/spf.js';
import { Whitelist } from '../../src/whitelist.js';
import { ctl } from '../ctl-helpers.js';
import { freePort, query, removeDir, ROOT, startDaemon, tempDir } from '../helpers.js';

const DNSMASQ = ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq', '/sbin/dnsmasq'].find((p) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
});
const INSTALL_HINT = 'dnsmasq is not installed; install it with: apt-get install dnsmasq-base';
// .ci/run sets this, so that CI fails rather than skipping
const REQUIRED = process.env.QGREYD_REQUIRE_DNSMASQ === '1';
const skip = DNSMASQ === undefined && !REQUIRED ? INSTALL_HINT : false;
if (skip) process.stderr.write(`spf-whitelist.test: skipped: ${INSTALL_HINT}\n`);

/** A port free for both UDP and TCP is hard to promise; a TCP one that dnsmasq then takes is enough here. */
const deep = Array.from({ length: 11 }, (_, i) => `--txt-record=deep${i + 1}.test,v=spf1 include:deep${i + 2}.test -all`);
const RECORDS = [
  // spawned without a shell, so no quotes: a comma separates a record's strings, and this
  // record has two, split inside a term: they join without a space (RFC 7208 3.3)
  '--txt-record=big.test,v=spf1 ip4:192.0.2.0/24 ip6:2001:DB8:1:0:0::/48 include:inc.test a mx a:host.te,' +
    'st/28 -ip4:198.51.100.99 ?ip4:203.0.113.200 exists:%{i}.ex.test ~all ip4:10.9.9.9',
  '--txt-record=big.test,google-site-verification=abc',
  '--host-record=big.test,203.0.113.10,2001:db8:a::10',
  '--mx-host=big.test,mx1.test,10',
  '--mx-host=big.test,mx2.test,20',
  '--host-record=mx1.test,203.0.113.25',
  '--host-record=mx2.test,203.0.113.26,2001:db8:25::26',
  '--host-record=host.test,203.0.113.77',
  // no all: the redirect applies (and counts as a lookup)
  '--txt-record=inc.test,v=spf1 ip4:198.51.100.0/25 ptr redirect=red.test',
  '--txt-record=red.test,v=spf1 ip4:198.51.100.128/26 ip6:2001:db8:2::/64 -all',
  // a second domain sharing an include with big.test
  '--txt-record=other.test,v=spf1 include:red.test a:nothing.test -all',
  '--txt-record=loop.test,v=spf1 ip4:192.0.2.1 include:loop2.test -all',
  '--txt-record=loop2.test,v=spf1 include:loop.test -all',
  ...deep,
  '--txt-record=deep12.test,v=spf1 ip4:192.0.2.12 -all',
  '--txt-record=tempfail.test,v=spf1 ip4:192.0.2.77 include:spf.fail.example -all',
  '--txt-record=nospf.test,hello',
  '--txt-record=missing-include.test,v=spf1 include:nowhere.test -all',
  '--txt-record=plusall.test,v=spf1 ip4:192.0.2.0/24 +all',
  '--txt-record=badname.test,v=spf1 include:bad/name.test -all',
  '--txt-record=unknown.test,v=spf1 ip4:192.0.2.0/24 frob:x.test -all',
  '--txt-record=wide.test,v=spf1 ip4:10.0.0.0/7 ip6:2000::/15 ip4:192.0.2.0/24 -all',
  '--txt-record=twospf.test,v=spf1 -all',
  '--txt-record=twospf.test,v=spf1 ip4:192.0.2.0/24 -all',
];

const EXPECTED_BIG = [
  '192.0.2.0/24',
  '2001:db8:1::/48',
  '198.51.100.0/25',
  '198.51.100.128/26',
  '2001:db8:2::/64',
  '203.0.113.10/32',
  '2001:db8:a::10/128',
  '203.0.113.25/32',
  '203.0.113.26/32',
  '2001:db8:25::26/128',
  '203.0.113.64/28',
];

let dnsmasq: ChildProcess | null = null;
let dnsPort = 0;
let dnsLog = '';
let dir = '';

describe('against dnsmasq', { skip }, () => {
before(async () => {
  if (DNSMASQ === undefined) throw new Error(`QGREYD_REQUIRE_DNSMASQ=1 but ${INSTALL_HINT}`);
  dir = tempDir('qgreyd-spf-');
  dnsPort = await freePort('tcp');
  // a port nothing listens on: dnsmasq's forwards for fail.example go unanswered
  const deadPort = await freePort('tcp');
  const args = [
    `--port=${dnsPort}`,
    '--listen-address=127.0.0.1',
    '--bind-interfaces',
    '--no-resolv',
    '--no-hosts',
    '--no-daemon',
    '--conf-file=/dev/null',
    '--log-facility=-',
    // names under .test that are not defined get NXDOMAIN, not REFUSED
    '--local=/test/',
    `--server=/fail.example/127.0.0.1#${deadPort}`,
    ...(process.getuid?.() === 0 ? ['--user=root'] : []),
    ...RECORDS,
  ];
  dnsmasq = spawn(DNSMASQ, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  dnsmasq.stdout!.on('data', (c: Buffer) => (dnsLog += c.toString()));
  dnsmasq.stderr!.on('data', (c: Buffer) => (dnsLog += c.toString()));
  const exited = new Promise<never>((_, reject) => dnsmasq!.on('exit', (code) => reject(new Error(`dnsmasq exited with ${code}: ${dnsLog}`))));
  exited.catch(() => undefined);
  // it logs "started" once its sockets are bound
  await Promise.race([
    new Promise<void>((resolve) => {
      const check = () => (/started, version/.test(dnsLog) ? resolve() : undefined);
      dnsmasq!.stderr!.on('data', check);
      dnsmasq!.stdout!.on('data', check);
      check();
    }),
    exited,
  ]);
  const r = new Resolver({ timeout: 1000, tries: 2 });
  r.setServers([`127.0.0.1:${dnsPort}`]);
  assert.deepEqual(await r.resolveTxt('deep12.test'), [['v=spf1 ip4:192.0.2.12 -all']], `dnsmasq answers; its output: ${dnsLog}`);
});

after(() => {
  if (dnsmasq !== null && dnsmasq.exitCode === null) dnsmasq.kill();
  if (dir !== '') removeDir(dir);
});

function spf(args: string[]) {
  return ctl(['spf-whitelist', '--resolver', `127.0.0.1:${dnsPort}`, '--wait', '0.5', ...args], { ms: 30_000 });
}

function today(): string[] {
  return [new Date().toISOString().slice(0, 10)];
}

/** the ranges of a generated file, in order */
function ranges(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '');
}

function leftovers(): string[] {
  return readdirSync(dir).filter((f) => f.includes('.tmp-'));
}

test('walks ip4, ip6, include, redirect, a, mx into a whitelist that qgreyd loads', { timeout: 60_000 }, async () => {
  const out = join(dir, 'whitelist.spf');
  writeFileSync(out, '192.0.2.99  # last week\n', { mode: 0o640 });
  chmodSync(out, 0o640);
  const old = statSync(out);
  const days = today();
  // a cron job's strict umask must not make the new list unreadable to the daemon's group
  const umask = process.umask(0o077);
  let r;
  try {
    r = await spf(['-o', out, 'big.test']);
  } finally {
    process.umask(umask);
  }
  days.push(...today());
  assert.equal(r.code, 0, r.stderr);
  // replaced by a rename, not rewritten in place: a reader sees the old file or the new one,
  // and the new one keeps the old one's permissions
  const now = statSync(out);
  assert.notEqual(now.ino, old.ino);
  assert.equal(now.mode & 0o777, 0o640);
  const text = readFileSync(out, 'utf8');
  assert.deepEqual(ranges(text), EXPECTED_BIG);
  // not a pass, after all, or not expandable: none of these may be whitelisted
  for (const ip of ['198.51.100.99/32', '203.0.113.200', '10.9.9.9']) assert.ok(!text.includes(`\n${ip}`), ip);
  assert.match(r.stderr, /big\.test: exists:%\{i\}\.ex\.test: not expandable/);
  assert.match(r.stderr, /inc\.test: ptr: not expandable/);
  assert.match(r.stderr, /-ip4:198\.51\.100\.99: skipped, fail is not a pass/);
  assert.match(r.stderr, /wrote .*whitelist\.spf: 11 ranges from 1 domain/);
  // each line names where it came from and the day
  for (const line of text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) {
    assert.match(line, new RegExp(`# big\\.test( via (inc|red)\\.test)?, (${days.join('|')})$`), line);
  }
  assert.match(text, /^198\.51\.100\.128\/26 +# big\.test via red\.test, /m);
  assert.match(text, /big\.test: 11 ranges, 7 DNS lookups/);
  assert.match(text, /note: big\.test: exists:%\{i\}\.ex\.test: not expandable/);

  // qgreyd's own parser and matcher read it
  const wl = Whitelist.load(out);
  assert.equal(wl.size, EXPECTED_BIG.length);
  assert.equal(wl.match('198.51.100.140')?.text, '198.51.100.128/26');
  assert.equal(wl.match('203.0.113.70')?.text, '203.0.113.64/28');
  assert.equal(wl.match('2001:db8:1:ffff::1')?.text, '2001:db8:1::/48');
  assert.equal(wl.match('198.51.100.200'), undefined);
  assert.equal(wl.match('203.0.113.200'), undefined);

  // and the daemon itself: a listed address is whitelisted (01 01), another one is greylisted
  const state = join(dir, 'state');
  const d = await startDaemon(['-w', out, '127.0.0.1:0', state]);
  try {
    assert.equal(await query(d.port, '203.0.113.26', 'a@big.test', ['b@example.org']), '0101');
    assert.equal(await query(d.port, '198.51.100.200', 'a@big.test', ['b@example.org']), '0001');
  } finally {
    await d.stop();
  }
  assert.deepEqual(leftovers(), []);
});

test('-f list file and several domains: shared ranges written once, naming both; standard output without -o', { timeout: 60_000 }, async () => {
  const list = join(dir, 'domains');
  writeFileSync(list, '# test senders\nBIG.test.\n\nother.test   # shares red.test\nbig.test\n');
  const r = await spf(['-f', list]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(ranges(r.stdout), EXPECTED_BIG);
  assert.match(r.stdout, /^198\.51\.100\.128\/26 +# big\.test via red\.test; other\.test via red\.test, /m);
  assert.match(r.stderr, /other\.test: a:nothing\.test: nothing\.test has no address/);
  assert.match(r.stderr, /11 ranges from 2 domains/);
  Whitelist.parse(r.stdout, 'stdout');
  // -q: silent on success (cron mails any output), the notes are still in the file
  const q = await spf(['-q', '-f', list]);
  assert.equal(q.code, 0, q.stderr);
  assert.equal(q.stderr, '');
  assert.match(q.stdout, /note: other\.test: a:nothing\.test: nothing\.test has no address/);
  const qf = await spf(['-q', 'loop.test']);
  assert.equal(qf.code, 100);
  assert.match(qf.stderr, /include loop/);
});

test('the weekly job as documented: the generated list in a whitelist directory beside the admin\'s own file, reloaded by SIGHUP', { timeout: 60_000 }, async () => {
  const own = join(dir, 'own-whitelist');
  writeFileSync(own, '# mine\n192.0.2.200\n');
  const wdir = join(dir, 'whitelist.d');
  mkdirSync(wdir);
  const d = await startDaemon(['-w', own, '-w', wdir, '127.0.0.1:0', join(dir, 'state-job')]);
  try {
    assert.equal(await query(d.port, '203.0.113.26', 'a@big.test', ['b@example.org']), '0001');
    const r = await spf(['-q', '-o', join(wdir, 'spf'), 'big.test']);
    assert.equal(r.code, 0, r.stderr);
    d.proc.kill('SIGHUP');
    await d.waitForLine(new RegExp(`^whitelist reloaded file=${own},${wdir} entries=${EXPECTED_BIG.length + 1}$`));
    assert.equal(await query(d.port, '203.0.113.25', 'a@big.test', ['b@example.org']), '0101');
    assert.equal(await query(d.port, '192.0.2.200', 'a@big.test', ['b@example.org']), '0101');
    const fileLine = readFileSync(join(wdir, 'spf'), 'utf8').split('\n').findIndex((l) => l.startsWith('203.0.113.25/32')) + 1;
    assert.ok(fileLine > 0);
    await d.waitForLine(new RegExp(`ip=203\\.0\\.113\\.25 .*reason=whitelisted whitelist=${wdir}/spf:${fileLine}$`));
    await d.waitForLine(new RegExp(`ip=192\\.0\\.2\\.200 .*reason=whitelisted whitelist=${own}:2$`));
    // the admin's file was never touched
    assert.equal(readFileSync(own, 'utf8'), '# mine\n192.0.2.200\n');
  } finally {
    await d.stop();
  }
});

test('a DNS failure exits 111 and leaves the previous file untouched', { timeout: 60_000 }, async () => {
  const out = join(dir, 'keep.spf');
  const previous = '192.0.2.1  # yesterday\n';
  writeFileSync(out, previous);
  const ino = statSync(out).ino;
  // the failing domain comes second: what the first gave must not be written alone
  const r = await spf(['-o', out, 'big.test', 'tempfail.test']);
  assert.equal(r.code, 111, r.stderr);
  assert.match(r.stderr, /tempfail\.test: tempfail\.test -> spf\.fail\.example: TXT lookup failed: DNS (timeout|server failure)/);
  assert.match(r.stderr, /DNS failed for tempfail\.test; .*keep\.spf left as it was; try again later/);
  assert.equal(readFileSync(out, 'utf8'), previous);
  assert.equal(statSync(out).ino, ino);
  assert.deepEqual(leftovers(), []);
  // even with --skip-bad: a temporary failure is not a bad record
  const s = await spf(['--skip-bad', '-o', out, 'big.test', 'tempfail.test']);
  assert.equal(s.code, 111, s.stderr);
  assert.equal(readFileSync(out, 'utf8'), previous);
});

test('a loop, too many lookups, no record, +all, two records: exit 100, file untouched', { timeout: 60_000 }, async () => {
  const out = join(dir, 'bad.spf');
  const previous = '192.0.2.2  # last week\n';
  writeFileSync(out, previous);
  const cases: Array<[string, RegExp]> = [
    ['loop.test', /loop\.test -> loop2\.test -> loop\.test: include loop/],
    ['deep1.test', /deep1\.test -> .* -> deep11\.test: include:deep12\.test needs DNS lookup number 11, over the limit of 10/],
    ['nospf.test', /nospf\.test: no SPF record/],
    ['nxdomain.test', /nxdomain\.test: TXT lookup failed: no such domain/],
    ['missing-include.test', /missing-include\.test -> nowhere\.test: TXT lookup failed: no such domain/],
    ['plusall.test', /"\+all" passes every address/],
    ['twospf.test', /2 SPF records/],
    ['badname.test', /include:bad\/name\.test: "bad\/name\.test" is not a domain name/],
    ['unknown.test', /unknown mechanism "frob:x\.test"/],
  ];
  for (const [domain, why] of cases) {
    const r = await spf(['-o', out, domain]);
    assert.equal(r.code, 100, `${domain}: ${r.stderr}`);
    assert.match(r.stderr, why, domain);
    assert.match(r.stderr, new RegExp(`no usable SPF record for ${domain.replace(/\./g, '\\.')}; .*bad\\.spf left as it was; remove it from the list, or give --skip-bad`), domain);
    assert.equal(readFileSync(out, 'utf8'), previous, domain);
  }
  assert.deepEqual(leftovers(), []);
});

test('--max-lookups raises the limit; --skip-bad writes the good domains and names the bad', { timeout: 60_000 }, async () => {
  const out = join(dir, 'deep.spf');
  const r = await spf(['--max-lookups', '11', '-o', out, 'deep1.test']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(ranges(readFileSync(out, 'utf8')), ['192.0.2.12/32']);
  assert.match(readFileSync(out, 'utf8'), /^192\.0\.2\.12\/32 +# deep1\.test via deep12\.test, /m);

  const s = await spf(['--skip-bad', '-o', out, 'loop.test', 'red.test', 'nospf.test']);
  assert.equal(s.code, 0, s.stderr);
  const text = readFileSync(out, 'utf8');
  assert.deepEqual(ranges(text), ['198.51.100.128/26', '2001:db8:2::/64']);
  assert.match(text, /left out: loop\.test: .*include loop/);
  assert.match(text, /left out: nospf\.test: .*no SPF record/);
  assert.match(s.stderr, /left out loop\.test, nospf\.test/);

  // nothing at all to write is refused, the file stays
  const n = await spf(['--skip-bad', '-o', out, 'nospf.test']);
  assert.equal(n.code, 100, n.stderr);
  assert.equal(readFileSync(out, 'utf8'), text);
});

test('ranges wider than /8 or /16 are left out with a note', { timeout: 60_000 }, async () => {
  const r = await spf(['wide.test']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(ranges(r.stdout), ['192.0.2.0/24']);
  assert.match(r.stderr, /ip4:10\.0\.0\.0\/7: skipped 10\.0\.0\.0\/7: wider than \/8/);
  assert.match(r.stderr, /ip6:2000::\/15: skipped 2000::\/15: wider than \/16/);
});

test('usage errors name the flag or value and exit 100', { timeout: 60_000 }, async () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /no domains given/],
    [['not a domain'], /"not a domain" is not a domain name/],
    [['--resolver', 'dns.example:53', 'big.test'], /--resolver "dns.example:53" is not an IP address/],
    [['--max-lookups', '0', 'big.test'], /--max-lookups "0" is not a positive whole number/],
    [['--frobnicate', 'big.test'], /unknown option --frobnicate/],
    [['-f', join(dir, 'no-such-list')], /cannot read .*no-such-list \(ENOENT\)/],
    [['-o', join(dir, 'no-such-dir', 'out'), 'big.test'], /cannot write .*no-such-dir\/out \(ENOENT\)/],
  ];
  for (const [args, why] of cases) {
    const r = await ctl(['spf-whitelist', '--resolver', `127.0.0.1:${dnsPort}`, ...args]);
    assert.equal(r.code, 100, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why);
  }
  assert.equal(existsSync(join(dir, 'no-such-dir')), false);
  const h = await ctl(['help', 'spf-whitelist']);
  assert.match(h.stdout, /usage: qgreyctl spf-whitelist/);
});

});

test('the shipped list of big senders is a list of domain names', () => {
  const file = join(ROOT, 'whitelist', 'spf-domains');
  const domains = parseDomainList(readFileSync(file, 'utf8'), file);
  assert.ok(domains.length >= 10, `${domains.length} domains`);
  assert.ok(domains.every(isDomainName));
  assert.equal(new Set(domains).size, domains.length, 'no duplicates');
});
