import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { warningText, Whitelist, WhitelistError } from '../../src/whitelist.js';
import { removeDir, tempDir } from '../helpers.js';

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

  // every sloppy form seen in greydaemon whitelists, with the range greydaemon's addrange
  // takes from it (checked against greydaemon's own Perl when this was written)
  const SLOPPY: Array<[line: string, readAs: string, why: RegExp, inside: string, outside: string]> = [
    ['10.9.9.', '10.9.9.0/24', /trailing dot/, '10.9.9.200', '10.9.10.1'],
    ['127.', '127.0.0.0/8', /trailing dot/, '127.200.0.1', '128.0.0.1'],
    ['192.168.1.0/24 mailhost', '192.168.1.0/24', /rest of the line \("mailhost"\)/, '192.168.1.99', '192.168.2.1'],
    ['mx1 172.16.5.5 backup mx', '172.16.5.5/32', /text before the address \("mx1"\)/, '172.16.5.5', '172.16.5.6'],
    ['x 10.1 and 192.168.7.2', '192.168.7.2/32', /text before/, '192.168.7.2', '10.1.0.1'],
    ['172.20.1.4.9', '172.20.1.4/32', /rest of the line \("\.9"\)/, '172.20.1.4', '172.20.1.9'],
    ['10.30.0.0/', '10.30.0.0/32', /rest of the line \("\/"\)/, '10.30.0.0', '10.30.0.1'],
    ['192.0.2/24', '192.0.2.0/24', /missing parts/, '192.0.2.1', '192.0.3.1'],
    ['10.40.40./24', '10.40.40.0/24', /trailing dot/, '10.40.40.4', '10.40.41.4'],
    ['10/8', '10.0.0.0/8', /missing parts/, '10.50.0.1', '11.0.0.1'],
    ['198.51.100.77/24', '198.51.100.0/24', /host bits/, '198.51.100.1', '198.51.101.1'],
    ['203.0.113.5/40', '203.0.113.5/32', /longer than 32 bits/, '203.0.113.5', '203.0.113.4'],
    ['100.64.1.2.3/16', '100.64.0.0/16', /after the fourth \("3"\)/, '100.64.200.1', '100.65.0.1'],
    ['192.0.300.1', '192.0.44.1/32', /300 is above 255 and wraps to 44/, '192.0.44.1', '192.0.45.1'],
    ['1.2.3.4:25', '1.2.3.4/32', /rest of the line \(":25"\)/, '1.2.3.4', '1.2.3.5'],
    ['mailhost9', '9.0.0.0/8', /text before/, '9.9.9.9', '8.8.8.8'],
    ['2001:db8:77::/48 office', '2001:db8:77::/48', /rest of the line \("office"\)/, '2001:db8:77::1', '2001:db8:78::1'],
  ];

  it("loads every line greydaemon loads, with greydaemon's meaning, and a warning naming file, line and reading", () => {
    const text = '# copied from greydaemon\n' + SLOPPY.map(([l]) => l).join('\n') + '\n192.0.2.7  # a clean line: no warning\n';
    const w = Whitelist.parse(text, 'greywhite');
    assert.equal(w.size, SLOPPY.length + 1);
    assert.equal(w.warnings.length, SLOPPY.length, 'one warning per sloppy line, none for a clean one');
    SLOPPY.forEach(([line, readAs, why, inside, outside], i) => {
      const warning = w.warnings[i];
      assert.deepEqual([warning.file, warning.line, warning.text, warning.readAs], ['greywhite', i + 2, line, readAs], line);
      assert.match(warning.why, why, line);
      assert.match(warningText(warning), new RegExp(`^greywhite:${i + 2}: ${JSON.stringify(line).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} read as `));
      // one line at a time, so no other line's range can answer for it
      const alone = Whitelist.parse(line + '\n', 'one');
      assert.equal(alone.match(inside)?.line, 1, `${line} covers ${inside}`);
      assert.equal(alone.match(outside), undefined, `${line} does not cover ${outside}`);
    });
  });

  it('never matches an IPv6 client against a range read from a sloppy line', () => {
    const w = Whitelist.parse('2001 mailhost\n0.\n', 'x');
    assert.equal(w.size, 2);
    assert.equal(w.match('2001:db8::1'), undefined);
    assert.equal(w.match('::'), undefined);
    assert.equal(w.match('209.1.1.1')?.line, 1, 'greydaemon reads "2001" as 2001 mod 256 = 209');
  });

  it('refuses only a line with no address at all (greydaemon dies on it) and a bad IPv6 entry, naming file and line', () => {
    const bad: Array<[string, RegExp]> = [
      ['mail.example.com', /has no address in it/],
      ['localhost # 127.0.0.1', /has no address in it/],
      ['2001:db8::/129', /prefix length/],
      ['2001:db8::zz', /is not an IPv4 or IPv6 address/],
      ['::ffff:10.0.0.0/80', /IPv4-mapped range shorter than \/96/],
    ];
    for (const [line, re] of bad) {
      assert.throws(
        () => Whitelist.parse(`127.0.0.1\n# ok\n${line}\n`, 'white.txt'),
        (e: unknown) => e instanceof WhitelistError && e.message.includes('white.txt:3:') && e.message.includes(JSON.stringify(line.replace(/\s*#.*/, ''))) && re.test(e.message),
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

describe('several whitelist files (-w repeated, or a directory)', () => {
  it('reads files and directories in order; a match names its file and line; dot files and backups are left out', () => {
    const dir = tempDir();
    try {
      const own = join(dir, 'own');
      writeFileSync(own, '# mine\n192.0.2.7\n198.51.100.0/24\n');
      const d = join(dir, 'd');
      mkdirSync(d);
      writeFileSync(join(d, 'b-spf'), '198.51.100.0/24\n2001:db8::/32\n');
      writeFileSync(join(d, 'a-partners'), '\n\n203.0.113.0/24\n');
      writeFileSync(join(d, '.b-spf.tmp-99'), 'garbage that would not load\n');
      writeFileSync(join(d, 'a-partners~'), 'garbage that would not load\n');
      mkdirSync(join(d, 'sub'));
      const wl = Whitelist.loadAll([own, d]);
      assert.equal(wl.match('192.0.2.7')?.file, own);
      assert.deepEqual([wl.match('203.0.113.9')?.file, wl.match('203.0.113.9')?.line], [join(d, 'a-partners'), 3]);
      assert.deepEqual([wl.match('2001:db8::1')?.file, wl.match('2001:db8::1')?.line], [join(d, 'b-spf'), 2]);
      // the same range in two files: the first file given wins
      assert.deepEqual([wl.match('198.51.100.1')?.file, wl.match('198.51.100.1')?.line], [own, 3]);
      assert.equal(wl.match('192.0.2.8'), undefined);
    } finally {
      removeDir(dir);
    }
  });

  it('a bad line in any file names that file and line; a missing path is named too', () => {
    const dir = tempDir();
    try {
      writeFileSync(join(dir, 'good'), '192.0.2.7\n');
      writeFileSync(join(dir, 'bad'), '192.0.2.8\nnothing here\n');
      assert.throws(() => Whitelist.loadAll([dir]), (e: unknown) => e instanceof WhitelistError && e.message.startsWith(`whitelist ${join(dir, 'bad')}:2: "nothing here"`));
      assert.throws(() => Whitelist.loadAll([join(dir, 'none')]), (e: unknown) => e instanceof WhitelistError && /whitelist \S+none: cannot read it \(ENOENT\)/.test(e.message));
    } finally {
      removeDir(dir);
    }
  });
});
