// The in-memory backend: for unit tests and as the reference the shared suite is written
// against. Nothing survives close(); a fresh open starts empty unless given the same
// MemoryData (which the suite uses to check what "reopen" means).
import { checkGroups } from './commit.js';
import { StoreError } from './errors.js';
import { IP_PREFIX } from './keys.js';
import type { Change, CommitGroup, CommitResult, ExpireOptions, ExpireReport, ExpiryJudge, GreylistStore, ScanOptions, StoreCapabilities, StoredRecord, Value } from './types.js';

export type MemoryData = Map<string, number>;

const CAPABILITIES: StoreCapabilities = {
  syncLookup: true,
  syncCommit: true,
  ttlExpiry: false,
  shared: false,
  compact: false,
  indexExpiry: true,
};

export class MemoryStore implements GreylistStore {
  readonly capabilities = CAPABILITIES;
  readonly location = 'memory';
  readonly healthy = true;
  private closed = false;

  constructor(private readonly data: MemoryData = new Map()) {}

  static open(data?: MemoryData): Promise<MemoryStore> {
    return Promise.resolve(new MemoryStore(data));
  }

  get memoryRecords(): number {
    return this.data.size;
  }

  lookupSync(key: string): Value {
    this.check();
    return this.data.get(key);
  }

  lookup(keys: readonly string[]): Promise<Value[]> {
    try {
      return Promise.resolve(keys.map((k) => this.lookupSync(k)));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  commitSync(groups: readonly CommitGroup[]): CommitResult {
    this.check();
    // staged, so a commit is all or nothing however it ends
    const staged = new Map<string, number | null>();
    const read = (k: string): Value => {
      const s = staged.get(k);
      return s === undefined ? this.data.get(k) : s === null ? undefined : s;
    };
    const conflicts = checkGroups(groups, read, ([k, t]: Change) => staged.set(k, t));
    for (const [k, t] of staged) {
      if (t === null) this.data.delete(k);
      else this.data.set(k, t);
    }
    return conflicts;
  }

  commit(groups: readonly CommitGroup[]): Promise<CommitResult> {
    try {
      return Promise.resolve(this.commitSync(groups));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  async *scan(prefix: string, opts: ScanOptions = {}): AsyncGenerator<StoredRecord[]> {
    this.check();
    const keys = [...this.data.keys()].filter((k) => k.startsWith(prefix) && (opts.after === undefined || k > opts.after)).sort(byCodeUnit);
    const chunk = opts.chunk ?? 1000;
    for (let i = 0; i < keys.length; i += chunk) {
      const out: StoredRecord[] = [];
      for (const key of keys.slice(i, i + chunk)) {
        const time = this.data.get(key);
        if (time !== undefined) out.push({ key, time });
      }
      if (out.length > 0) yield out;
    }
  }

  /** The map is both the index and the store of record: nothing to clean behind it. Slices
   *  of EXPIRE_SLICE records, like the local store's. */
  async expireIndex(judge: ExpiryJudge, opts: ExpireOptions = {}): Promise<ExpireReport> {
    this.check();
    const report: ExpireReport = { scanned: 0, deleted: 0, normalised: 0, cleaned: 0 };
    const keys = [...this.data.keys()];
    const runSlice = opts.runSlice ?? ((slice: () => void) => (slice(), Promise.resolve()));
    for (let i = 0; i < keys.length && !(opts.stopping?.() ?? false); ) {
      const end = Math.min(keys.length, i + (opts.sliceSlots ?? EXPIRE_SLICE));
      await runSlice(() => {
        for (; i < end; i++) {
          const time = this.data.get(keys[i]);
          // (deleted by a commit since the pass began)
          if (time === undefined) continue;
          report.scanned++;
          const r = judge(keys[i].startsWith(IP_PREFIX) ? 'ip' : 'triplet', time);
          if (r === null) {
            this.data.delete(keys[i]);
            report.deleted++;
          } else if (r !== undefined) {
            this.data.set(keys[i], r);
            report.normalised++;
          }
        }
      });
    }
    return report;
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private check(): void {
    if (this.closed) throw new StoreError('QGREYD_STORE_IO', 'the memory store is closed');
  }
}

const EXPIRE_SLICE = 4_096;

/** LevelDB's order for utf8 keys is byte order, which for these keys (no surrogates in
 *  practice) is code-unit order. */
function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
