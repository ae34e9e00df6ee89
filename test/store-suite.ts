// The one suite every store backend runs (memory, LevelDB, Redis): a backend's test file calls
// runStoreSuite with a factory. Each test asks for a new, empty store; `reopen` opens the same
// data again after close(), which is what a restart of the daemon does.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StoreError } from '../src/store/errors.js';
import { ipKey, IP_PREFIX, TRIPLET_PREFIX, tripletDbKey } from '../src/store/keys.js';
import type { CommitGroup, CommitResult, GreylistStore, StoredRecord, Value } from '../src/store/types.js';

export interface SuiteStore {
  store: GreylistStore;
  /** opens the same data again; the previous store is closed first by the suite */
  reopen: () => Promise<GreylistStore>;
  /** removes whatever the store left (directories, keys); the store is closed by then */
  cleanup: () => Promise<void>;
}

export type SuiteFactory = () => Promise<SuiteStore>;

/** An unconditional group. */
function put(...changes: Array<readonly [string, number | null]>): CommitGroup {
  return { expect: [], changes };
}

function commit(s: GreylistStore, groups: CommitGroup[]): Promise<CommitResult> {
  return s.commit(groups);
}

async function all(s: GreylistStore, prefix: string, opts: { after?: string; chunk?: number } = {}): Promise<StoredRecord[]> {
  const out: StoredRecord[] = [];
  for await (const chunk of s.scan(prefix, opts)) {
    assert.ok(chunk.length > 0, 'a scan yields no empty chunk');
    if (opts.chunk !== undefined) assert.ok(chunk.length <= opts.chunk, 'a chunk holds at most the asked size');
    out.push(...chunk);
  }
  return out;
}

