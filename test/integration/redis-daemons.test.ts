// Several qgreyd on one Redis, spoken to over UDP: a scripted sequence answered by two and three
// daemons (requests alternating between them) exactly as by one daemon; daemons hammered with
// the same triplets at once; Redis killed and restarted under load. Real redis-server, started
// here on loopback ports (test/redis-server.ts); the daemons' clocks are moved through
// QGREYD_TEST_CLOCK_FILE, never by sleeping.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ipKey, tripletDbKey } from '../../src/store/keys.js';
import { RedisStore } from '../../src/store/redis.js';
import { parseStoreUrl } from '../../src/store/redis-url.js';
import { query, removeDir, setTestClock, sleep, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { Prng } from '../prng.js';
import { REDIS_SKIP, REQUIRED, requireRedis, startCluster, startStandalone, type RedisSetup } from '../redis-server.js';

if (REQUIRED) requireRedis();

const SEED = Number(process.env.QGREYD_SEED) || 20261123;
const MIN_RESEND = 300;
const GREY_WINDOW = 12 * 3600;
const TIMEOUT = 7 * 86400;

interface Step {
  offset: number;
  requests: Array<{ ip: string; sender: string; rcpts: string[] }>;
}

/** A sequence over simulated days. No two moments of it lie within a minute of a rule's
 *  boundary from each other, so the seconds the test itself takes cannot tip a verdict. */
function script(seed: number): Step[] {
  for (let s = seed; ; s++) {
    const r = new Prng(s);
    const gaps = [0, 61, 1000, 9000, 50_000, 700_000];
    const offsets: number[] = [];
    let t = 0;
    for (let i = 0; i < 14; i++) {
      t += gaps[r.int(0, gaps.length - 1)];
      if (offsets.length === 0 || t !== offsets[offsets.length - 1]) offsets.push(t);
    }
    const near = offsets.some((a, i) => offsets.slice(i + 1).some((b) => [MIN_RESEND, GREY_WINDOW, TIMEOUT].some((edge) => Math.abs(b - a - edge) < 60)));
    if (near) continue;
    const ips = ['192.0.2.1', '192.0.2.2', '198.51.100.7', '2001:db8::25'];
    const senders = ['a@x.example', 'b@x.example', ''];
    const rcpts = ['r1@y.example', 'r2@y.example', 'list-bounce-u=h.example@lists.example', 'R1@Y.EXAMPLE'];
    return offsets.map((offset) => ({
      offset,
      requests: Array.from({ length: r.int(2, 6) }, () => ({
        ip: ips[r.int(0, ips.length - 1)],
        sender: senders[r.int(0, senders.length - 1)],
        rcpts: Array.from({ length: r.int(1, 3) }, () => rcpts[r.int(0, rcpts.length - 1)]),
      })),
    }));
  }
}


/** The replies to the script, each request sent to the next daemon in turn. */
async function run(steps: Step[], daemons: Daemon[], clockFile: string): Promise<string[]> {
  const replies: string[] = [];
  let n = 0;
  for (const step of steps) {
    await setTestClock(daemons, clockFile, step.offset);
    for (const q of step.requests) {
      const d = daemons[n++ % daemons.length];
      const reply = await query(d.port, q.ip, q.sender, q.rcpts);
      replies.push(`${step.offset} ${q.ip} <${q.sender}> ${q.rcpts.join(',')} -> ${reply}`);
    }
  }
  return replies;
}

async function startMany(n: number, url: string | null, dir: string, clockFile: string, extra: string[] = []): Promise<Daemon[]> {
  const out: Daemon[] = [];
  for (let i = 0; i < n; i++) {
    const state = join(dir, `state${out.length}-${Math.random().toString(36).slice(2)}`);
    const args = [...extra, ...(url !== null ? ['--store', url] : []), '127.0.0.1:0', state];
    out.push(await startDaemon(args, { env: { ...process.env, QGREYD_TEST_CLOCK_FILE: clockFile } }));
  }
  return out;
}

async function stopAll(ds: Daemon[]): Promise<void> {
  await Promise.all(ds.map((d) => d.stop()));
}

describe('several qgreyd on one Redis', { skip: REDIS_SKIP }, () => {
  let standalone: RedisSetup;
  let cluster: RedisSetup;
  let dir: string;
  before(async () => {
    standalone = await startStandalone();
    cluster = await startCluster();
    dir = tempDir();
  });
  after(async () => {
    await standalone?.stop();
    await cluster?.stop();
    if (dir !== undefined) removeDir(dir);
  });

  it('two and three daemons (standalone and Cluster) answer a scripted sequence exactly as one daemon does', async () => {
    const steps = script(SEED);
    const clockFile = join(dir, 'clock');
    writeFileSync(clockFile, '0\n');
    const one = await startMany(1, null, dir, clockFile);
    const reference = await run(steps, one, clockFile).finally(() => stopAll(one));
    const verdicts = new Set(reference.map((l) => l.slice(-4)));
    // the script reaches every rule
    for (const v of ['0001', '0002', '0003', '0102', '0103', '0104']) assert.ok(verdicts.has(v), `the script has a ${v} (seed ${SEED})`);
    for (const [name, setup, n] of [
      ['standalone', standalone, 2],
      ['standalone', standalone, 3],
      ['Cluster', cluster, 3],
    ] as const) {
      setup.flush();
      const ds = await startMany(n, setup.url, dir, clockFile);
      const got = await run(steps, ds, clockFile).finally(() => stopAll(ds));
      assert.deepEqual(got, reference, `${n} daemons on ${name} Redis, seed ${SEED}`);
    }
  });

  it('daemons hammered with the same triplets at once: one first-seen each, no lost known-good, one clock restart', async () => {
    standalone.flush();
    const clockFile = join(dir, 'clock-race');
    writeFileSync(clockFile, '0\n');
    const ds = await startMany(3, standalone.url, dir, clockFile);
    try {
      const ips = Array.from({ length: 60 }, (_, i) => `203.0.113.${i}`);
      const hammer = (): Promise<Array<Array<string | null>>> =>
        Promise.all(ips.map((ip) => Promise.all(ds.flatMap((d) => [0, 1, 2].map(() => query(d.port, ip, 'a@x.example', ['b@y.example']))))));
      const tally = (rs: Array<string | null>): Record<string, number> => {
        const c: Record<string, number> = {};
        for (const r of rs) c[String(r)] = (c[String(r)] ?? 0) + 1;
        return c;
      };
      for (const rs of await hammer()) assert.deepEqual(tally(rs), { '0001': 1, '0002': 8 }, 'exactly one first-seen per triplet');
      await setTestClock(ds, clockFile, 400);
      for (const rs of await hammer()) {
        const c = tally(rs);
        assert.equal((c['0103'] ?? 0) + (c['0102'] ?? 0), 9, `every retry accepted: ${JSON.stringify(c)}`);
      }
      const store = await RedisStore.open(parseStoreUrl(standalone.url));
      try {
        const now = Math.floor(Date.now() / 1000);
        const good = await store.lookup(ips.map(ipKey));
        for (const g of good) assert.ok(g !== undefined && Math.abs(g - (now + 400)) <= 5, 'every IP known good: no lost known-good');
        // stale triplets of IPs that never passed: exactly one daemon restarts each clock
        const fresh = Array.from({ length: 40 }, (_, i) => `198.51.100.${i}`);
        for (const ip of fresh) assert.equal(await query(ds[0].port, ip, 's@x.example', ['t@y.example']), '0001');
        await setTestClock(ds, clockFile, 400 + 13 * 3600);
        const late = await Promise.all(fresh.map((ip) => Promise.all(ds.flatMap((d) => [0, 1, 2].map(() => query(d.port, ip, 's@x.example', ['t@y.example']))))));
        for (const rs of late) assert.deepEqual(tally(rs), { '0003': 1, '0002': 8 }, 'one clock restart; the others see it');
        const clocks = await store.lookup(fresh.map((ip) => tripletDbKey(`${ip} s@x.example t@y.example`)));
        for (const t of clocks) assert.ok(t !== undefined && Math.abs(t - (now + 400 + 13 * 3600)) <= 5, 'no lost update of the clock');
      } finally {
        await store.close();
      }
      const conflicts = ds.map((d) => d.lines.filter((l) => /reply=01:05/.test(l)).length);
      assert.deepEqual(conflicts, [0, 0, 0], 'nothing went undecided');
    } finally {
      await stopAll(ds);
    }
  });

  it('Redis killed, then stopped, under load: every request answered 01 05 (00 04 failing closed) meanwhile, decisions resume after its restart without restarting qgreyd', async () => {
    const clockFile = join(dir, 'clock-outage');
    writeFileSync(clockFile, '0\n');
    const [open] = await startMany(1, standalone.url, dir, clockFile);
    const [closed] = await startMany(1, standalone.url, dir, clockFile, ['--fail-closed']);
    const pids = [open.proc.pid, closed.proc.pid];
    try {
      const replies: Array<{ d: Daemon; reply: string | null; phase: string }> = [];
      let phase = 'up';
      let stop = false;
      let n = 0;
      const loop = async (d: Daemon): Promise<void> => {
        while (!stop) {
          const i = n++;
          const reply = await query(d.port, `10.9.${(i >> 8) & 255}.${i & 255}`, 'a@x.example', ['b@y.example']);
          replies.push({ d, reply, phase });
        }
      };
      const loops = [open, closed, open, closed, open, closed].map(loop);
      await sleep(300);
      phase = 'down';
      await standalone.nodes[0].kill();
      await sleep(1500);
      phase = 'restarting';
      await standalone.nodes[0].start();
      // decisions again, on both daemons
      for (let i = 0; i < 200; i++) {
        if ([open, closed].every((d) => replies.some((r) => r.d === d && r.phase === 'restarting' && r.reply === '0001'))) break;
        await sleep(50);
      }
      // a Redis that is there but does not answer (stopped): answers within qmail-smtpd's 3 s
      // (query() gives up after 2 s)
      phase = 'paused';
      standalone.nodes[0].pause();
      await sleep(2000);
      standalone.nodes[0].resume();
      phase = 'resumed';
      for (let i = 0; i < 200; i++) {
        if ([open, closed].every((d) => replies.some((r) => r.d === d && r.phase === 'resumed' && r.reply === '0001'))) break;
        await sleep(50);
      }
      stop = true;
      await Promise.all(loops);
      assert.ok(replies.every((r) => r.reply !== null), 'every request answered, within 2 s');
      const paused = replies.filter((r) => r.phase === 'paused');
      // each of the six loops waits out one command timeout per request; what was in flight as
      // Redis stopped may have been decided
      const undecided = paused.filter((r) => r.reply === '0105' || r.reply === '0004').length;
      assert.ok(paused.length >= 6 && undecided >= paused.length - 6, `not decided while Redis is stopped: ${JSON.stringify(paused.map((r) => r.reply))}`);
      for (const d of [open, closed]) assert.ok(replies.some((r) => r.d === d && r.phase === 'resumed' && r.reply === '0001'), 'decisions resumed after SIGCONT');
      const during = replies.filter((r) => r.phase === 'down');
      assert.ok(during.length > 20, 'load went on during the outage');
      // what was in flight as Redis died may have been decided; everything else is "not decided"
      const notDecided = (d: Daemon) => during.filter((r) => r.d === d && r.reply === (d === open ? '0105' : '0004')).length;
      assert.ok(notDecided(open) >= during.filter((r) => r.d === open).length - 6, 'failing open: 01 05');
      assert.ok(notDecided(closed) >= during.filter((r) => r.d === closed).length - 6, 'failing closed: 00 04');
      for (const d of [open, closed]) {
        assert.ok(replies.some((r) => r.d === d && r.phase === 'restarting' && r.reply === '0001'), 'decisions resumed');
        assert.equal(d.proc.exitCode, null, 'qgreyd still running');
        // the kill and the stop: each outage logged once, and its end
        assert.equal(d.lines.filter((l) => l.startsWith('error store ')).length, 2, 'each outage logged once');
        assert.equal(d.lines.filter((l) => l.startsWith('store recovered ')).length, 2, 'each recovery logged once');
      }
      assert.deepEqual([open.proc.pid, closed.proc.pid], pids);
    } finally {
      await stopAll([open, closed]);
    }
  });
});
