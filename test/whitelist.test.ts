import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Whitelist, WhitelistError } from '../src/whitelist.js';
import { removeDir, tempDir } from './helpers.js';

const FILE = `# sample
192.0.2.7          # one host
198.51          # a /16
10              # a /8
203.0.113       # a /24
198.18.0.0/15
2001:db8::/32
2001:DB8:FFFF::1
::ffff:100.64.0.0/106

`;

describe('whitelist', () => {
  const wl = Whitelist.parse(FILE, 'wl');

  it('reads every reference form and CIDR, skipping comments and blank lines', () => {
    assert.equal(wl.size, 8);
    const cases: Array<[string, number | undefined]> = [
      ['192.0.2.7', 2],
      ['192.0.2.8', undefined],
      ['198.51.0.1', 3],
      ['198.51.255.255', 3],
      ['198.52.0.1', undefined],
      ['10.200.3.4', 4],
      ['11.0.0.1', undefined],
      ['203.0.113.200', 5],
      ['203.0.114.1', undefined],
      ['198.18.0.1', 6],
      ['198.19.255.254', 6],
      ['198.20.0.1', undefined],
      ['2001:db8:1234::5', 7],
      ['2001:db9::5', undefined],
      ['2001:db8:ffff::1', 8], // also in the /32: the most specific entry wins
      ['100.64.1.1', 9],
      ['100.128.0.1', undefined],
    ];
    for (const [ip, line] of cases) assert.equal(wl.match(ip)?.line, line, ip);
  });

  it('prefers the most specific entry', () => {
    const w = Whitelist.parse('2001:db8::/32\n2001:db8:ffff::1\n192.0.2\n192.0.2.7\n', 'x');
    assert.equal(w.match('2001:db8:ffff::1')?.line, 2);
    assert.equal(w.match('192.0.2.7')?.line, 4);
    assert.equal(w.match('192.0.2.6')?.line, 3);
  });

  it('does not match IPv6 clients against IPv4 ranges or the reverse', () => {
    const w = Whitelist.parse('192\n0.0.0.0/0\n', 'x');
    assert.equal(w.match('2001:db8::1'), undefined);
    assert.equal(w.match('192::1'), undefined);
    const w6 = Whitelist.parse('::/0\n', 'x');
    assert.equal(w6.match('192.0.2.1'), undefined);
    assert.equal(w6.match('::1')?.line, 1);
  });

  it('matches an IPv4-mapped client as its IPv4 host', () => {
    assert.equal(wl.match('::ffff:192.0.2.7')?.line, 2);
  });

  it('masks host bits of a CIDR entry', () => {
    const w = Whitelist.parse('192.0.2.77/24\n', 'x');
    assert.equal(w.match('192.0.2.1')?.line, 1);
  });

  it('names the file, line and text of a bad line', () => {
    const bad: Array<[string, RegExp]> = [
      ['mail.example.com', /is not an IPv4 or IPv6 address/],
      ['192.0.2.300', /octet above 255/],
      ['192.0.2.0/33', /prefix length/],
      ['2001:db8::/129', /prefix length/],
      ['192.0.2.1 192.0.2.2', /more than one word/],
      ['192.0.2.1.5', /is not an IPv4/],
      ['192.0.2/24', /is not an IPv4/],
      ['192.0.2.0/', /prefix length/],
    ];
    for (const [line, re] of bad) {
      assert.throws(
        () => Whitelist.parse(`127.0.0.1\n# ok\n${line}\n`, 'white.txt'),
        (e: unknown) => e instanceof WhitelistError && e.message.includes('white.txt:3:') && e.message.includes(JSON.stringify(line)) && re.test(e.message),
        line,
      );
    }
  });

  it('loads from disk, reports an unreadable file, and a reload sees the new contents', () => {
    const dir = tempDir();
    try {
      const f = join(dir, 'wl');
      writeFileSync(f, '192.0.2.1\n');
      assert.equal(Whitelist.load(f).match('192.0.2.2'), undefined);
      writeFileSync(f, '192.0.2.1\n192.0.2.2\n');
      assert.equal(Whitelist.load(f).match('192.0.2.2')?.line, 2);
      assert.throws(() => Whitelist.load(join(dir, 'missing')), /whitelist .*missing: cannot read it \(ENOENT\)/);
    } finally {
      removeDir(dir);
    }
  });

  it('matches in time independent of the number of entries (hash per prefix length)', () => {
    // 65536 distinct /32 entries: the lookup is a single hash probe per prefix length present
    let text = '';
    for (let i = 0; i < 65536; i++) text += `10.${i >> 8}.${i & 255}.1\n`;
    const w = Whitelist.parse(text, 'big');
    assert.equal(w.match('10.255.255.1')?.line, 65536);
    assert.equal(w.match('10.255.255.2'), undefined);
    assert.equal((w as unknown as { v4Prefixes: number[] }).v4Prefixes.length, 1);
  });
});
