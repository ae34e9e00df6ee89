// The shared backend suite against real Redis: a standalone server and a 3-master Cluster,
// both started here on ephemeral loopback ports (test/redis-server.ts).
import { after, before, describe } from 'node:test';
import { RedisStore } from '../../src/store/redis.js';
import { parseStoreUrl } from '../../src/store/redis-url.js';
import { REDIS_SKIP, REQUIRED, requireRedis, startCluster, startStandalone, type RedisSetup } from '../redis-server.js';
import { runStoreSuite } from '../store-suite.js';

if (REQUIRED) requireRedis();

for (const kind of ['standalone', 'cluster'] as const) {
  describe(`Redis ${kind}`, { skip: REDIS_SKIP }, () => {
    let setup: RedisSetup;
    before(async () => {
      setup = kind === 'cluster' ? await startCluster() : await startStandalone();
    });
    after(async () => {
      await setup?.stop();
    });
    runStoreSuite(`redis (${kind})`, async () => {
      setup.flush();
      const target = parseStoreUrl(setup.url);
      return {
        // the suite checks behaviour, not speed: a loaded machine may take longer than 600 ms
        store: await RedisStore.open(target, { commandTimeoutMs: 10_000 }),
        reopen: () => RedisStore.open(target, { commandTimeoutMs: 10_000 }),
        cleanup: () => Promise.resolve(setup.flush()),
      };
    });
  });
}
