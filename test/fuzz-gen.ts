// Generators of hostile datagrams for the fuzz test: mutated requests, binary envelopes,
// field soup, bad IPs, huge recipient lists, oversized and random packets.
import { encodeRequest, MAX_DATAGRAM } from '../src/protocol.js';
import type { Prng } from './prng.js';

function address(r: Prng): string {
  const locals = ['a', 'bob', 'x.y', 'list-bounce-u=h.example', 'ned', 'VERP-42=x', 'postmaster', 'Mixed.Case'];
  const domains = ['x.example', 'Y.EXAMPLE', 'lists.example', 'xn--bcher-kva.example'];
  return `${r.pick(locals)}${r.int(0, 99)}@${r.pick(domains)}`;
}

function fuzzIp(r: Prng): string {
  if (r.chance(0.8)) return `${r.int(1, 197)}.${r.int(0, 255)}.${r.int(0, 255)}.${r.int(0, 255)}`;
  return `2001:db8:${r.int(0, 0xffff).toString(16)}::${r.int(1, 0xffff).toString(16)}`;
}

function validRequest(r: Prng): Buffer {
  const sender = r.chance(0.1) ? '' : r.chance(0.1) ? ` ${address(r)} ` : address(r);
  const n = r.int(0, 5);
  const rcpts = Array.from({ length: n }, () => address(r));
  return encodeRequest(fuzzIp(r), sender, rcpts);
}

// some are not addresses but are greylisted as text (`unknown`, `localhost`, `999.1.1.1`)
const BAD_IPS = ['unknown', 'Unknown', 'x'.repeat(64), 'x'.repeat(65), '999.1.1.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.4 ', ' 1.2.3.4', '::ffff:1.2.3.4', 'fe80::1%eth0',
  'fe80::1%\n', '::', '::1', 'gggg::1', '1:2:3:4:5:6:7:8:9', '', 'localhost', '1.2.3.4\r\nI5.6.7.8', '[::1]', '0x7f.1.1.1'];

function mutate(r: Prng, base: Buffer): Buffer {
  const b = Buffer.from(base);
  switch (r.int(0, 9)) {
    case 0: // truncated anywhere
      return b.subarray(0, r.int(0, b.length));
    case 1: { // one NUL gone: two fields run together
      const nuls = [...b.keys()].filter((i) => b[i] === 0);
      if (nuls.length === 0) return b;
      const i = r.pick(nuls);
      return Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
    }
    case 2: // no NULs at all
      return Buffer.from([...b].filter((x) => x !== 0));
    case 3: { // random bytes flipped
      for (let k = r.int(1, 4); k > 0 && b.length > 0; k--) b[r.int(0, b.length - 1)] ^= r.int(1, 255);
      return b;
    }
    case 4: { // random bytes inserted
      const i = r.int(0, b.length);
      return Buffer.concat([b.subarray(0, i), r.bytes(r.int(1, 16)), b.subarray(i)]);
    }
    case 5: { // a field's tag letter replaced
      const starts = [0, ...[...b.keys()].filter((i) => b[i] === 0 && i + 1 < b.length).map((i) => i + 1)];
      b[r.pick(starts)] = r.pick([0x49, 0x46, 0x54, 0x69, 0x66, 0x74, 0x00, 0x20, 0xff, r.int(0, 255)]);
      return b;
    }
    case 6: { // an empty field in the middle
      const nuls = [...b.keys()].filter((i) => b[i] === 0);
      const i = nuls.length > 0 ? r.pick(nuls) : b.length;
      return Buffer.concat([b.subarray(0, i), Buffer.from([0]), b.subarray(i)]);
    }
    case 7: // fields duplicated
      return Buffer.concat([b.subarray(0, Math.max(0, b.length - 1)), b]);
    case 8: // the tail swapped for garbage
      return Buffer.concat([b.subarray(0, r.int(0, b.length)), r.bytes(r.length(300))]);
    default: // trailing junk after the final NUL
      return Buffer.concat([b, r.bytes(r.int(1, 8))]);
  }
}

