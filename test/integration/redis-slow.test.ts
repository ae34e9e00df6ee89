// A Redis that answers, but slowly: every reply held back 450 ms by a proxy in this test, each
// command under the daemon's 600 ms timeout yet a batch's three round trips over its 1 s
// deadline. The request must still be answered, "not decided" (01 05, reason=store-slow),
// well inside the client's 3 s; once Redis is quick again, decisions resume without a restart.
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { query, removeDir, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { REDIS_SKIP, REQUIRED, requireRedis, startStandalone, type RedisSetup } from '../redis-server.js';

if (REQUIRED) requireRedis();

/** Forwards to Redis, holding back each reply chunk by `delayMs` (in order). */
function slowProxy(redisPort: number): Promise<{ port: number; delayMs: number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const proxy = {
    port: 0,
    delayMs: 0,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(redisPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (d: Buffer) => {
      if (proxy.delayMs === 0) client.write(d);
      else setTimeout(() => client.write(d), proxy.delayMs);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      proxy.port = (server.address() as net.AddressInfo).port;
      resolve(proxy);
    }),
  );
}

describe('a slow Redis', { skip: REDIS_SKIP }, () => {
  let redis: RedisSetup;
  let dir: string;
  before(async () => {
    redis = await startStandalone();
    dir = tempDir();
  });
  after(async () => {
    await redis?.stop();
    if (dir !== undefined) removeDir(dir);
  });

  it('a batch past its deadline is answered 01 05 (store-slow), and decisions resume when Redis is quick again', { timeout: 60_000 }, async () => {
    const proxy = await slowProxy(redis.nodes[0].port);
    let d: Daemon | undefined;
    try {
      d = await startDaemon(['--store', `redis://127.0.0.1:${proxy.port}`, '127.0.0.1:0', join(dir, 'state')]);
      // the daemon is connected; from now on each of Redis's replies takes 450 ms
      assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
      proxy.delayMs = 450;
      // the client's own wait: 2 s (the helper's), inside IndiMail's 3 s
      assert.equal(await query(d.port, '192.0.2.2', 'a@x.example', ['b@y.example']), '0105');
      await d.waitForLine(/ip=192\.0\.2\.2 .*reply=01:05 reason=store-slow error="no answer from the store within 1000 ms"/);
      proxy.delayMs = 0;
      assert.equal(await query(d.port, '192.0.2.3', 'a@x.example', ['b@y.example']), '0001', 'decided again, without a restart');
    } finally {
      await d?.stop();
      proxy.close();
    }
  });
});
