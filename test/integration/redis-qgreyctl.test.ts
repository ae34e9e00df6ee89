// qgreyctl against a qgreyd on Redis, through its admin socket: import of a greydaemon save
// file (TTLs from the records' times, dead records left out), export, dump, stats, allow,
// forget; a second qgreyd on the same Redis sees every change.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ctlInProcess } from '../ctl-helpers.js';
import { query, removeDir, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { cli, REDIS_SKIP, REQUIRED, requireRedis, startStandalone, type RedisSetup } from '../redis-server.js';

if (REQUIRED) requireRedis();

describe('qgreyctl on a qgreyd on Redis', { skip: REDIS_SKIP }, () => {
  let redis: RedisSetup;
  let dir: string;
  let a: Daemon;
  let b: Daemon;
  before(async () => {
    redis = await startStandalone();
    dir = tempDir();
    a = await startDaemon(['--store', redis.url, '127.0.0.1:0', join(dir, 'a')]);
    b = await startDaemon(['--store', redis.url, '127.0.0.1:0', join(dir, 'b')]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    if (dir !== undefined) removeDir(dir);
  });

  it('import keeps the times, TTLs from them; export, dump, stats, allow and forget work, and the other MX sees it all', async () => {
    const now = Math.floor(Date.now() / 1000);
    const save = join(dir, 'savefile');
    writeFileSync(
      save,
      [
        `I ${now - 86400} 192.0.2.1`,
        `G ${now - 3600} 192.0.2.2 a@x.example b@y.example`,
        // dead already: an IP idle 8 days, a triplet 13 hours old
        `I ${now - 8 * 86400} 192.0.2.3`,
        `G ${now - 13 * 3600} 192.0.2.4 a@x.example b@y.example`,
        '',
      ].join('\n'),
    );
    const imp = await ctlInProcess(['--state', join(dir, 'a'), 'import', save]);
    assert.equal(imp.code, 0, imp.stderr + imp.stdout);
    const port = redis.nodes[0].port;
    assert.equal(cli(port, 'get', 'qgreyd:1:I:{192.0.2.1}').trim(), String(now - 86400));
    const ttlIp = Number(cli(port, 'ttl', 'qgreyd:1:I:{192.0.2.1}'));
    assert.ok(Math.abs(ttlIp - 6 * 86400) <= 10, `an IP last good a day ago lives 6 more days (TTL ${ttlIp})`);
    const ttlG = Number(cli(port, 'ttl', 'qgreyd:1:G:{192.0.2.2} a@x.example b@y.example'));
    assert.ok(Math.abs(ttlG - 11 * 3600) <= 10, `a triplet first seen an hour ago lives 11 more hours (TTL ${ttlG})`);
    assert.equal(cli(port, 'exists', 'qgreyd:1:I:{192.0.2.3}').trim(), '0', 'dead records are not stored');
    assert.equal(cli(port, 'exists', 'qgreyd:1:G:{192.0.2.4} a@x.example b@y.example').trim(), '0');

    // the other daemon decides with the imported records
    assert.equal(await query(b.port, '192.0.2.1', 'new@x.example', ['n@y.example']), '0102');
    assert.equal(await query(b.port, '192.0.2.2', 'a@x.example', ['b@y.example']), '0103');

    const exp = await ctlInProcess(['--state', join(dir, 'b'), 'export']);
    assert.equal(exp.code, 0, exp.stderr);
    assert.match(exp.stdout, new RegExp(`^I \\d+ 192\\.0\\.2\\.1$`, 'm'));
    assert.match(exp.stdout, new RegExp(`^G ${now - 3600} 192\\.0\\.2\\.2 a@x\\.example b@y\\.example$`, 'm'));
    assert.doesNotMatch(exp.stdout, /192\.0\.2\.[34]/);

    const dump = await ctlInProcess(['--state', join(dir, 'a'), 'dump', '--ip', '192.0.2.2']);
    assert.equal(dump.code, 0, dump.stderr);
    assert.match(dump.stdout, /192\.0\.2\.2 <a@x\.example> <b@y\.example>/);
    const stats = await ctlInProcess(['--state', join(dir, 'a'), 'stats', '--json']);
    assert.equal(stats.code, 0, stats.stderr);
    const st = JSON.parse(stats.stdout) as { ips: { count: number }; triplets: { count: number } };
    assert.equal(st.triplets.count, 1);
    assert.equal(st.ips.count, 2, 'the imported IP, and 192.0.2.2 made known good by its retry');

    // allow on one MX, the other accepts; forget on the other, the first greylists again
    assert.equal((await ctlInProcess(['--state', join(dir, 'a'), 'allow', '198.51.100.9'])).code, 0);
    assert.equal(await query(b.port, '198.51.100.9', 'q@x.example', ['w@y.example']), '0102');
    assert.equal((await ctlInProcess(['--state', join(dir, 'b'), 'forget', '198.51.100.9'])).code, 0);
    assert.equal(await query(a.port, '198.51.100.9', 'q@x.example', ['w@y.example']), '0001');
    assert.equal((await ctlInProcess(['--state', join(dir, 'b'), 'forget', '198.51.100.9', 'q@x.example', 'w@y.example'])).code, 0);
    assert.equal(cli(port, 'exists', 'qgreyd:1:G:{198.51.100.9} q@x.example w@y.example').trim(), '0');
  });

  it('with the daemon stopped, qgreyctl --store works on the Redis itself', async () => {
    await a.stop();
    const state = ['--state', join(dir, 'a')];
    const now = Math.floor(Date.now() / 1000);
    const save = join(dir, 'savefile2');
    writeFileSync(save, `G ${now - 7200} 192.0.2.77 c@x.example d@y.example\n`);
    const imp = await ctlInProcess([...state, 'import', '--store', redis.url, save]);
    assert.equal(imp.code, 0, imp.stderr + imp.stdout);
    const ttl = Number(cli(redis.nodes[0].port, 'ttl', 'qgreyd:1:G:{192.0.2.77} c@x.example d@y.example'));
    assert.ok(Math.abs(ttl - 10 * 3600) <= 10, `TTL from the record's time (${ttl})`);
    const dump = await ctlInProcess([...state, 'dump', '--store', redis.url, '--ip', '192.0.2.77']);
    assert.equal(dump.code, 0, dump.stderr);
    assert.match(dump.stdout, /192\.0\.2\.77 <c@x\.example> <d@y\.example>/);
    assert.equal(await query(b.port, '192.0.2.77', 'c@x.example', ['d@y.example']), '0103', 'the running MX sees the import');
    const bad = await ctlInProcess([...state, 'stats', '--store', 'redis://x:1:2']);
    assert.equal(bad.code, 100);
  });
});
