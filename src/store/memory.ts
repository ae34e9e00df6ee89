// The in-memory backend: for unit tests and as the reference the shared suite is written
// against. Nothing survives close(); a fresh open starts empty unless given the same
// MemoryData (which the suite uses to check what "reopen" means).
import { checkGroups } from './commit.js';
import { StoreError } from './errors.js';
import type { Change, CommitGroup, CommitResult, GreylistStore, ScanOptions, StoreCapabilities, StoredRecord, Value } from './types.js';

export type MemoryData = Map<string, number>;

const CAPABILITIES: StoreCapabilities = {
  syncLookup: true,
  syncCommit: true,
  ttlExpiry: false,
  shared: false,
  compact: false,
  indexExpiry: false,
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

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private check(): void {
    if (this.closed) throw new StoreError('QGREYD_STORE_IO', 'the memory store is closed');
  }
}

/** LevelDB's order for utf8 keys is byte order, which for these keys (no surrogates in
 *  practice) is code-unit order. */
function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
