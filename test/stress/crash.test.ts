// Crash safety: drive load, SIGKILL the daemon at a random (seeded) moment, restart it on the
// same state directory, and check that every triplet it had answered 00 01 is still known.
// A reply is sent only after the batch holding its decision was written to LevelDB (group
// commit), so a process crash loses no answered triplet. Repeated several times in one run.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { tripletKey } from '../../src/policy.js';
import { encodeRequest } from '../../src/protocol.js';
import { Store, TRIPLET_PREFIX } from '../../src/store/leveldb.js';
import { Prng, seedFrom } from '../prng.js';
import { removeDir, startDaemon, tempDir } from '../helpers.js';
import { UdpPool } from '../udp-pool.js';

const SEED = seedFrom('QGREYD_CRASH_SEED');
const ROUNDS = 5;

interface Triplet {
  ip: string;
  sender: string;
  rcpt: string;
}

/** Unique triplets answered 00 01, until `killAt` have been; then SIGKILL, mid-load. */
async function loadAndKill(port: number, kill: () => void, r: Prng, round: number, killAt: number): Promise<{ answered: Triplet[]; sent: number }> {
  const pool = await UdpPool.open(port, 32, { timeoutMs: 5000 });
  const answered: Triplet[] = [];
  let sent = 0;
  let killed = false;
  const worker = async () => {
    while (!killed) {
      const n = sent++;
      const ip = `10.${round}.${(n >> 8) & 255}.${n & 255}`;
      // long senders put enough bytes through LevelDB for memtable flushes and compactions
      const sender = `s${n}-${'x'.repeat(r.int(10, 300))}@crash.example`;
      const rcpts = Array.from({ length: r.int(1, 4) }, (_, i) => `r${i}@crash.example`);
      const reply = await pool.request(encodeRequest(ip, sender, rcpts));
      if (killed) return;
      if (reply === null) throw new Error(`no reply to request ${n} before the kill`);
      assert.equal(reply, '0001', `request ${n} is new`);
      for (const rcpt of rcpts) answered.push({ ip, sender, rcpt });
      if (answered.length >= killAt) {
        killed = true;
        kill();
        pool.close();
      }
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return { answered, sent };
}

/** Retries each triplet alone; returns those not answered 00 02. */
async function forgotten(port: number, triplets: Triplet[]): Promise<Triplet[]> {
  const pool = await UdpPool.open(port, 32, { timeoutMs: 5000 });
  const lost: Triplet[] = [];
  let next = 0;
  const worker = async () => {
    while (next < triplets.length) {
      const t = triplets[next++];
      const reply = await pool.request(encodeRequest(t.ip, t.sender, [t.rcpt]));
      if (reply !== '0002') lost.push(t);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  pool.close();
  return lost;
}

test(`crash safety: ${ROUNDS} SIGKILLs under load lose no answered triplet (seed ${SEED}; replay with QGREYD_CRASH_SEED=${SEED})`, { timeout: 120_000 }, async (t) => {
  t.diagnostic(`seed=${SEED}`);
  const r = new Prng(SEED);
  const dir = tempDir();
  const state = join(dir, 'state');
  const all: Triplet[] = [];
  let previous: Triplet[] = [];
  let kills = 0;
  try {
    for (let round = 1; round <= ROUNDS + 1; round++) {
      // a clean start on the state a SIGKILL left behind is the "opens cleanly" check
      const d = await startDaemon(['-m', '600', '-g', '24', '127.0.0.1:0', state]);
      try {
        const lost = await forgotten(d.port, previous);
        assert.deepEqual(lost.slice(0, 3), [], `round ${round}: ${lost.length} of ${previous.length} triplets answered 00 01 before kill ${kills} are forgotten (seed ${SEED})`);
        if (round > ROUNDS) {
          assert.equal(await d.stop(), 0);
          break;
        }
        const killAt = r.int(1000, 15_000);
        const { answered, sent } = await loadAndKill(d.port, () => d.proc.kill('SIGKILL'), r, round, killAt);
        const exit = await d.exited;
        assert.equal(exit.signal, 'SIGKILL');
        kills++;
        t.diagnostic(`round ${round}: SIGKILL after ${answered.length} triplets answered 00 01, ${sent} requests sent`);
        previous = answered;
        all.push(...answered);
      } finally {
        await d.stop('SIGKILL');
      }
    }
    // every triplet of every round is still in the store, which opens cleanly
    const store = await Store.open(state);
    try {
      const stored = new Set<string>();
      for await (const chunk of store.scan(TRIPLET_PREFIX)) for (const rec of chunk) stored.add(rec.key);
      const missing = all.filter((x) => !stored.has(TRIPLET_PREFIX + tripletKey(x.ip, x.sender, x.rcpt)));
      assert.deepEqual(missing.slice(0, 3), [], `${missing.length} answered triplets missing from the store (seed ${SEED})`);
      assert.ok(stored.size >= all.length);
    } finally {
      await store.close();
    }
    assert.equal(kills, ROUNDS);
    t.diagnostic(`crash seed=${SEED} kills=${kills} answered-triplets=${all.length} all known after restart`);
  } finally {
    removeDir(dir);
  }
});
