// --max-pending in the decision queue, on a real store with an injected clock: the counts
// follow what the batches store, what the sweep deletes and what admin changes make, and a
// failed write takes its batch's counts back.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { forgetIp, Importer } from '../../src/admin/ops.js';
import { Greylist } from '../../src/daemon/queue.js';
import { PendingCounts } from '../../src/pending.js';
import { GREYDAEMON, settingsFrom } from '../../src/policy.js';
import { replyText } from '../../src/protocol.js';
import { Store, TRIPLET_PREFIX } from '../../src/store/leveldb.js';
import { Whitelist } from '../../src/whitelist.js';
import { removeDir, tempDir } from '../helpers.js';
import { req } from '../requests.js';

const NOW = 1_700_000_000;
const H = 3600;


async function setup(fn: (g: Greylist, store: Store, clock: { now: number }) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = await Store.open(join(dir, 'data'));
  const clock = { now: NOW };
  const g = new Greylist(store, settingsFrom(7, 12, 5), Whitelist.empty(), () => clock.now);
  g.grouping = { ...GREYDAEMON, prefixes: { v4: 24, v6: 64 }, maxPending: 3 };
  g.pending = new PendingCounts();
  try {
    await fn(g, store, clock);
  } finally {
    await g.stop();
    await store.close();
    removeDir(dir);
  }
}

async function ask(g: Greylist, ip: string, sender: string, rcpts: string[]): Promise<string> {
  const r = await g.decideAsync(req(ip, sender, rcpts));
  assert.equal(r.kind, 'decision');
  return r.kind === 'decision' ? replyText(r.decision.verdict) : '';
}

describe('--max-pending in the queue', () => {
  it('requests of one batch see each other\'s new triplets: exactly the cap is stored', () =>
    setup(async (g, store) => {
      const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => g.decideAsync(req(`10.0.0.${i}`, `s${i}@x`, ['r@y']))));
      const codes = replies.map((r) => (r.kind === 'decision' ? replyText(r.decision.verdict) : r.kind));
      assert.deepEqual(codes, ['00:01', '00:01', '00:01', ...Array<string>(7).fill('00:05')]);
      let stored = 0;
      for await (const c of store.scan(TRIPLET_PREFIX)) stored += c.length;
      assert.equal(stored, 3);
      assert.equal(g.pending!.get('10.0.0.0/24'), 3);
    }));

  it('the sweep\'s deletions free the cap', () =>
    setup(async (g, _store, clock) => {
      for (let i = 0; i < 3; i++) assert.equal(await ask(g, '10.0.0.1', `s${i}@x`, ['r@y']), '00:01');
      assert.equal(await ask(g, '10.0.0.1', 'late@x', ['r@y']), '00:05');
      clock.now = NOW + 12 * H;
      const report = await g.sweep();
      assert.equal(report.deleted, 3);
      assert.equal(g.pending!.get('10.0.0.0/24'), 0);
      assert.equal(await ask(g, '10.0.0.1', 'late@x', ['r@y']), '00:01');
    }));

  it('qgreyctl forget and import through the daemon change the counts', () =>
    setup(async (g) => {
      const ctx = g.opsContext();
      for (let i = 0; i < 3; i++) await ask(g, '10.0.0.1', `s${i}@x`, ['r@y']);
      const f = await forgetIp(ctx, '10.0.0.200');
      assert.equal(f.ip, '10.0.0.0/24');
      assert.equal(f.deleted, 3);
      assert.equal(g.pending!.get('10.0.0.0/24'), 0);
      const imp = new Importer(ctx);
      await imp.add([1, 2].map((i) => ({ kind: 'triplet' as const, ip: '10.0.0.0/24', sender: `i${i}@x`, rcpt: 'r@y', time: NOW - 60 })));
      assert.equal(g.pending!.get('10.0.0.0/24'), 2);
      // importing the same records again creates nothing
      await imp.add([1, 2].map((i) => ({ kind: 'triplet' as const, ip: '10.0.0.0/24', sender: `i${i}@x`, rcpt: 'r@y', time: NOW - 60 })));
      assert.equal(g.pending!.get('10.0.0.0/24'), 2);
    }));

  it('a batch whose write fails takes its counts back', () =>
    setup(async (g, store) => {
      // the local store commits synchronously (the write-ahead log): fail that
      const commitSync = store.commitSync.bind(store);
      store.commitSync = () => {
        throw new Error('disk full');
      };
      const r = await g.decideAsync(req('10.0.0.1', 'a@x', ['r@y', 's@y']));
      assert.equal(r.kind, 'undecided');
      assert.equal(g.pending!.get('10.0.0.0/24'), 0);
      store.commitSync = commitSync;
      assert.equal(await ask(g, '10.0.0.1', 'a@x', ['r@y']), '00:01');
      assert.equal(g.pending!.get('10.0.0.0/24'), 1);
    }));
});
