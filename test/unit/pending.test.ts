// --max-pending's counts (src/pending.ts): per client key, signed while the start-up scan runs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PendingCounts } from '../../src/pending.js';
import type { StoredRecord } from '../../src/store/leveldb.js';

async function* chunks(...c: StoredRecord[][]): AsyncGenerator<StoredRecord[]> {
  for (const x of c) yield x;
}

describe('pending counts', () => {
  it('counts triplet keys by their client part', () => {
    const p = new PendingCounts();
    p.addKey('192.0.2.0/24 a@x b@y', 1);
    p.addKey('192.0.2.0/24 c@x d@y', 1);
    p.addKey('2001:db8::/64 a@x b@y', 1);
    assert.equal(p.get('192.0.2.0/24'), 2);
    assert.equal(p.get('2001:db8::/64'), 1);
    assert.equal(p.get('198.51.100.0/24'), 0);
    assert.equal(p.networks, 2);
    p.addKey('2001:db8::/64 a@x b@y', -1);
    assert.equal(p.networks, 1, 'a network at 0 takes no memory');
  });

  it('a deletion before the scan reaches its key, and a write after the snapshot, come out right', async () => {
    const p = new PendingCounts();
    // the sweep deleted a record the scan has not reached yet; a request created another
    p.addKey('10.0.0.0/24 old@x r@y', -1);
    p.addKey('10.0.0.0/24 new@x r@y', 1);
    assert.equal(p.get('10.0.0.0/24'), 0);
    const n = await p.count(chunks([{ key: 'G 10.0.0.0/24 old@x r@y', time: 1 }], [{ key: 'G 10.0.0.0/24 other@x r@y', time: 2 }, { key: 'G 10.0.1.7 a@x r@y', time: 3 }]), 'G ');
    assert.equal(n, 3);
    assert.equal(p.complete, true);
    // stored now: new and other (old was deleted)
    assert.equal(p.get('10.0.0.0/24'), 2);
    assert.equal(p.get('10.0.1.7'), 1);
  });
});
