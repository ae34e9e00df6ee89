// The Redis backend against real servers, beyond the shared suite: what several daemons
// sharing one Redis rely on (atomic decisions under a race, TTLs from the expiry rule, the key
// layout redis-cli shows), and outages (a killed, a restarted and a stopped server).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decide, expiresAt, settingsFrom, tripletKeys, type Decision, type RecordView } from '../../src/policy.js';
import { Verdict, type Request, type Verdict as V } from '../../src/protocol.js';
import { ipKey, isIpKey, tripletDbKey } from '../../src/store/keys.js';
import { RedisStore } from '../../src/store/redis.js';
import { parseStoreUrl } from '../../src/store/redis-url.js';
import type { CommitGroup, StoreHealth, Value } from '../../src/store/types.js';
import { sleep } from '../helpers.js';
import { cli, REDIS_SKIP, REQUIRED, requireRedis, startCluster, startStandalone, type RedisSetup } from '../redis-server.js';

// The race test checks atomicity, not speed: on a loaded machine five connections hammering a
// Cluster can take longer than the daemon's 600 ms command timeout
const RACE_TIMEOUT_MS = 10_000;

if (REQUIRED) requireRedis();

const S = settingsFrom(7, 12, 5);
const rule = (key: string, time: number): number => expiresAt(isIpKey(key), time, S);

function request(ip: string, sender: string, recipients: string[]): Request {
  return { ip, family: 4, tail: { sender, recipients } };
}

/** What the decision queue does for one request on a shared store: read, decide, commit on
 *  the condition that what was read still holds, and decide again from the current values
 *  when another daemon got there first. */
async function decideShared(store: RedisStore, req: Request, now: number): Promise<{ verdict: V; tries: number }> {
  const env = 'error' in req.tail ? null : req.tail;
  const keys = [ipKey(req.ip), ...(env === null ? [] : tripletKeys(req.ip, env).map(tripletDbKey))];
  let values: Value[] = await store.lookup(keys);
  for (let tries = 1; tries <= 50; tries++) {
    const known = new Map(keys.map((k, i) => [k, values[i]]));
    const view: RecordView = { lastGood: (ip) => known.get(ipKey(ip)), firstSeen: (t) => known.get(tripletDbKey(t)) };
    const d = decide(req, false, view, now, S) as Decision;
    const changes: Array<readonly [string, number]> = d.triplets.map(([t, time]) => [tripletDbKey(t), time] as const);
    if (d.knownGood !== undefined) changes.push([ipKey(req.ip), d.knownGood]);
    const group: CommitGroup = { expect: keys.map((k, i) => [k, values[i]] as const), changes };
    const r = await store.commit([group]);
    if (r === null) return { verdict: d.verdict, tries };
    values = r.get(0)!;
  }
  throw new Error('no decision after 50 conflicts');
}

function count(vs: V[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of vs) out[v] = (out[v] ?? 0) + 1;
  return out;
}

