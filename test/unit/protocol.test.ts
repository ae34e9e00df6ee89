import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeReply, decodeRequest, encodeReply, encodeRequest, MAX_ADDRESS, MAX_DATAGRAM, MAX_REQUEST_BYTES, replyText, tripletBytes, Verdict } from '../../src/protocol.js';
import { normaliseIp } from '../../src/ip.js';

const b = (s: string) => Buffer.from(s, 'latin1');

function ok(buf: Buffer) {
  const d = decodeRequest(buf);
  assert.equal(d.ok, true, `expected a request, got ${JSON.stringify(d)}`);
  if (!d.ok) throw new Error('unreachable');
  return d.request;
}
function bad(buf: Buffer): string {
  const d = decodeRequest(buf);
  assert.equal(d.ok, false, `expected malformed, got ${JSON.stringify(d)}`);
  return d.ok ? '' : d.error;
}

describe('decodeRequest', () => {
  it('decodes the PROTOCOL.md example', () => {
    const r = ok(b('I192.0.2.10\0Fbob@example.com\0Tned@example.org\0Tann@example.org\0\0'));
    assert.equal(r.ip, '192.0.2.10');
    assert.equal(r.family, 4);
    assert.deepEqual(r.tail, { sender: 'bob@example.com', recipients: ['ned@example.org', 'ann@example.org'] });
  });

  it('round-trips encodeRequest', () => {
    const r = ok(encodeRequest('198.51.100.7', 'x@y', ['a@b', 'c@d', 'e@f']));
    assert.deepEqual(r.tail, { sender: 'x@y', recipients: ['a@b', 'c@d', 'e@f'] });
  });

  it('accepts an empty sender (bounce) and no recipients', () => {
    assert.deepEqual(ok(b('I192.0.2.1\0F\0\0')).tail, { sender: '', recipients: [] });
    assert.deepEqual(ok(b('I192.0.2.1\0Fa@b\0\0')).tail, { sender: 'a@b', recipients: [] });
  });

  it('ignores trailing empty fields, however many', () => {
    assert.deepEqual(ok(b('I192.0.2.1\0Fa@b\0Tc@d\0\0\0\0\0')).tail, { sender: 'a@b', recipients: ['c@d'] });
  });

  it('takes a truncated datagram (last field without NUL) as the reference does', () => {
    assert.deepEqual(ok(b('I192.0.2.1\0Fa@b\0Tc@d')).tail, { sender: 'a@b', recipients: ['c@d'] });
    assert.equal(ok(b('I192.0.2.1')).ip, '192.0.2.1');
  });

  it('reports an empty field in the middle as a bad tail', () => {
    const r = ok(b('I192.0.2.1\0Fa@b\0\0Tc@d\0\0'));
    assert.ok('error' in r.tail);
    assert.match((r.tail as { error: string }).error, /field 3 is empty/);
    assert.ok('error' in ok(b('I192.0.2.1\0\0Fa@b\0Tc@d\0\0')).tail);
  });

  it('reports a missing or misplaced F and T as a bad tail', () => {
    assert.match((ok(b('I192.0.2.1\0\0')).tail as { error: string }).error, /no sender/);
    assert.match((ok(b('I192.0.2.1\0Xa@b\0Tc@d\0\0')).tail as { error: string }).error, /second field/);
    assert.match((ok(b('I192.0.2.1\0Fa@b\0Xc@d\0\0')).tail as { error: string }).error, /field 3 does not start with T/);
    assert.match((ok(b('I192.0.2.1\0Fa@b\0Tc@d\0Fe@f\0\0')).tail as { error: string }).error, /field 4/);
  });

  it('rejects a datagram whose first field is not I', () => {
    assert.match(bad(b('F a@b\0Tc@d\0\0')), /first field/);
    assert.match(bad(b('i192.0.2.1\0Fa@b\0\0')), /first field/);
    assert.match(bad(b('\0I192.0.2.1\0Fa@b\0\0')), /first field/);
  });

  it('rejects empty and all-NUL datagrams', () => {
    assert.match(bad(Buffer.alloc(0)), /empty/);
    assert.match(bad(Buffer.alloc(10)), /no fields/);
  });

  it('takes a client IP that is not an address as text when it is printable without spaces (IndiMail sends `unknown`)', () => {
    for (const t of ['unknown', 'foo', '256.0.0.1', 'x'.repeat(64)]) {
      const r = ok(b(`I${t}\0Fa@b\0Tc@d\0`));
      assert.equal(r.ip, t);
      assert.equal(r.family, 0);
      assert.deepEqual(r.tail, { sender: 'a@b', recipients: ['c@d'] });
    }
    assert.match(bad(b('I\0Fa@b\0\0')), /empty/);
    assert.match(bad(b('I192.0.2.1 \0Fa@b\0\0')), /printable text without spaces/);
    assert.match(bad(b('Iun known\0Fa@b\0\0')), /printable text without spaces/);
    assert.match(bad(b('Iunknown\x7f\0Fa@b\0\0')), /printable text without spaces/);
    assert.match(bad(b(`I${'x'.repeat(65)}\0Fa@b\0\0`)), /longer than 64/);
  });

  it('accepts IPv6 client addresses and normalises them', () => {
    assert.equal(ok(b('I2001:DB8:0:0::1\0Fa@b\0\0')).ip, '2001:db8::1');
    assert.equal(ok(b('I2001:DB8:0:0::1\0Fa@b\0\0')).family, 6);
    assert.equal(ok(b('I::1\0Fa@b\0\0')).ip, '::1');
    // an IPv4-mapped address is the IPv4 host
    const m = ok(b('I::ffff:192.0.2.9\0Fa@b\0\0'));
    assert.equal(m.ip, '192.0.2.9');
    assert.equal(m.family, 4);
  });

  it('keeps non-ASCII and binary bytes of addresses intact (latin1, one char per byte)', () => {
    const raw = Buffer.concat([b('I192.0.2.1\0F'), Buffer.from([0xc3, 0xa9, 0xff, 0x01]), b('@x\0T'), Buffer.from([0x80, 0x0a]), b('\0\0')]);
    const r = ok(raw);
    const env = r.tail as { sender: string; recipients: string[] };
    assert.deepEqual([...Buffer.from(env.sender, 'latin1')], [0xc3, 0xa9, 0xff, 0x01, 0x40, 0x78]);
    assert.deepEqual([...Buffer.from(env.recipients[0], 'latin1')], [0x80, 0x0a]);
  });

  it('has no recipient cap: 3000 recipients and a full 65507-byte datagram are decoded whole', () => {
    const rc = Array.from({ length: 3000 }, (_, i) => `r${i}@x`);
    assert.equal((ok(encodeRequest('192.0.2.1', 'a@b', rc)).tail as { recipients: string[] }).recipients.length, 3000);
    // the most recipients a datagram can carry: two-byte addresses, four bytes a field
    const head = encodeRequest('192.0.2.1', 'a@b', []).subarray(0, -1);
    const n = Math.floor((MAX_DATAGRAM - head.length) / 4);
    const max = Buffer.concat([head, Buffer.from(Array.from({ length: n }, (_, i) => `T${String.fromCharCode(33 + (i % 90), 33 + Math.floor(i / 90) % 90)}\0`).join(''), 'latin1')]);
    assert.ok(max.length <= MAX_DATAGRAM);
    assert.equal((ok(max).tail as { recipients: string[] }).recipients.length, n);
  });

  it(`makes an address longer than ${MAX_ADDRESS} bytes a bad tail (RFC 5321 allows 256)`, () => {
    const at = 'a'.repeat(MAX_ADDRESS - 2) + '@x';
    assert.deepEqual(ok(encodeRequest('192.0.2.1', at, [at])).tail, { sender: at, recipients: [at] });
    assert.match((ok(encodeRequest('192.0.2.1', at + 'y', ['c@d'])).tail as { error: string }).error, /sender of length 513 is longer than 512/);
    assert.match((ok(encodeRequest('192.0.2.1', 'a@b', ['c@d', at + 'y'])).tail as { error: string }).error, /recipient 2 of length 513 is longer than 512/);
  });

  it(`bounds the bytes a request may store (${MAX_REQUEST_BYTES}), not its recipients`, () => {
    const sender = 's'.repeat(MAX_ADDRESS - 2) + '@x';
    const per = tripletBytes('192.0.2.1'.length, sender.length, 2);
    const n = Math.floor(MAX_REQUEST_BYTES / per);
    const rc = Array.from({ length: n + 1 }, (_, i) => String(10 + (i % 90)));
    assert.equal((ok(encodeRequest('192.0.2.1', sender, rc.slice(0, n))).tail as { recipients: string[] }).recipients.length, n);
    assert.match((ok(encodeRequest('192.0.2.1', sender, rc)).tail as { error: string }).error, /would store more than 2097152 bytes/);
    // the same datagram size with a short sender is fine: it is the bytes stored that count
    assert.equal((ok(encodeRequest('192.0.2.1', 'a@x', rc)).tail as { recipients: string[] }).recipients.length, n + 1);
  });

  it('rejects an oversized datagram and handles a maximal one', () => {
    assert.match(bad(Buffer.alloc(MAX_DATAGRAM + 1, 0x41)), /too long/);
    const big = Buffer.concat([b('I192.0.2.1\0F'), Buffer.alloc(MAX_DATAGRAM - 20, 0x61), b('\0\0')]);
    assert.match((ok(big).tail as { error: string }).error, /sender of length 65487/);
  });
});

