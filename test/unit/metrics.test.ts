// The metrics module on its own: served over real HTTP, parsed as the exposition format.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Metrics } from '../../src/metrics.js';
import { parseExposition, sampleValue } from '../prom-text.js';

function fixture() {
  const state = {
    inFlight: 3,
    refused: 7,
    overload: 2,
    malformed: 5,
    healthy: true,
    records: null as number | null,
    sweep: null as { at: number; scanned: number; deleted: number; ms: number } | null,
    hits: [
      { file: 'wl', line: 3, entry: '192.0.2.0/24', hits: 4 },
      { file: 'wl', line: 5, entry: '2001:db8::/32', hits: 0 },
    ],
  };
  const metrics = new Metrics({
    inFlight: () => state.inFlight,
    refused: () => state.refused,
    overload: () => state.overload,
    malformed: () => state.malformed,
    storeHealthy: () => state.healthy,
    storeRecords: () => state.records,
    lastSweep: () => state.sweep,
    whitelistHits: () => state.hits,
  });
  return { state, metrics };
}

describe('metrics', () => {
  it('serves /metrics over HTTP in the exposition format, with counters read at scrape time', async () => {
    const { state, metrics } = fixture();
    metrics.reply('00:01', 'new', 0.0004);
    metrics.reply('00:01', 'new', 0.003);
    metrics.reply('01:02', 'known-good', 0.2);
    const server = await metrics.listen('127.0.0.1', 0);
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      let e = parseExposition(await res.text());
      assert.equal(e.types.get('qgreyd_replies_total'), 'counter');
      assert.equal(e.types.get('qgreyd_request_duration_seconds'), 'histogram');
      assert.equal(sampleValue(e, 'qgreyd_replies_total', { reply: '00:01', reason: 'new' }), 2);
      assert.equal(sampleValue(e, 'qgreyd_replies_total', { reply: '01:02', reason: 'known-good' }), 1);
      assert.equal(sampleValue(e, 'qgreyd_request_duration_seconds_count'), 3);
      assert.equal(sampleValue(e, 'qgreyd_request_duration_seconds_bucket', { le: '0.0005' }), 1);
      assert.equal(sampleValue(e, 'qgreyd_request_duration_seconds_bucket', { le: '0.005' }), 2);
      assert.equal(sampleValue(e, 'qgreyd_request_duration_seconds_bucket', { le: '+Inf' }), 3);
      assert.equal(sampleValue(e, 'qgreyd_in_flight'), 3);
      assert.equal(sampleValue(e, 'qgreyd_refused_total'), 7);
      assert.equal(sampleValue(e, 'qgreyd_overload_total'), 2);
      assert.equal(sampleValue(e, 'qgreyd_malformed_total'), 5);
      assert.equal(sampleValue(e, 'qgreyd_store_healthy'), 1);
      assert.equal(sampleValue(e, 'qgreyd_store_records'), undefined);
      assert.equal(sampleValue(e, 'qgreyd_whitelist_entries'), 2);
      assert.equal(sampleValue(e, 'qgreyd_whitelist_hits', { file: 'wl', line: '3', entry: '192.0.2.0/24' }), 4);
      assert.equal(sampleValue(e, 'qgreyd_whitelist_hits', { line: '5' }), 0);

      // later scrapes see the daemon's counters as they are then
      state.refused = 9;
      state.healthy = false;
      state.records = 260;
      state.sweep = { at: 1_800_000_000, scanned: 260, deleted: 12, ms: 40 };
      e = parseExposition(await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text());
      assert.equal(sampleValue(e, 'qgreyd_refused_total'), 9);
      assert.equal(sampleValue(e, 'qgreyd_store_healthy'), 0);
      assert.equal(sampleValue(e, 'qgreyd_store_records'), 260);
      assert.equal(sampleValue(e, 'qgreyd_sweep_last', { field: 'deleted' }), 12);

      assert.equal((await fetch(`http://127.0.0.1:${server.port}/other`)).status, 404);
    } finally {
      await server.close();
    }
  });

  it('rejects a text that is not the exposition format (the parser can fail)', () => {
    assert.throws(() => parseExposition('qgreyd_x{a="1" 2\n'), /not a sample|bad labels|no TYPE/);
    assert.throws(() => parseExposition('qgreyd_untyped 2\n'), /no TYPE/);
  });
});
