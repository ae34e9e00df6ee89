// The decision log cannot stall or bloat the daemon: a reader that stops reading costs a
// bounded buffer and counted drops, a reader that goes away costs the log, never the replies;
// malformed datagrams are logged at a rate limit with nothing left uncounted.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mock, test } from 'node:test';
import { RateLimitedLines } from '../../src/log/log.js';
import { encodeRequest } from '../../src/protocol.js';
import { removeDir, sendRaw, startDaemon, tempDir } from '../helpers.js';
import { UdpPool } from '../udp-pool.js';
import { kb, procStatus } from '../proc.js';

function rssMb(pid: number): number {
  return kb(procStatus(pid), 'VmRSS') / 1024;
}

/** Requests from the whitelisted 192.0.2.0/24 with 60 long recipients: each is answered
 *  without the store and logs a line of about 5 kB (50 recipients shown). */
function bigRequest(i: number): Buffer {
  const rcpts = Array.from({ length: 60 }, (_, j) => `recipient-${j}-${'x'.repeat(80)}@example.org`);
  return encodeRequest(`192.0.2.${i % 250}`, `sender${i}@example.com`, rcpts);
}

const FLOOD = 30_000;
/** V8 heap cap for the daemon: the flood's log lines (about 150 MB if held) could not fit */
const HEAP_MB = 64;
/** allowed RSS growth while the reader is stopped; the bounded buffer is 1 MiB */
const GROWTH_MB = 60;

test('a stalled log reader: replies keep coming, memory stays bounded, the drops are counted and reported', { timeout: 180_000 }, async (t) => {
  const dir = tempDir();
  const wl = join(dir, 'wl');
  writeFileSync(wl, '192.0.2.0/24\n');
  const d = await startDaemon(['-w', wl, '127.0.0.1:0', join(dir, 's')], {
    env: { ...process.env, NODE_OPTIONS: `--max-old-space-size=${HEAP_MB}` },
  });
  const pool = await UdpPool.open(d.port, 8, { timeoutMs: 3000 });
  // a daemon that dies (out of heap) ends the flood at once instead of by timeouts
  void d.exited.then(() => pool.close());
  try {
    // warm up with the reader running, so that the baseline includes what steady work costs
    const warm = await Promise.all(Array.from({ length: 2000 }, (_, i) => pool.request(bigRequest(i))));
    assert.deepEqual([...new Set(warm)], ['0101'], `${warm.filter((r) => r === null).length} unanswered; ${d.lines.filter((l) => !l.startsWith('client=')).join('\n')}`);
    await d.waitForLine(/ from=<sender1999@example\.com> /);
    const before = rssMb(d.proc.pid!);
    const seen = d.lines.length;

    // the reader stops: the parent stops reading the pipe, which fills, and writes would block
    d.proc.stdout!.pause();
    let answered = 0;
    let peak = before;
    for (let done = 0; done < FLOOD; done += 1000) {
      const replies = await Promise.all(Array.from({ length: 1000 }, (_, i) => pool.request(bigRequest(done + i))));
      answered += replies.filter((r) => r === '0101').length;
      assert.equal(d.proc.exitCode, null, `the daemon died after ${done} requests with the reader stopped: ${d.stderr().slice(-500)}`);
      peak = Math.max(peak, rssMb(d.proc.pid!));
    }
    t.diagnostic(`rss before=${before.toFixed(0)} MB peak=${peak.toFixed(0)} MB while the reader was stopped`);
    assert.equal(answered, FLOOD, 'every request is answered while the log reader is stopped');
    assert.equal(d.proc.exitCode, null, `the daemon is alive: ${d.stderr()}`);
    assert.ok(peak - before < GROWTH_MB, `RSS grew from ${before.toFixed(0)} to ${peak.toFixed(0)} MB with the reader stopped`);

    // the reader resumes: what was kept comes out, then one line says how many were dropped
    d.proc.stdout!.resume();
    const droppedLine = await d.waitForLine(/^log dropped=\d+ /, 20_000);
    const dropped = Number(/dropped=(\d+)/.exec(droppedLine)![1]);
    assert.ok(dropped > 0, droppedLine);
    // a last request: its line comes after everything from the flood
    assert.equal(await sendRaw(d.port, encodeRequest('192.0.2.1', 'last@example.com', ['r@example.org'])), '0101');
    await d.waitForLine(/ from=<last@example\.com> /);
    const flood = d.lines.slice(seen).filter((l) => l.startsWith('client=') && !l.includes('from=<last@'));
    assert.equal(flood.length + dropped, FLOOD, `lines written ${flood.length} + dropped ${dropped} = requests`);
    assert.equal(d.lines.slice(seen).filter((l) => l.startsWith('log dropped=')).length, 1, 'one report for the one stall');
  } finally {
    pool.close();
    d.proc.stdout!.resume();
    await d.stop();
    removeDir(dir);
  }
});

