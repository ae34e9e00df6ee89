// Bounded resources: a flood of unique triplets (spam from random IPs) grows the store, not
// the daemon's memory; expiry reclaims the store; a stalled store cannot make the daemon hold
// an unbounded number of requests.
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Level } from 'level';
import { encodeRequest } from '../../src/protocol.js';
import { MAX_IN_FLIGHT, MAX_IN_FLIGHT_BYTES } from '../../src/daemon/server.js';
import { Store, TRIPLET_PREFIX } from '../../src/store/leveldb.js';
import { Prng, seedFrom } from '../prng.js';
import { boundSocket, removeDir, startDaemon, tempDir } from '../helpers.js';
import { stalledServer } from '../stalled-server.js';
import { UdpPool } from '../udp-pool.js';
import { kb, procStatus } from '../proc.js';

const TRIPLETS = 500_000;
const PER_REQUEST = 10;
const CACHE_SIZE = 50_000;
/** V8 heap cap for the flooded daemon: the cache and queues fit in it many times over, while
 *  keeping every triplet in memory would need far more and end the process */
const HEAP_MB = 64;
/** documented bound on the daemon's peak resident memory in this test */
const RSS_BOUND_MB = 200;

function status(pid: number): { rssKb: number; hwmKb: number } {
  const s = procStatus(pid);
  return { rssKb: kb(s, 'VmRSS'), hwmKb: kb(s, 'VmHWM') };
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir)) n += statSync(join(dir, f)).size;
  return n;
}

/** Compacts the store directory fully (no iterator open, so no file is kept alive), then
 *  returns [triplet records, bytes on disk]. */
async function compactedSize(dir: string): Promise<[number, number]> {
  const db = new Level<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  await db.open();
  try {
    // classic-level has compactRange; the level package's types do not show it
    await (db as unknown as { compactRange(start: string, end: string): Promise<void> }).compactRange('\x00', '\uffff');
  } finally {
    await db.close();
  }
  const bytes = dirBytes(dir);
  const store = await Store.open(dir);
  try {
    let n = 0;
    for await (const chunk of store.scan(TRIPLET_PREFIX)) n += chunk.length;
    return [n, bytes];
  } finally {
    await store.close();
  }
}

function word(r: Prng, min: number, max: number): string {
  const a = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let s = '';
  for (let i = r.int(min, max); i > 0; i--) s += a[r.int(0, a.length - 1)];
  return s;
}