export function runStoreSuite(name: string, open: SuiteFactory): void {
  /** runs fn on a new store and always cleans up, whichever store is open at the end */
  async function withStore(fn: (s: SuiteStore, current: { store: GreylistStore }) => Promise<void>): Promise<void> {
    const s = await open();
    const current = { store: s.store };
    try {
      await fn(s, current);
    } finally {
      await current.store.close().catch(() => undefined);
      await s.cleanup();
    }
  }

  describe(`store backend: ${name}`, () => {
    it('declares its capabilities consistently with its methods', () =>
      withStore(async ({ store }) => {
        const c = store.capabilities;
        for (const k of ['syncLookup', 'syncCommit', 'ttlExpiry', 'shared', 'compact', 'indexExpiry'] as const) assert.equal(typeof c[k], 'boolean', k);
        assert.equal(typeof store.lookupSync === 'function', c.syncLookup, 'lookupSync exactly when syncLookup');
        assert.equal(typeof store.commitSync === 'function', c.syncCommit, 'commitSync exactly when syncCommit');
        assert.equal(typeof store.compact === 'function', c.compact, 'compact exactly when compact');
        assert.equal(typeof store.expireIndex === 'function', c.indexExpiry, 'expireIndex exactly when indexExpiry');
        // an authoritative in-memory index cannot see another daemon's writes
        assert.ok(!(c.shared && c.syncLookup), 'a shared store has no authoritative index');
        assert.equal(typeof store.location, 'string');
        assert.equal(store.healthy, true);
      }));

    it('expires from its index when it has one: every record judged with its kind, deleted or re-dated as told, in slices', () =>
      withStore(async (s, current) => {
        const store = s.store;
        if (!store.capabilities.indexExpiry) return;
        const records: Array<[string, number]> = [];
        for (let i = 0; i < 1500; i++) records.push([tripletDbKey(`192.0.2.${i % 200} s${i}@x r@y`), 1_700_000_000 + i]);
        for (let i = 0; i < 100; i++) records.push([ipKey(`198.51.100.${i}`), 1_700_000_000 + 10 * i]);
        records.push([ipKey('203.0.113.1'), 1_700_000_000.5]);
        assert.equal(await commit(store, [put(...records)]), null);
        const seen = { ip: 0, triplet: 0 };
        let slices = 0;
        const report = await store.expireIndex!(
          (kind, t) => {
            seen[kind]++;
            return t < 1_700_000_500 ? null : t === 1_700_000_990 ? 1_800_000_000 : undefined;
          },
          { sliceSlots: 256, runSlice: async (slice) => (slices++, slice()) },
        );
        assert.ok(slices > 2, `in slices: ${slices}`);
        assert.ok(seen.ip >= 101 && seen.triplet >= 1500, JSON.stringify(seen));
        const want = new Map<string, number>();
        for (const [k, t] of records) if (!(t < 1_700_000_500)) want.set(k, t === 1_700_000_990 ? 1_800_000_000 : t);
        assert.equal(report.deleted, records.length - want.size);
        assert.equal(report.normalised, 2, 'one triplet and one IP carried 1_700_000_990');
        const keys = records.map(([k]) => k);
        assert.deepEqual(await store.lookup(keys), keys.map((k) => want.get(k)));
        // what a scan (dump, export) reads agrees, and so does the store reopened
        const scanned = new Map<string, number>();
        for (const p of [IP_PREFIX, TRIPLET_PREFIX]) for (const r of await all(store, p)) scanned.set(r.key, r.time);
        assert.deepEqual([...scanned].sort(), [...want].sort());
        await store.close();
        current.store = await s.reopen();
        assert.deepEqual(await current.store.lookup(keys), keys.map((k) => want.get(k)));
      }));

    it('looks up absent keys as undefined, and commits, overwrites and deletes', () =>
      withStore(async ({ store }) => {
        const ip = ipKey('192.0.2.1');
        const g = tripletDbKey('192.0.2.1 a@b c@d');
        assert.deepEqual(await store.lookup([ip, g]), [undefined, undefined]);
        assert.equal(await commit(store, [put([ip, 1_700_000_000], [g, 1_700_000_001])]), null);
        assert.deepEqual(await store.lookup([g, ip, ipKey('192.0.2.9')]), [1_700_000_001, 1_700_000_000, undefined]);
        assert.equal(await commit(store, [put([ip, 1_700_000_100], [g, null])]), null);
        assert.deepEqual(await store.lookup([ip, g]), [1_700_000_100, undefined]);
        if (store.capabilities.syncLookup) {
          assert.equal(store.lookupSync!(ip), 1_700_000_100);
          assert.equal(store.lookupSync!(g), undefined);
        }
        // an empty commit is allowed and changes nothing
        assert.equal(await commit(store, []), null);
        assert.deepEqual(await store.lookup([ip]), [1_700_000_100]);
      }));

    it('looks up the same key twice in one call', () =>
      withStore(async ({ store }) => {
        await commit(store, [put([ipKey('192.0.2.1'), 5])]);
        assert.deepEqual(await store.lookup([ipKey('192.0.2.1'), ipKey('192.0.2.1')]), [5, 5]);
      }));

    it('keeps keys byte for byte (non-ASCII, spaces, IPv6, text client IPs)', () =>
      withStore(async (s, current) => {
        const keys = [tripletDbKey('192.0.2.1 é@b c@d'), tripletDbKey('2001:db8::1 . x-y=z@q'), ipKey('unknown'), tripletDbKey('192.0.2.1 \u00ff\u0001@b c@d')];
        await commit(s.store, [put(...keys.map((k, i) => [k, 1000 + i] as const))]);
        await s.store.close();
        current.store = await s.reopen();
        assert.deepEqual(await current.store.lookup(keys), [1000, 1001, 1002, 1003]);
        // the neighbour of an existing key is not it
        assert.deepEqual(await current.store.lookup([tripletDbKey('192.0.2.1 e@b c@d')]), [undefined]);
      }));

    it('keeps every committed record across close and reopen, and forgets deleted ones', () =>
      withStore(async (s, current) => {
        const n = 2000;
        const changes = Array.from({ length: n }, (_, i) => [tripletDbKey(`198.51.100.${i % 250} s${i}@x r@y`), 1_600_000_000 + i] as const);
        await commit(s.store, [put(...changes), put([ipKey('198.51.100.7'), 42])]);
        await commit(s.store, [put([changes[5][0], null])]);
        await s.store.close();
        current.store = await s.reopen();
        const got = await current.store.lookup(changes.map((c) => c[0]));
        for (let i = 0; i < n; i++) assert.equal(got[i], i === 5 ? undefined : changes[i][1], `record ${i}`);
        assert.deepEqual(await current.store.lookup([ipKey('198.51.100.7')]), [42]);
        if (current.store.capabilities.syncLookup) assert.equal(current.store.lookupSync!(changes[9][0]), changes[9][1]);
      }));

    it('applies a group only when the values its decision read still hold', () =>
      withStore(async ({ store }) => {
        const ip = ipKey('192.0.2.1');
        const g = tripletDbKey('192.0.2.1 a@b c@d');
        const other = ipKey('192.0.2.2');
        await commit(store, [put([ip, 100])]);
        // expected values hold (including "still absent"): applied
        assert.equal(await commit(store, [{ expect: [[ip, 100], [g, undefined]], changes: [[g, 200]] }]), null);
        // one stale expectation: nothing of that group applies, the other group does
        const r = await commit(store, [
          { expect: [[ip, 100], [g, undefined]], changes: [[g, 300], [ip, 300]] },
          { expect: [[other, undefined]], changes: [[other, 400]] },
        ]);
        assert.ok(r !== null);
        assert.deepEqual([...r.keys()], [0]);
        assert.deepEqual(r.get(0), [100, 200], 'the conflict reports the current values of the expected keys, in order');
        assert.deepEqual(await store.lookup([ip, g, other]), [100, 200, 400]);
        // a delete can be conditional too (what the sweep does on a shared store)
        const r2 = await commit(store, [{ expect: [[g, 199]], changes: [[g, null]] }]);
        assert.deepEqual(r2?.get(0), [200]);
        assert.equal(await commit(store, [{ expect: [[g, 200]], changes: [[g, null]] }]), null);
        assert.deepEqual(await store.lookup([g]), [undefined]);
      }));

    it('checks a later group of a commit against the earlier groups of the same commit', () =>
      withStore(async ({ store }) => {
        const ip = ipKey('192.0.2.1');
        const r = await commit(store, [
          { expect: [[ip, undefined]], changes: [[ip, 10]] },
          { expect: [[ip, undefined]], changes: [[ip, 20]] },
          { expect: [[ip, 10]], changes: [[ip, 30]] },
        ]);
        assert.ok(r !== null);
        assert.deepEqual([...r.entries()], [[1, [10]]]);
        assert.deepEqual(await store.lookup([ip]), [30]);
      }));

    it('makes commitSync durable when it returns', () =>
      withStore(async (s, current) => {
        if (!s.store.capabilities.syncCommit) return;
        const ip = ipKey('203.0.113.5');
        assert.equal(s.store.commitSync!([put([ip, 77])]), null);
        if (s.store.capabilities.syncLookup) assert.equal(s.store.lookupSync!(ip), 77);
        await s.store.close();
        current.store = await s.reopen();
        assert.deepEqual(await current.store.lookup([ip]), [77]);
      }));

    it('scans one kind of record in key order, in chunks, from after a key', () =>
      withStore(async ({ store }) => {
        const ips = ['192.0.2.10', '192.0.2.2', '2001:db8::1', '10.0.0.1'];
        const triplets = ['192.0.2.1 b@x c@y', '192.0.2.1 a@x c@y', '10.1.1.1 . r@z'];
        await commit(store, [put(...ips.map((ip, i) => [ipKey(ip), 100 + i] as const), ...triplets.map((t, i) => [tripletDbKey(t), 200 + i] as const))]);
        const ipRecords = await all(store, IP_PREFIX, { chunk: 3 });
        assert.deepEqual(
          ipRecords.map((r) => r.key),
          ips.map(ipKey).sort(),
        );
        assert.equal(ipRecords.find((r) => r.key === ipKey('2001:db8::1'))?.time, 102);
        const tRecords = await all(store, TRIPLET_PREFIX);
        assert.deepEqual(
          tRecords.map((r) => r.key),
          triplets.map(tripletDbKey).sort(),
        );
        const after = await all(store, IP_PREFIX, { after: ipKey('192.0.2.10') });
        assert.deepEqual(
          after.map((r) => r.key),
          [ipKey('192.0.2.2'), ipKey('2001:db8::1')],
        );
        // a scan of one IP's triplets (what qgreyctl's delete does)
        const one = await all(store, `${TRIPLET_PREFIX}192.0.2.1 `);
        assert.deepEqual(
          one.map((r) => r.time).sort(),
          [200, 201],
        );
        assert.deepEqual(await all(store, 'X '), []);
      }));

    it('scans a large store completely and sees deletes', () =>
      withStore(async ({ store }) => {
        const n = 5000;
        await commit(store, [put(...Array.from({ length: n }, (_, i) => [ipKey(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`), i] as const))]);
        await commit(store, [put([ipKey('10.0.0.0'), null], [ipKey('10.0.0.1'), null])]);
        const recs = await all(store, IP_PREFIX, { chunk: 700 });
        assert.equal(recs.length, n - 2);
        const times = new Set(recs.map((r) => r.time));
        assert.ok(!times.has(0) && !times.has(1) && times.has(2) && times.has(n - 1));
      }));

    it('refuses to work once closed', () =>
      withStore(async ({ store }) => {
        await store.close();
        await assert.rejects(store.lookup([ipKey('192.0.2.1')]), (e: unknown) => e instanceof StoreError);
        await assert.rejects(store.commit([put([ipKey('192.0.2.1'), 1])]), (e: unknown) => e instanceof StoreError);
        // a second close is harmless
        await store.close();
      }));

    it('leaves no record of a commit whose group conflicted, across reopen', () =>
      withStore(async (s, current) => {
        const ip = ipKey('192.0.2.1');
        const g = tripletDbKey('192.0.2.1 a@b c@d');
        await commit(s.store, [put([ip, 1])]);
        const r = await commit(s.store, [{ expect: [[ip, 2]], changes: [[g, 5]] }]);
        assert.ok(r !== null);
        await s.store.close();
        current.store = await s.reopen();
        const v: Value[] = await current.store.lookup([ip, g]);
        assert.deepEqual(v, [1, undefined]);
      }));
  });
}