test('the log reader goes away: a message on stderr, and the daemon keeps answering', async () => {
  const dir = tempDir();
  const d = await startDaemon(['127.0.0.1:0', join(dir, 's')]);
  try {
    d.proc.stdout!.destroy();
    for (let i = 0; i < 20; i++) {
      assert.equal(await sendRaw(d.port, encodeRequest('192.0.2.9', `s${i}@example.com`, ['r@example.org'])), '0001');
    }
    assert.match(d.stderr(), /^qgreyd: the log reader went away \(standard output: EPIPE\); qgreyd keeps answering requests/m);
    assert.equal(d.stderr().match(/log reader went away/g)!.length, 1, 'said once');
    assert.equal(d.proc.exitCode, null);
    assert.equal(await d.stop(), 0, `clean stop: ${d.stderr()}`);
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('malformed datagrams from an allowed client are logged at a rate limit, every one counted', async () => {
  const dir = tempDir();
  const d = await startDaemon(['-d', '127.0.0.1:0', join(dir, 's')]);
  try {
    const start = d.lines.length;
    const bad = Buffer.from('X\nforged line\0Fa\0\0', 'latin1');
    const sock = dgram.createSocket('udp4');
    let replies = 0;
    sock.on('message', () => replies++);
    let sent = 0;
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 100; i++, sent++) await new Promise<void>((r, j) => sock.send(bad, d.port, '127.0.0.1', (e) => (e ? j(e) : r())));
      // a well-formed probe: once it is answered, the junk before it has been read
      assert.equal(await sendRaw(d.port, encodeRequest('192.0.2.1', `p${round}@x.example`, ['r@y.example'])), '0001');
    }
    assert.equal(await d.stop(), 0);
    sock.close();
    assert.equal(replies, 0, 'no malformed datagram is answered');
    const lines = d.lines.slice(start);
    const detailed = lines.filter((l) => l.includes(' reason=malformed '));
    const summaries = lines.filter((l) => l.startsWith('malformed suppressed='));
    assert.equal(detailed.length, 10, 'the first 10 of a period in full');
    assert.equal(lines.filter((l) => l.startsWith('debug ') && l.includes(' datagram=')).length, 10, 'debug lines under the same budget');
    for (const l of summaries) assert.match(l, /^malformed suppressed=\d+ total=\d+ period=10s client=127\.0\.0\.1:\d+$/);
    const suppressed = summaries.reduce((n, l) => n + Number(/suppressed=(\d+)/.exec(l)![1]), 0);
    assert.equal(detailed.length + suppressed, sent, 'logged + suppressed = sent');
    assert.match(summaries[summaries.length - 1], new RegExp(` total=${sent} `));
    assert.match(lines.find((l) => l.startsWith('stopped '))!, new RegExp(` malformed=${sent} `));
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('the malformed rate limit: a full budget after quiet, one summary per busy period, nothing uncounted', () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const out: string[] = [];
    const rl = new RateLimitedLines((l) => out.push(l), 'malformed', 3, 10_000);
    const logged = Array.from({ length: 5 }, (_, i) => rl.admit(`c:${i}`));
    assert.deepEqual(logged, [true, true, true, false, false]);
    assert.deepEqual(out, []);
    mock.timers.tick(10_000);
    assert.deepEqual(out, ['malformed suppressed=2 total=5 period=10s client=c:4']);
    // the next period starts with a full budget
    assert.deepEqual([rl.admit('d:1'), rl.admit('d:2'), rl.admit('d:3'), rl.admit('d:4')], [true, true, true, false]);
    mock.timers.tick(10_000);
    assert.equal(out[1], 'malformed suppressed=1 total=9 period=10s client=d:4');
    // a quiet period: no line, and the limiter goes idle
    mock.timers.tick(10_000);
    assert.equal(out.length, 2);
    assert.equal(rl.admit('e:1'), true);
    for (let i = 0; i < 4; i++) rl.admit('e:2');
    rl.flush();
    assert.equal(out[2], 'malformed suppressed=2 total=14 period=10s client=e:2');
    assert.equal(rl.total, 14);
  } finally {
    mock.timers.reset();
  }
});