test(`a flood of ${TRIPLETS} unique triplets: memory stays bounded, the store grows, expiry reclaims it`, { timeout: 150_000 }, async (t) => {
  const seed = seedFrom('QGREYD_FLOOD_SEED');
  const r = new Prng(seed);
  const dir = tempDir();
  const state = join(dir, 'state');
  const domains = Array.from({ length: 500 }, () => `${word(r, 4, 12)}.${r.pick(['example', 'test', 'invalid'])}`);
  const addr = () => `${word(r, 3, 14)}@${r.pick(domains)}`;
  const d = await startDaemon(['-m', '600', '-g', '24', '--cache-size', String(CACHE_SIZE), '127.0.0.1:0', state], {
    env: { ...process.env, NODE_OPTIONS: `--max-old-space-size=${HEAP_MB}` },
  });
  const before = status(d.proc.pid!);
  let peakSampleKb = 0;
  try {
    const pool = await UdpPool.open(d.port, 64, { timeoutMs: 10_000 });
    const requests = TRIPLETS / PER_REQUEST;
    let next = 0;
    let wrong = 0;
    let died = false;
    void d.exited.then(() => {
      died = true;
      pool.close();
    });
    const worker = async () => {
      while (next < requests && !died) {
        const i = next++;
        const ip = `${r.int(1, 223)}.${r.int(0, 255)}.${r.int(0, 255)}.${r.int(1, 254)}`;
        const rcpts = Array.from({ length: PER_REQUEST }, addr);
        const reply = await pool.request(encodeRequest(ip, `${i}.${addr()}`, rcpts));
        if (reply !== '0001') wrong++;
        if (i % 5000 === 0) peakSampleKb = Math.max(peakSampleKb, status(d.proc.pid!).rssKb);
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    pool.close();
    assert.ok(!died, `the daemon died under the flood (${d.proc.exitCode ?? d.proc.signalCode}): ${d.stderr().slice(-300)}`);
    assert.equal(wrong, 0, 'every unique triplet is answered 00 01');
    const after = status(d.proc.pid!);
    const peakMb = after.hwmKb / 1024;
    t.diagnostic(`flood: ${TRIPLETS} triplets in ${requests} requests, cache-size ${CACHE_SIZE}, heap cap ${HEAP_MB} MB; RSS ${(before.rssKb / 1024).toFixed(0)} MB at start, ${(after.rssKb / 1024).toFixed(0)} MB at end, peak ${peakMb.toFixed(0)} MB (bound ${RSS_BOUND_MB} MB)`);
    assert.ok(peakMb < RSS_BOUND_MB, `peak RSS ${peakMb.toFixed(0)} MB exceeds the documented bound of ${RSS_BOUND_MB} MB`);
    assert.equal(await d.stop(), 0);
  } finally {
    await d.stop('SIGKILL');
  }

  try {
    const [records, bytes] = await compactedSize(state);
    assert.equal(records, TRIPLETS, 'the store grew by one record per triplet');
    t.diagnostic(`disk: ${records} triplet records take ${bytes} bytes after compaction = ${(bytes / records).toFixed(1)} bytes per record`);
    assert.ok(bytes / records < 100, `${(bytes / records).toFixed(1)} bytes per record`);

    // expiry: the same store under a 0.36 s grey window and a sweep every 0.6 s
    const d2 = await startDaemon(['-m', '0', '-g', '0.0001', '-s', '0.01', '127.0.0.1:0', state]);
    try {
      let deleted = 0;
      for (let i = 0; i < 120 && deleted < TRIPLETS; i++) {
        const line = await d2.waitForLine(/^sweep /, 30_000);
        d2.lines.splice(d2.lines.indexOf(line), 1);
        deleted += Number(/ deleted=(\d+)/.exec(line)![1]);
      }
      assert.equal(deleted, TRIPLETS, 'the sweep deleted every dead triplet');
      assert.equal(await d2.stop(), 0);
    } finally {
      await d2.stop('SIGKILL');
    }
    const [left, bytesAfter] = await compactedSize(state);
    assert.equal(left, 0, 'no triplet left');
    // LevelDB drops a deletion marker only when a compaction reaches the bottom level holding
    // that range, so some space comes back later, as further writes cause compactions
    t.diagnostic(`expiry: ${TRIPLETS} records swept; store ${bytes} bytes -> ${bytesAfter} bytes after compaction`);
    assert.ok(bytesAfter < bytes, 'compaction gave space back');
  } finally {
    removeDir(dir);
  }
});

test('a stalled store cannot make the daemon hold unbounded requests: past the in-flight bound requests are answered 01 05 at once and counted', { timeout: 60_000 }, async () => {
  // the store stalled the way a long exclusive job would: no batch runs until it ends
  const { server, gl, port, log, lines, release, stalled, close } = await stalledServer();
  const sock = await boundSocket('127.0.0.1');
  let replies = 0;
  let notDecided = 0;
  sock.on('message', (m) => (m.toString('hex') === '0105' ? notDecided++ : replies++));
  const send = (b: Buffer) => new Promise<void>((res) => sock.send(b, port, '127.0.0.1', () => res()));
  try {
    const N = MAX_IN_FLIGHT + 2000;
    for (let i = 0; i < N; i++) {
      await send(encodeRequest(`10.0.${(i >> 8) & 255}.${i & 255}`, 'a@x.example', ['b@y.example']));
      // let the server read: the kernel must not be what drops them
      while (i + 1 - (server.counters.received + server.overload.total) > 64) await new Promise((res) => setImmediate(res));
    }
    for (let i = 0; i < 100 && server.counters.received + server.overload.total < N; i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(server.counters.received, MAX_IN_FLIGHT, 'requests held while the store is stalled');
    assert.equal(server.overload.total, N - MAX_IN_FLIGHT, 'the rest counted');
    for (let i = 0; i < 100 && notDecided < N - MAX_IN_FLIGHT; i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(notDecided, N - MAX_IN_FLIGHT, 'and answered 01 05 at once, while the store is still stalled');
    log.flush();
    assert.equal(lines.filter((l) => l.startsWith('overload ')).length, 1, 'one overload line, not one per datagram');
    release();
    await stalled;
    await gl.idle();
    // (counted at the server: the client's socket buffer cannot hold 20000 replies at once)
    assert.equal(server.counters.replied, MAX_IN_FLIGHT, 'what was held is answered once the store moves');
    for (let i = 0; i < 100 && replies === 0; i++) await new Promise((res) => setTimeout(res, 10));
    assert.ok(replies > 0, 'replies reach the client');
  } finally {
    sock.close();
    await close();
  }
});

test('the in-flight bound also counts bytes: 64 KB datagrams stop at the byte bound', { timeout: 60_000 }, async () => {
  const { server, port, close } = await stalledServer();
  const sock = await boundSocket('127.0.0.1');
  try {
    // a well-formed request padded with NULs to the largest datagram
    const big = Buffer.alloc(65_000);
    encodeRequest('10.1.1.1', 'a@x.example', ['b@y.example']).copy(big);
    const fit = Math.floor(MAX_IN_FLIGHT_BYTES / big.length);
    const N = fit + 40;
    for (let i = 0; i < N; i++) {
      await new Promise<void>((res) => sock.send(big, port, '127.0.0.1', () => res()));
      while (i + 1 - (server.counters.received + server.overload.total) > 1) await new Promise((res) => setImmediate(res));
    }
    for (let i = 0; i < 100 && server.counters.received + server.overload.total < N; i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(server.counters.received, fit);
    assert.equal(server.overload.total, N - fit);
  } finally {
    sock.close();
    await close();
  }
});
