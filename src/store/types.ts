// What the decision queue, the sweep, qgreyctl and the report need from a store, and nothing
// else. A backend implements GreylistStore and declares what it can do in `capabilities`
// (as abstract-level's `supports` does); callers choose their path from the capabilities,
// never from the backend's class. Every backend runs the one suite in test/store-suite.ts.
//
// Records: a key (see keys.ts: "I <ip>" for last-good, "G <triplet>" for first-seen) and an
// absolute time in Unix seconds. A backend with TTLs derives each record's TTL from its time
// and the expiry rule it is given (policy.expiresAt); no caller ever passes a TTL.
import type { StoreErrorCode } from './errors.js';

/** A record change: a time sets the record, null deletes it. */
export type Change = readonly [key: string, time: number | null];

/** A stored value as read: the time, or undefined where there is no record. */
export type Value = number | undefined;

export interface StoredRecord {
  key: string;
  time: number;
}

export interface StoreCapabilities {
  /** An authoritative in-memory index of every record: lookupSync() answers without I/O, so
   *  the queue decides a request in the turn it arrived. Never true for a shared backend,
   *  since another daemon's writes would not be in this process's index. */
  readonly syncLookup: boolean;
  /** commitSync() makes a batch durable (to the backend's promise: process death, or power
   *  loss with --sync) before it returns, so a turn's replies can follow it synchronously. */
  readonly syncCommit: boolean;
  /** Records expire by themselves (TTLs derived from their times): the daemon runs no sweep. */
  readonly ttlExpiry: boolean;
  /** Several daemons share the store: a commit group may meet a conflict (another daemon
   *  changed a record the decision read), and the queue decides that request again. */
  readonly shared: boolean;
  /** compact() gives the space of deleted records back to the file system. */
  readonly compact: boolean;
  /** expireIndex() judges every record without reading the store of record. */
  readonly indexExpiry: boolean;
}

/** One unit of a commit: the changes one request (or one sweep chunk) makes, and the values
 *  its decision was based on. The backend applies the changes only if every expected key still
 *  holds its expected value (undefined: still absent); otherwise nothing of the group is
 *  applied and the group is reported as a conflict with the current values.
 *  A shared backend makes each group atomic across daemons (all of a request's keys carry its
 *  client IP, so they can live in one Redis Cluster slot); a local backend, whose index is
 *  authoritative, checks the expectations against it, and makes the whole commit atomic. */
export interface CommitGroup {
  readonly expect: ReadonlyArray<readonly [key: string, value: Value]>;
  readonly changes: readonly Change[];
}

/** null: every group applied (the common case allocates nothing). Otherwise the conflicting
 *  groups by index, each with the current values of its `expect` keys in the same order;
 *  groups not listed were applied. */
export type CommitResult = null | Map<number, Value[]>;

export type StoreHealth =
  | { state: 'failed'; error: string; retryInMs: number }
  | { state: 'recovered'; afterMs: number };

export interface ScanOptions {
  /** start after this key (exclusive) */
  after?: string;
  /** records per yielded chunk (a hint) */
  chunk?: number;
  /** with it, corrupt parts are reported here and skipped; without it, corruption fails the scan */
  onCorrupt?: (message: string) => void;
}

/** What expireIndex() asks about each record: undefined keeps it, null deletes it, a number
 *  sets it to that time (a record dated ahead of the clock). `kind` says which record type. */
export type ExpiryJudge = (kind: 'ip' | 'triplet', time: number) => number | null | undefined;

export interface ExpireOptions {
  /** Runs one slice of the pass over the index (a few thousand slots: well under a
   *  millisecond) and resolves after it. The caller serialises it with its own writes (the
   *  daemon runs it between request batches) and paces the pass here. Default: at once, then
   *  a turn of the event loop. */
  runSlice?: (slice: () => void) => Promise<void>;
  /** index slots per slice (a knob for tests; the backend has its own default) */
  sliceSlots?: number;
  /** awaited between the chunks of the cleaning behind the index, with the number of changes
   *  the chunk queued for the store of record: the caller paces it here */
  pause?: (changed: number) => Promise<void>;
  /** asked between slices and chunks: true ends the expiry early (what was done stays done) */
  stopping?: () => boolean;
  /** with it, corrupt parts the cleaning meets are reported here and stepped over */
  onCorrupt?: (message: string) => void;
}

export interface ExpireReport {
  /** records judged */
  scanned: number;
  deleted: number;
  normalised: number;
  /** records of the store of record brought in line with the index behind it: deleted where
   *  the index has none, rewritten where its time differs */
  cleaned: number;
}

/** When a record may be dropped (Unix seconds), from its key and time: what a TTL backend sets
 *  its TTLs from. Given by the policy (policy.expiresAt), never restated by a backend. */
export type ExpiryRule = (key: string, time: number) => number;

export interface GreylistStore {
  readonly capabilities: StoreCapabilities;
  /** where the store lives, for messages and for files kept beside it (a directory, a URL) */
  readonly location: string;
  /** the state directory of a local backend (the admin socket and pid file live there) */
  readonly dir?: string;

  /** Values for keys, in order. */
  lookup(keys: readonly string[]): Promise<Value[]>;
  /** Only with capabilities.syncLookup: the value from the in-memory index. */
  lookupSync?(key: string): Value;

  /** Applies groups (see CommitGroup); resolves once they are durable. Rejects (StoreError)
   *  when the store cannot take the write: nothing was applied. */
  commit(groups: readonly CommitGroup[]): Promise<CommitResult>;
  /** Only with capabilities.syncCommit: commit() that is durable when it returns; throws
   *  (StoreError) when the store cannot take the write: nothing was applied. */
  commitSync?(groups: readonly CommitGroup[]): CommitResult;

  /** Records whose key starts with prefix, in key order, in chunks. */
  scan(prefix: string, opts?: ScanOptions): AsyncGenerator<StoredRecord[]>;

  /** Only with capabilities.indexExpiry: judges every record from the in-memory index, a
   *  slice at a time (opts.runSlice), without reading the store of record, and applies each
   *  answer to the index at once. Then the store of record is brought in line behind it, in
   *  the background (opts.pause between chunks). Resolves when both are done. The changes are
   *  not in the write-ahead log: a record they remove is dead by its time, so one that comes
   *  back after a crash is expired again by the next sweep. */
  expireIndex?(judge: ExpiryJudge, opts?: ExpireOptions): Promise<ExpireReport>;

  /** Only with capabilities.compact. */
  compact?(): Promise<void>;

  /** Whether the last run-time failure is repaired (true when there was none). */
  readonly healthy: boolean;
  /** Records held in memory (index or cache), for stats. */
  readonly memoryRecords: number;

  close(): Promise<void>;
}

export interface OpenOptions {
  /** fsync each commit: survives power loss, not only process death */
  sync?: boolean;
  /** told when the store fails at run time, when a reopen fails, and when it is back */
  onHealth?: (event: StoreHealth) => void;
  /** the name the pid file gives to other openers */
  program?: string;
  /** when records may be dropped: required by ttlExpiry backends */
  expiresAt?: ExpiryRule;
}

export type { StoreErrorCode };