describe('replies', () => {
  it('encodes every verdict as the PROTOCOL.md bytes', () => {
    const table: Array<[Verdict, number[], string]> = [
      [Verdict.Whitelisted, [1, 1], '01:01'],
      [Verdict.KnownGood, [1, 2], '01:02'],
      [Verdict.Passed, [1, 3], '01:03'],
      [Verdict.VerpBounce, [1, 4], '01:04'],
      [Verdict.New, [0, 1], '00:01'],
      [Verdict.TooSoon, [0, 2], '00:02'],
      [Verdict.TooLate, [0, 3], '00:03'],
      [Verdict.NotDecided, [1, 5], '01:05'],
      [Verdict.NotDecidedClosed, [0, 4], '00:04'],
    ];
    for (const [v, bytes, text] of table) {
      assert.deepEqual([...encodeReply(v)], bytes, v);
      assert.equal(replyText(v), text);
      assert.equal(decodeReply(Buffer.from(bytes)), v);
    }
    assert.equal(decodeReply(Buffer.from([2, 9])), null);
    assert.equal(decodeReply(Buffer.from([1])), null);
  });
});

describe('normaliseIp', () => {
  it('gives RFC 5952 text', () => {
    assert.equal(normaliseIp('2001:0db8:0000:0000:0000:ff00:0042:8329')?.ip, '2001:db8::ff00:42:8329');
    assert.equal(normaliseIp('2001:db8:0:1:0:0:0:1')?.ip, '2001:db8:0:1::1');
    assert.equal(normaliseIp('fe80::1:0:0:1')?.ip, 'fe80::1:0:0:1');
    assert.equal(normaliseIp('0:0:0:0:0:0:0:0')?.ip, '::');
    assert.equal(normaliseIp('1:0:0:0:0:0:0:0')?.ip, '1::');
    assert.equal(normaliseIp('2001:DB8::')?.ip, '2001:db8::');
    assert.equal(normaliseIp('x'), null);
  });
});
