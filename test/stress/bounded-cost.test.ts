// Bounded cost per request without refusing real mail: fairness between sources (a flood of
// worst-case requests from one source cannot starve another's), the bytes a request may
// store, duplicate recipients, and requests still waiting at shutdown answered, not dropped.
// The assertions are on structure (which batch answered what, what was written), not time.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { BATCH_BUDGET, Greylist, requestCost, type Result } from '../../src/daemon/queue.js';
import { settingsFrom } from '../../src/policy.js';
import { decodeRequest, encodeRequest, MAX_REQUEST_BYTES, type Request } from '../../src/protocol.js';
import { Store } from '../../src/store/leveldb.js';
import { Whitelist } from '../../src/whitelist.js';
import { boundSocket, removeDir, tempDir } from '../helpers.js';
import { stalledServer } from '../stalled-server.js';
import { QmailSmtpd } from '../qmail-client.js';
import { worstCaseRequest } from '../worst-case.js';

function decoded(buf: Buffer): Request {
  const d = decodeRequest(buf);
  assert.ok(d.ok);
  return d.request;
}

/** The store, with every commit's changes noted (the real store underneath). */
async function observedStore(dir: string): Promise<{ store: Store; writes: Array<Array<readonly [string, number | null]>> }> {
  const store = await Store.open(join(dir, 's'));
  const writes: Array<Array<readonly [string, number | null]>> = [];
  const commitSync = store.commitSync.bind(store);
  store.commitSync = (groups) => {
    const ops = groups.flatMap((g) => g.changes);
    if (ops.length > 0) writes.push([...ops]);
    return commitSync(groups);
  };
  return { store, writes };
}

test('a probe from another source is decided in the next batch, not after a queued flood of worst-case requests', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  const { store, writes } = await observedStore(dir);
  const gl = new Greylist(store, settingsFrom(7, 12, 5), Whitelist.empty());
  try {
    const FLOOD = 8;
    const flood = Array.from({ length: FLOOD }, (_, i) => decoded(worstCaseRequest('192.0.2.66', `f${i}`)));
    assert.ok(requestCost(flood[0]) > BATCH_BUDGET, 'one worst-case request is over a batch budget');
    // which write (batch) each request was decided in
    const batchOf = new Map<string, number>();
    const done: Array<Promise<Result>> = [];
    flood.forEach((req, i) => done.push(gl.decideAsync(req, '127.0.0.2').then((r) => (batchOf.set(`f${i}`, writes.length), r))));
    const probe = gl.decideAsync(decoded(encodeRequest('192.0.2.1', 'a@x.example', ['b@y.example'])), '127.0.0.1').then((r) => (batchOf.set('probe', writes.length), r));
    const results = await Promise.all([...done, probe]);
    assert.ok(results.every((r) => r.kind === 'decision' && r.decision.verdict === 'new'));
    const floodBatches = new Set(flood.map((_, i) => batchOf.get(`f${i}`)));
    assert.equal(floodBatches.size, FLOOD, 'each worst-case request fills a batch of its own');
    assert.ok(batchOf.get('probe')! <= 2, `the probe was decided in batch ${batchOf.get('probe')} of ${writes.length}, behind at most one flood batch`);
    assert.ok(!floodBatches.has(batchOf.get('probe')), 'and not in a batch that also decides a worst-case request');
  } finally {
    await gl.stop();
    await store.close();
    removeDir(dir);
  }
});

