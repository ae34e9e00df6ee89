// The --store URL and the Redis key layout, without a server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseRedisKey, redisIpKey, redisTripletKey } from '../../src/store/redis-keys.js';
import { recordKeyOf, redisKeyOf } from '../../src/store/redis.js';
import { describeTarget, parseStoreUrl, StoreUrlError } from '../../src/store/redis-url.js';

test('--store URLs: one server, TLS, a database, credentials, a Cluster, IPv6', () => {
  assert.deepEqual(parseStoreUrl('redis://10.0.0.5:6380'), { cluster: false, tls: false, nodes: [{ host: '10.0.0.5', port: 6380 }], db: 0 });
  assert.deepEqual(parseStoreUrl('rediss://u:p%40ss@redis.example/3'), { cluster: false, tls: true, nodes: [{ host: 'redis.example', port: 6379 }], db: 3, username: 'u', password: 'p@ss' });
  assert.deepEqual(parseStoreUrl('redis://:secret@h:1').password, 'secret');
  assert.equal(parseStoreUrl('redis://:secret@h:1').username, undefined);
  assert.deepEqual(parseStoreUrl('redis-cluster://a:7000,b:7001,[::1]:7002').nodes, [
    { host: 'a', port: 7000 },
    { host: 'b', port: 7001 },
    { host: '::1', port: 7002 },
  ]);
  assert.equal(parseStoreUrl('rediss-cluster://a:7000').tls, true);
});

test('a bad --store URL is refused, naming it with the password masked', () => {
  for (const [url, why] of [
    ['localhost:6379', /not a URL/],
    ['http://h:1', /unknown scheme "http"/],
    ['redis://h:0', /port "0"/],
    ['redis://h:99999', /port "99999"/],
    ['redis://h:1,k:2', /several hosts are for redis-cluster/],
    ['redis-cluster://h:1/2', /only database 0/],
    ['redis://u:topsecret@h:1/x', /database "x"/],
    ['redis://::1:6379', /IPv6 address in brackets/],
    ['redis://', /no host/],
  ] as const) {
    assert.throws(
      () => parseStoreUrl(url),
      (e: unknown) => e instanceof StoreUrlError && why.test(e.message) && !e.message.includes('topsecret'),
      url,
    );
  }
});

test('describeTarget never shows the password', () => {
  assert.equal(describeTarget(parseStoreUrl('redis://qgreyd:pw@10.0.0.5:6379/2')), 'redis://qgreyd:***@10.0.0.5:6379/2');
  assert.equal(describeTarget(parseStoreUrl('rediss-cluster://:pw@a:1,[::1]:2')), 'rediss-cluster://:***@a:1,[::1]:2');
  assert.equal(describeTarget(parseStoreUrl('redis://h:1')), 'redis://h:1');
});

test('Redis keys: readable, the format version in the name, the client IP as hash tag, and back', () => {
  assert.equal(redisIpKey('192.0.2.1'), 'qgreyd:1:I:{192.0.2.1}');
  assert.equal(redisTripletKey('192.0.2.1 a@x b@y'), 'qgreyd:1:G:{192.0.2.1} a@x b@y');
  // a text client IP keeps its case after the tag; the tag is the triplets' lower-case one
  assert.equal(redisIpKey('UNKNOWN'), 'qgreyd:1:I:{unknown}UNKNOWN');
  assert.equal(redisTripletKey('unknown a@x b@y'), 'qgreyd:1:G:{unknown} a@x b@y');
  // braces and % cannot end a tag early; an empty IP does not make an empty tag
  assert.equal(redisIpKey('a}b{%'), 'qgreyd:1:I:{a%7Db%7B%25}');
  assert.equal(redisIpKey(''), 'qgreyd:1:I:{%}');
  for (const k of ['I 192.0.2.1', 'I 2001:db8::1', 'I UNKNOWN', 'I a}b{%', 'I ', 'G 192.0.2.1 a@x b@y', 'G unknown . x-y=z@q', 'G a}b a@x b@y', 'G 10.0.0.1 \u00e9@x \u00ff\u0001@y']) {
    assert.equal(recordKeyOf(redisKeyOf(k)), k, k);
  }
  assert.equal(parseRedisKey('qgreyd:format'), null);
  assert.equal(parseRedisKey('other:1:I:{x}'), null);
  assert.equal(recordKeyOf('qgreyd:1:G:{x}y'), null);
});