for (const kind of ['standalone', 'cluster'] as const) {
  describe(`Redis backend, ${kind}: several daemons on one store`, { skip: REDIS_SKIP }, () => {
    let setup: RedisSetup;
    const stores: RedisStore[] = [];
    before(async () => {
      setup = kind === 'cluster' ? await startCluster() : await startStandalone();
      // five "daemons": five connections, each deciding on its own
      for (let i = 0; i < 5; i++) stores.push(await RedisStore.open(parseStoreUrl(setup.url), { expiresAt: rule, clock: () => T0, commandTimeoutMs: RACE_TIMEOUT_MS }));
    });
    after(async () => {
      for (const s of stores) await s.close();
      await setup?.stop();
    });
    const T0 = 1_800_000_000;

    it('a triplet hammered by every daemon at once: one first-seen, one clock restart, the IP known good once passed', async () => {
      setup.flush();
      const triplets = Array.from({ length: 40 }, (_, i) => request(`198.51.100.${i}`, `s${i}@x.example`, [`r${i}@y.example`]));
      // every daemon sends every triplet several times, all at the same moment
      let retried = 0;
      const round = async (now: number): Promise<V[][]> =>
        Promise.all(
          triplets.map(async (req) => {
            const all = await Promise.all(stores.flatMap((s) => [0, 1, 2].map(() => decideShared(s, req, now))));
            for (const r of all) if (r.tries > 1) retried++;
            return all.map((r) => r.verdict);
          }),
        );
      const first = await round(T0);
      for (const vs of first) assert.deepEqual(count(vs), { [Verdict.New]: 1, [Verdict.TooSoon]: 14 }, 'exactly one first-seen per triplet');
      // the race was real: decisions were made again after another daemon's commit
      assert.ok(retried > 0, 'some decisions met a conflict');
      // the triplet's clock: first seen at T0 on every daemon's view
      const seen = await stores[1].lookup(triplets.map((r) => tripletDbKey(tripletKeys(r.ip, r.tail as { sender: string; recipients: string[] })[0])));
      assert.deepEqual(seen, triplets.map(() => T0));

      // past min-resend: the first to decide passes the triplet and makes the IP known good;
      // every later one sees the IP known good
      const second = await round(T0 + 400);
      for (const vs of second) {
        const c = count(vs);
        assert.equal((c[Verdict.Passed] ?? 0) + (c[Verdict.KnownGood] ?? 0), 15, 'every retry accepted');
        assert.ok((c[Verdict.Passed] ?? 0) >= 1);
      }
      const good = await stores[2].lookup(triplets.map((r) => ipKey(r.ip)));
      assert.deepEqual(good, triplets.map(() => T0 + 400), 'no lost known-good');

      // stale triplets of IPs that are not known good (other IPs): exactly one restarts the clock
      const stale = Array.from({ length: 20 }, (_, i) => request(`203.0.113.${i}`, 'a@x.example', ['b@y.example']));
      await Promise.all(stale.map((r) => decideShared(stores[0], r, T0)));
      const late = T0 + 13 * 3600;
      const third = await Promise.all(stale.map((req) => Promise.all(stores.flatMap((s) => [0, 1, 2].map(() => decideShared(s, req, late))))));
      for (const rs of third) assert.deepEqual(count(rs.map((r) => r.verdict)), { [Verdict.TooLate]: 1, [Verdict.TooSoon]: 14 }, 'one clock restart; the rest see it');
      const restarted = await stores[3].lookup(stale.map((r) => tripletDbKey(tripletKeys(r.ip, r.tail as { sender: string; recipients: string[] })[0])));
      assert.deepEqual(restarted, stale.map(() => late), 'no lost update of the clock');
    });

    it('names records readably, with the format version, one hash tag per client IP, and TTLs from the expiry rule', async () => {
      setup.flush();
      const now = Math.floor(Date.now() / 1000);
      const s = await RedisStore.open(parseStoreUrl(setup.url), { expiresAt: rule });
      try {
        await s.commit([{ expect: [], changes: [[ipKey('192.0.2.1'), now], [tripletDbKey('192.0.2.1 a@x.example b@y.example'), now - 3600]] }]);
        const port = setup.nodes[0].port;
        const flag = kind === 'cluster' ? ['-c'] : [];
        assert.equal(cli(port, ...flag, 'get', 'qgreyd:1:I:{192.0.2.1}').trim(), String(now));
        assert.equal(cli(port, ...flag, 'get', 'qgreyd:1:G:{192.0.2.1} a@x.example b@y.example').trim(), String(now - 3600));
        assert.equal(cli(port, ...flag, 'get', 'qgreyd:format').trim(), '1');
        const ttlIp = Number(cli(port, ...flag, 'ttl', 'qgreyd:1:I:{192.0.2.1}'));
        const ttlG = Number(cli(port, ...flag, 'ttl', 'qgreyd:1:G:{192.0.2.1} a@x.example b@y.example'));
        assert.ok(Math.abs(ttlIp - S.timeout) <= 5, `IP TTL ${ttlIp} = timeout`);
        assert.ok(Math.abs(ttlG - (S.greyWindow - 3600)) <= 5, `triplet TTL ${ttlG} = grey-window less its age`);
        if (kind === 'cluster') {
          const slot = (k: string): string => cli(port, 'cluster', 'keyslot', k).trim();
          assert.equal(slot('qgreyd:1:I:{192.0.2.1}'), slot('qgreyd:1:G:{192.0.2.1} a@x.example b@y.example'), 'one slot per client IP');
        }
        // a record dead already is not stored
        await s.commit([{ expect: [], changes: [[tripletDbKey('192.0.2.1 old@x.example b@y.example'), now - S.greyWindow - 1]] }]);
        assert.deepEqual(await s.lookup([tripletDbKey('192.0.2.1 old@x.example b@y.example')]), [undefined]);
      } finally {
        await s.close();
      }
    });
  });
}