test('the bytes one request stores are bounded by its cost, and a recipient listed many times is stored once', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const { store, writes } = await observedStore(dir);
  const gl = new Greylist(store, settingsFrom(7, 12, 5), Whitelist.empty());
  try {
    const worst = decoded(worstCaseRequest('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', 'w'));
    assert.equal((await gl.decideAsync(worst)).kind, 'decision');
    const bytes = writes.flat().reduce((n, [k]) => n + Buffer.byteLength(k, 'latin1') + 9, 0);
    const recipients = 'error' in worst.tail ? 0 : worst.tail.recipients.length;
    assert.equal(writes.flat().length, recipients, 'one record per distinct recipient');
    assert.ok(bytes <= requestCost(worst), `${bytes} bytes written, cost ${requestCost(worst)}`);
    // the documented bound (README, Bounded resources)
    assert.ok(requestCost(worst) <= MAX_REQUEST_BYTES + 128, `cost ${requestCost(worst)}`);
    assert.ok(requestCost(worst) > MAX_REQUEST_BYTES - 1000, 'the worst case is the worst case');
    // a datagram filled the same way goes past the bound: malformed, stored nothing
    writes.length = 0;
    const over = decoded(worstCaseRequest('192.0.2.8', 'o', true));
    assert.match('error' in over.tail ? over.tail.error : '', /would store more than 2097152 bytes/);
    const r0 = await gl.decideAsync(over);
    assert.equal(r0.kind, 'malformed');
    assert.equal(writes.length, 0);

    writes.length = 0;
    const dup = decoded(encodeRequest('192.0.2.7', 'a@x.example', Array.from({ length: 4000 }, (_, i) => (i % 2 ? 'B@Y.example' : 'b@y.example'))));
    const r = await gl.decideAsync(dup);
    // as in greydaemon, the second listing sees what the first stored: too soon
    assert.ok(r.kind === 'decision' && r.decision.verdict === 'too-soon', JSON.stringify(r).slice(0, 200));
    assert.deepEqual(writes.flat().map(([k]) => k), ['G 192.0.2.7 a@x.example b@y.example']);
  } finally {
    await gl.stop();
    await store.close();
    removeDir(dir);
  }
});

test('over UDP: a probe from 127.0.0.1 is answered before the flood queued ahead of it from 127.0.0.2', { timeout: 120_000 }, async () => {
  const { server, gl, port, release, stalled, close } = await stalledServer();
  const flooder = await boundSocket('127.0.0.2');
  const order: string[] = [];
  flooder.on('message', (m) => order.push(`flood:${m.toString('hex')}`));
  try {
    const FLOOD = 6;
    for (let i = 0; i < FLOOD; i++) {
      await new Promise<void>((res) => flooder.send(worstCaseRequest('192.0.2.66', `u${i}`), port, '127.0.0.1', () => res()));
      // the server reads it before the next: the kernel's buffer must not be what drops them
      while (server.counters.received < i + 1) await new Promise((res) => setImmediate(res));
    }
    const probe = new QmailSmtpd({ family: 'indimail', greyip: `127.0.0.1@${port}`, localAddress: '127.0.0.1', silenceMs: 60_000 });
    const answered = probe.check({ TCPREMOTEIP: '192.0.2.1' }, 'a@x.example', ['b@y.example']).then((o) => (order.push(`probe:${o.reply}`), o));
    while (server.counters.received < FLOOD + 1) await new Promise((res) => setImmediate(res));
    release();
    const o = await answered;
    assert.equal(o.reply, '0001');
    await stalled;
    await gl.idle();
    for (let i = 0; i < 200 && order.length < FLOOD + 1; i++) await new Promise((res) => setTimeout(res, 10));
    assert.equal(order.length, FLOOD + 1, order.join(' '));
    // nothing was being decided when the store came back: the probe's batch comes first
    assert.equal(order.indexOf('probe:0001'), 0, `probe answered first: ${order.join(' ')}`);
  } finally {
    flooder.close();
    await close();
  }
});

for (const failClosed of [false, true]) {
  test(`at shutdown, requests still waiting for a stalled store are answered ${failClosed ? '00 04' : '01 05'} (reason=shutdown), not dropped`, { timeout: 30_000 }, async () => {
    const { server, port, log, lines, close } = await stalledServer({ failClosed, shutdownGraceMs: 50 });
    try {
      const c = new QmailSmtpd({ family: 'indimail', greyip: `127.0.0.1@${port}`, silenceMs: 10_000 });
      const outcomes = Promise.all([1, 2, 3].map((i) => c.check({ TCPREMOTEIP: `192.0.2.${i}` }, 'a@x.example', ['b@y.example'])));
      while (server.counters.received < 3) await new Promise((res) => setImmediate(res));
      await server.close();
      const out = await outcomes;
      const want = failClosed ? '0004' : '0105';
      assert.deepEqual(out.map((o) => [o.cause, o.reply, o.smtp]), [1, 2, 3].map(() => ['reply', want, failClosed ? 'defer' : 'accept']));
      log.flush();
      const shut = lines.filter((l) => / reason=shutdown$/.test(l));
      assert.equal(shut.length, 3, lines.join('\n'));
      assert.match(shut[0], new RegExp(`reply=${want.slice(0, 2)}:${want.slice(2)} reason=shutdown$`));
      assert.equal(server.counters.shutdown, 3);
    } finally {
      await close();
    }
  });
}
