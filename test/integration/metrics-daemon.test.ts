// --metrics in the daemon: qgreyd is spawned, spoken to over UDP (from allowed and refused
// source addresses), scraped over real HTTP, and the exposition parsed; qgreyctl stats reads
// the same counters through the admin socket.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeRequest } from '../../src/protocol.js';
import { ctlInProcess } from '../ctl-helpers.js';
import { query, removeDir, runDaemon, sendRaw, startDaemon, tempDir, type Daemon } from '../helpers.js';
import { parseExposition, sampleValue, type Exposition } from '../prom-text.js';


describe('qgreyd --metrics', () => {
  let dir: string;
  let d: Daemon;
  let url: string;

  const scrape = async (): Promise<Exposition> => {
    const res = await fetch(url);
    assert.equal(res.status, 200);
    return parseExposition(await res.text());
  };

  before(async () => {
    dir = tempDir();
    const wl = join(dir, 'whitelist');
    writeFileSync(wl, '# test\n192.0.2.0/24\n198.51.100.7\n');
    // a sweep every 0.6 s: the test waits for its log line, not for a time
    d = await startDaemon(['--metrics', '127.0.0.1:0', '--allow', '127.0.0.1', '-w', wl, '-s', '0.01', '127.0.0.1:0', join(dir, 'state')]);
    const line = await d.waitForLine(/^metrics listen=/);
    const m = /url=(\S+)/.exec(line);
    assert.ok(m, line);
    url = m[1];
  });
  after(async () => {
    await d?.stop();
    removeDir(dir);
  });

  it('logs where it serves, before the start line, on loopback', () => {
    const i = d.lines.findIndex((l) => l.startsWith('metrics listen='));
    const s = d.lines.findIndex((l) => l.startsWith('start '));
    assert.ok(i >= 0 && i < s, d.lines.join('\n'));
    assert.match(d.lines[i], /^metrics listen=127\.0\.0\.1:\d+ url=http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  });

  it('counts replies by code and reason, latency, malformed, refused and whitelist hits as the requests say', async () => {
    const e0 = await scrape();
    assert.equal(sampleValue(e0, 'qgreyd_request_duration_seconds_count'), 0);
    assert.equal(sampleValue(e0, 'qgreyd_store_healthy'), 1);
    assert.equal(sampleValue(e0, 'qgreyd_whitelist_entries'), 2);

    assert.equal(await query(d.port, '203.0.113.5', 'a@example.org', ['b@example.net']), '0001'); // new
    assert.equal(await query(d.port, '203.0.113.5', 'a@example.org', ['b@example.net']), '0002'); // too soon
    assert.equal(await query(d.port, '192.0.2.9', 'c@example.org', ['b@example.net']), '0101'); // whitelisted, line 2
    assert.equal(await query(d.port, '192.0.2.10', 'c@example.org', ['b@example.net']), '0101');
    assert.equal(await sendRaw(d.port, Buffer.from('not a request'), '127.0.0.1', 300), null); // malformed
    // from an address outside --allow: refused, unanswered
    assert.equal(await sendRaw(d.port, encodeRequest('203.0.113.6', 'x@example.org', ['y@example.net']), '127.0.0.1', 300, '127.0.0.2'), null);

    const e = await scrape();
    assert.equal(e.types.get('qgreyd_replies_total'), 'counter');
    assert.equal(sampleValue(e, 'qgreyd_replies_total', { reply: '00:01', reason: 'new' }), 1);
    assert.equal(sampleValue(e, 'qgreyd_replies_total', { reply: '00:02', reason: 'too-soon' }), 1);
    assert.equal(sampleValue(e, 'qgreyd_replies_total', { reply: '01:01', reason: 'whitelisted' }), 2);
    assert.equal(sampleValue(e, 'qgreyd_request_duration_seconds_count'), 4);
    const sum = sampleValue(e, 'qgreyd_request_duration_seconds_sum') ?? -1;
    assert.ok(sum > 0 && sum < 4 * 3, `latency sum ${sum}`);
    assert.equal(sampleValue(e, 'qgreyd_request_duration_seconds_bucket', { le: '+Inf' }), 4);
    assert.equal(sampleValue(e, 'qgreyd_malformed_total'), 1);
    assert.equal(sampleValue(e, 'qgreyd_refused_total'), 1);
    assert.equal(sampleValue(e, 'qgreyd_overload_total'), 0);
    assert.equal(sampleValue(e, 'qgreyd_in_flight'), 0);
    assert.equal(sampleValue(e, 'qgreyd_whitelist_hits', { line: '2', entry: '192.0.2.0/24' }), 2);
    assert.equal(sampleValue(e, 'qgreyd_whitelist_hits', { line: '3', entry: '198.51.100.7' }), 0);
  });

  it('reports the last sweep and the records it left', async () => {
    // a sweep that scanned a record ran after the requests above stored the triplet; every
    // later one finds the same (nothing is dead for hours)
    await d.waitForLine(/^sweep scanned=[1-9]/, 10_000);
    const e = await scrape();
    // one triplet (whitelisted requests store nothing); nothing is dead yet
    assert.equal(sampleValue(e, 'qgreyd_store_records'), 1);
    assert.equal(sampleValue(e, 'qgreyd_sweep_last', { field: 'scanned' }), 1);
    assert.equal(sampleValue(e, 'qgreyd_sweep_last', { field: 'deleted' }), 0);
    const at = sampleValue(e, 'qgreyd_sweep_last', { field: 'end_time' }) ?? 0;
    assert.ok(Math.abs(at - Date.now() / 1000) < 60, `sweep end_time ${at}`);
  });

  it('qgreyctl stats shows the live counters through the admin socket', async () => {
    const r = await ctlInProcess(['stats', '--state', join(dir, 'state')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^requests +received 5, replied 4, in flight 0, malformed 1, refused \(not in --allow\) 1, overload 0, store errors 0$/m);
    assert.match(r.stdout, /^replies +whitelisted \(01:01\) 2, new \(00:01\) 1, too-soon \(00:02\) 1$/m);
    assert.match(r.stdout, /^whitelist +2 entries, 1 never matched/m);
    assert.match(r.stdout, /^ +2 +\S+whitelist:2 192\.0\.2\.0\/24$/m);
    assert.match(r.stdout, /^last sweep +\d{4}-/m);
    const j = await ctlInProcess(['stats', '--json', '--state', join(dir, 'state')]);
    const live = (JSON.parse(j.stdout) as { live: { received: number; replies: Array<{ reason: string; count: number }> } }).live;
    assert.equal(live.received, 5);
    assert.equal(live.replies.find((x) => x.reason === 'new')?.count, 1);
  });

  it('a reloaded whitelist (SIGHUP) starts its entries at zero hits', async () => {
    d.proc.kill('SIGHUP');
    await d.waitForLine(/^whitelist reloaded/);
    const e = await scrape();
    assert.equal(sampleValue(e, 'qgreyd_whitelist_hits', { line: '2' }), 0);
    assert.equal(sampleValue(e, 'qgreyd_replies_total', { reason: 'whitelisted' }), 2);
  });
});

describe('qgreyd --metrics without it, and bad values', () => {
  it('without --metrics, qgreyctl stats says the per-reason counts need it', async () => {
    const dir = tempDir();
    const d = await startDaemon(['127.0.0.1:0', join(dir, 'state')]);
    try {
      assert.ok(!d.lines.some((l) => l.startsWith('metrics ')));
      assert.equal(await query(d.port, '203.0.113.5', 'a@example.org', ['b@example.net']), '0001');
      const r = await ctlInProcess(['stats', '--state', join(dir, 'state')]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^requests +received 1, replied 1,/m);
      assert.match(r.stdout, /^replies +by reason: counted only with qgreyd --metrics$/m);
    } finally {
      await d.stop();
      removeDir(dir);
    }
  });

  it('counts the recipients each exceptions entry matched, in the scrape and in qgreyctl stats', async () => {
    const dir = tempDir();
    const ex = join(dir, 'exceptions');
    writeFileSync(ex, '# test\npostmaster@\nabuse@example.org\n');
    const d = await startDaemon(['--metrics', '0', '--exceptions', ex, '127.0.0.1:0', join(dir, 'state')]);
    try {
      const url = /url=(\S+)/.exec(await d.waitForLine(/^metrics listen=/))![1];
      assert.equal(await query(d.port, '203.0.113.5', 'a@example.org', ['postmaster@example.net']), '0106');
      assert.equal(await query(d.port, '203.0.113.5', 'a@example.org', ['Postmaster@example.com', 'someone@example.com']), '0001');
      const e = parseExposition(await (await fetch(url)).text());
      assert.equal(sampleValue(e, 'qgreyd_exception_entries'), 2);
      assert.equal(sampleValue(e, 'qgreyd_exception_hits', { line: '2', entry: 'postmaster@' }), 2);
      assert.equal(sampleValue(e, 'qgreyd_exception_hits', { line: '3', entry: 'abuse@example.org' }), 0);
      assert.equal(sampleValue(e, 'qgreyd_replies_total', { reply: '01:06', reason: 'exception' }), 1);
      const r = await ctlInProcess(['stats', '--state', join(dir, 'state')]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^exceptions +2 entries, 1 never matched/m);
      assert.match(r.stdout, /^ +2 +\S+exceptions:2 postmaster@$/m);
    } finally {
      await d.stop();
      removeDir(dir);
    }
  });

  it('a bad --metrics value is named, exit 100; a port in use exits 111', async () => {
    const dir = tempDir();
    try {
      for (const v of ['', 'localhost:9', '127.0.0.1', '70000', '-5']) {
        const r = await runDaemon(['--metrics', v, '127.0.0.1:0', join(dir, 'state')]);
        assert.equal(r.code, 100, `${v}: ${r.stderr}`);
        assert.match(r.stderr, /^qgreyd: --metrics: /, v);
      }
      const d = await startDaemon(['--metrics', '0', '127.0.0.1:0', join(dir, 'state')]);
      try {
        const port = /metrics listen=127\.0\.0\.1:(\d+)/.exec(await d.waitForLine(/^metrics /))![1];
        const r = await runDaemon(['--metrics', port, '127.0.0.1:0', join(dir, 'other')]);
        assert.equal(r.code, 111, r.stderr);
        assert.match(r.stderr, new RegExp(`--metrics 127\\.0\\.0\\.1:${port}: address in use`));
      } finally {
        await d.stop();
      }
    } finally {
      removeDir(dir);
    }
  });
});