function binaryEnvelope(r: Prng): Buffer {
  // well-formed, with bytes that are not addresses: invalid UTF-8, control characters,
  // high latin1, DEL, spaces; each NUL-free so the fields stay where they are
  const junk = () => {
    const b = r.bytes(r.length(200));
    for (let i = 0; i < b.length; i++) if (b[i] === 0) b[i] = r.pick([0xc3, 0x28, 0xff, 0x0a, 0x0d, 0x1b, 0x7f, 0x20]);
    return b.toString('latin1');
  };
  const pieces = [junk(), '\xc3\x28', '\xe2\x82', '\xf0\x28\x8c\xbc', '\r\n', '\x1b[2J', 'a\tb', '\u00ff\u00fe'];
  const rc = Array.from({ length: r.int(0, 4) }, () => 'x' + r.pick(pieces) + junk());
  return encodeRequest(fuzzIp(r), r.chance(0.2) ? '' : r.pick(pieces) + junk(), rc);
}

function hugeRecipients(r: Prng): Buffer {
  // around the 1000 that once was a limit, and up to what fits in a datagram
  const n = r.chance(0.5) ? r.int(995, 1005) : r.int(1006, 3000);
  const rc = Array.from({ length: n }, (_, i) => `r${i}@h.example`);
  const b = encodeRequest(fuzzIp(r), 'a@x.example', rc);
  return b.length > MAX_DATAGRAM ? b.subarray(0, MAX_DATAGRAM) : b;
}

function oversized(r: Prng): Buffer {
  const size = r.chance(0.5) ? MAX_DATAGRAM : r.int(2049, MAX_DATAGRAM);
  switch (r.int(0, 3)) {
    case 0: // valid request padded with NULs: still well-formed
      return Buffer.concat([validRequest(r), Buffer.alloc(size)]).subarray(0, size);
    case 1: // a huge sender (malformed past 512 bytes) or one just at the limit
      if (r.chance(0.5)) return encodeRequest(fuzzIp(r), 's'.repeat(502) + '@x.example', ['a@y.example', 'r'.repeat(r.int(500, 520))]);
      return encodeRequest(fuzzIp(r), 's'.repeat(size - 200) + '@x.example', ['a@y.example']).subarray(0, size);
    case 2:
      return r.bytes(size);
    default: // a request followed by a megafield without NUL
      return Buffer.concat([validRequest(r), Buffer.alloc(size, 0x54)]).subarray(0, size);
  }
}

function fieldSoup(r: Prng): Buffer {
  const tags = ['I', 'F', 'T', 'X', '', 'i'];
  const parts: string[] = [];
  for (let k = r.int(1, 8); k > 0; k--) {
    const tag = r.pick(tags);
    parts.push(tag === 'I' ? 'I' + r.pick([fuzzIp(r), ...BAD_IPS]) : tag + r.bytes(r.length(40)).toString('latin1').replace(/\0/g, ''));
  }
  return Buffer.from(parts.join('\0') + (r.chance(0.5) ? '\0\0' : ''), 'latin1');
}

export function generate(r: Prng): Buffer {
  const p = r.int(0, 999);
  if (p < 350) return mutate(r, validRequest(r));
  if (p < 450) return binaryEnvelope(r);
  if (p < 650) return r.bytes(r.length(2000));
  if (p < 780) return fieldSoup(r);
  if (p < 880) return encodeRequest(r.pick(BAD_IPS), address(r), [address(r)]);
  if (p < 884) return hugeRecipients(r);
  if (p < 894) return oversized(r);
  if (p < 900) return r.pick([Buffer.alloc(0), Buffer.alloc(r.int(1, 64)), Buffer.from('I'), Buffer.from('I\0\0'), Buffer.from('\0I1.2.3.4\0Fa\0\0')]);
  return validRequest(r);
}