describe('Redis backend: outages', { skip: REDIS_SKIP }, () => {
  let setup: RedisSetup;
  before(async () => {
    setup = await startStandalone();
  });
  after(async () => {
    await setup?.stop();
  });

  it('fails each call at once while Redis is down, reports it once, and works again when Redis is back, without a reopen', async () => {
    const events: StoreHealth[] = [];
    const s = await RedisStore.open(parseStoreUrl(setup.url), { onHealth: (e) => events.push(e) });
    try {
      await s.commit([{ expect: [], changes: [[ipKey('192.0.2.1'), 1]] }]);
      await setup.nodes[0].kill();
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        await assert.rejects(s.lookup([ipKey('192.0.2.1')]), (e: unknown) => (e as { code?: string }).code === 'QGREYD_STORE_IO' && (e as { temporary?: boolean }).temporary === true);
        // the guarantee is the client's: qmail-smtpd waits 3 s for the answer
        assert.ok(performance.now() - t < 2500, 'a failed call returns well within qmail-smtpd\'s 3 s');
        await sleep(100);
      }
      assert.equal(s.healthy, false);
      assert.deepEqual(
        events.map((e) => e.state),
        ['failed'],
        'one report per outage',
      );
      await setup.nodes[0].start();
      let back = false;
      for (let i = 0; i < 200 && !back; i++) {
        try {
          await s.lookup([ipKey('192.0.2.1')]);
          back = true;
        } catch {
          await sleep(50);
        }
      }
      assert.ok(back, 'the store reconnected by itself');
      assert.equal(s.healthy, true);
      assert.deepEqual(
        events.map((e) => e.state),
        ['failed', 'recovered'],
      );
    } finally {
      await s.close();
    }
  });

  it('a Redis that stops answering fails each call within the command timeout', async () => {
    const s = await RedisStore.open(parseStoreUrl(setup.url));
    try {
      setup.nodes[0].pause();
      const t = performance.now();
      await assert.rejects(s.commit([{ expect: [], changes: [[ipKey('192.0.2.2'), 5]] }]), (e: unknown) => (e as { code?: string }).code === 'QGREYD_STORE_IO');
      assert.ok(performance.now() - t < 2500, 'within qmail-smtpd\'s 3 s');
    } finally {
      setup.nodes[0].resume();
      await s.close();
    }
  });

  it('refuses a Redis that cannot be reached at start, temporarily, naming it without the password', async () => {
    const url = setup.url.replace('redis://', 'redis://u:sekrit@').replace(/:(\d+)$/, ':1');
    await assert.rejects(RedisStore.open(parseStoreUrl(url)), (e: unknown) => {
      const m = (e as Error).message;
      return (e as { temporary?: boolean }).temporary === true && m.includes('127.0.0.1:1') && !m.includes('sekrit');
    });
  });
});
