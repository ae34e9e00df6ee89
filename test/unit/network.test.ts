// --ipv4-prefix / --ipv6-prefix: the network a client is keyed by.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EXACT, networkOf, parsePrefix } from '../../src/network.js';

describe('networkOf', () => {
  it('keeps the exact address with the default prefixes (greydaemon keys)', () => {
    assert.equal(networkOf('192.0.2.77', 4, EXACT), '192.0.2.77');
    assert.equal(networkOf('2001:db8::1', 6, EXACT), '2001:db8::1');
    assert.equal(networkOf('unknown', 0, { v4: 24, v6: 64 }), 'unknown');
  });

  it('masks IPv4 to the prefix', () => {
    const p = { v4: 24, v6: 64 };
    assert.equal(networkOf('192.0.2.77', 4, p), '192.0.2.0/24');
    assert.equal(networkOf('192.0.2.200', 4, p), '192.0.2.0/24');
    assert.notEqual(networkOf('192.0.3.1', 4, p), networkOf('192.0.2.1', 4, p));
    assert.equal(networkOf('203.0.113.200', 4, { v4: 19, v6: 64 }), '203.0.96.0/19');
    assert.equal(networkOf('255.255.255.255', 4, { v4: 8, v6: 64 }), '255.0.0.0/8');
  });

  it('masks IPv6 to the prefix, in canonical text', () => {
    const p = { v4: 24, v6: 64 };
    assert.equal(networkOf('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 6, p), '2001:db8:1:2::/64');
    assert.equal(networkOf('2001:db8:1:2::9', 6, p), '2001:db8:1:2::/64');
    assert.notEqual(networkOf('2001:db8:1:3::9', 6, p), networkOf('2001:db8:1:2::9', 6, p));
    assert.equal(networkOf('2001:db8:1:2ff::1', 6, { v4: 24, v6: 56 }), '2001:db8:1:200::/56');
    assert.equal(networkOf('2001:db8:ffff::1', 6, { v4: 24, v6: 36 }), '2001:db8:f000::/36');
  });

  it('parses prefix flags with a message naming the value', () => {
    assert.equal(parsePrefix('24', 4), 24);
    assert.equal(parsePrefix('64', 6), 64);
    assert.match(String(parsePrefix('33', 4)), /33 is out of range/);
    assert.match(String(parsePrefix('-5', 6)), /"-5" is not a prefix length/);
    assert.match(String(parsePrefix('4', 4)), /from 8 to 32/);
  });
});
