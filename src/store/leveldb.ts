// The LevelDB store. Two kinds of record, keyed so that a dump reads like the reference
// save file:
//   "I <ip>"                      -> last-good time (Unix seconds)
//   "G <ip> <sender> <recipient>" -> first-seen time (Unix seconds)
// Values are msgpack-lite encoded. A meta record "!format" carries the format version so a
// later release can migrate. A bounded cache of values (and of known absences) sits in
// front of LevelDB; every write goes through this object, so the cache is never stale.
//
// A failed read or write at run time (disk full, I/O error) does not end the process: the
// operation fails (the caller answers "accept"), and the store closes and reopens the
// database before it is used again, with backoff, because LevelDB keeps a sticky error after
// a failed write. The reopen happens inside a get/write/scan call, which the decision queue
// serialises, so no request ever sees a half-open database.
//
// A store is never destroyed by opening it: only an empty or new directory is initialised
// (LevelDB's createIfMissing); an existing one that lacks CURRENT, or is damaged otherwise,
// is refused with the repair advice, since LevelDB would otherwise write a new empty database
// over it and delete its table files.
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { rename } from 'node:fs/promises';
import { Level } from 'level';
import { StoreError } from './errors.js';
import type { Change, CommitGroup, CommitResult, ExpireOptions, ExpireReport, ExpiryJudge, GreylistStore, ScanOptions, StoreCapabilities, StoredRecord, StoreHealth, Value } from './types.js';
import { checkGroups } from './commit.js';
import { RecordIndex } from './index.js';
import { decodeMeta, decodeTime, encodeMeta, encodeTime, FORMAT_KEY, FORMAT_VERSION, IP_PREFIX, TRIPLET_PREFIX } from './keys.js';
import { readWal, WalWriter, walFiles, walName } from './wal.js';
import { PID_FILE, StoreLock } from './lock.js';

export { FORMAT_KEY, FORMAT_VERSION, IP_PREFIX, ipKey, TRIPLET_PREFIX, tripletDbKey } from './keys.js';
export { StoreError, type StoreErrorCode } from './errors.js';

export interface StoreOptions {
  /** ignored: every record is in the index (kept so that older callers compile) */
  cacheSize?: number;
  /** the most records the store holds; a commit that would add more is refused */
  maxRecords?: number;
  /** fsync each batch: survives power loss, not only process death (default false) */
  sync?: boolean;
  /** told when the store fails at run time, when a reopen fails, and when it is back */
  onHealth?: (event: StoreHealth) => void;
  /** the name the pid file gives to other openers (default: this program's file name) */
  program?: string;
  /** told as each part of opening ends (qgreyd -d logs the start-up's timing) */
  onPhase?: (phase: OpenPhase) => void;
}

/** The parts of opening, in the order they usually end: the lock and the directory's checks;
 *  while LevelDB opens on its own threads, our logs read (after a crash) and the index read
 *  from a snapshot; LevelDB's open (its own log replayed, the format record read); the index
 *  ready (walked from LevelDB when there was no snapshot). */
export type OpenPhase = 'lock' | 'log-read' | 'snapshot-read' | 'leveldb-open' | 'index';

export type { StoreHealth } from './types.js';

/** Backoff between reopen attempts after a run-time failure: first, and at most. */
export const REOPEN_FIRST_MS = 250;
export const REOPEN_MAX_MS = 15_000;

interface Failure {
  since: number;
  error: string;
  backoffMs: number;
  nextAttempt: number;
}

export type { StoredRecord } from './types.js';

type Db = Level<string, Buffer>;

const CAPABILITIES: StoreCapabilities = {
  syncLookup: true,
  syncCommit: true,
  ttlExpiry: false,
  shared: false,
  compact: true,
  indexExpiry: true,
};

/** index slots judged in one slice of expireIndex(): about a third of a millisecond */
const EXPIRE_SLICE = 32_768;
/** LevelDB records read in one chunk of the cleaning behind the index */
const CLEAN_CHUNK = 500;

/** how long committed changes wait before the background feed writes them to LevelDB: long
 *  enough that a feed is one large batch, short enough that the logs stay small */
const FEED_MS = 100;
/** changes per LevelDB batch write in the feed */
const FEED_BATCH = 50_000;
/** changes added to a feed batch in one turn */
const FEED_SLICE = 500;
/** a log file this large is closed at the next feed, and deleted once LevelDB holds it */
const WAL_ROTATE_BYTES = 64 << 20;
/** the index saved at a clean close, beside LevelDB */
export const SNAPSHOT_FILE = 'index.snapshot';
/** the index saved while running, with the first log it does not hold: a start after a crash
 *  loads it and replays the logs since, instead of walking LevelDB */
export const LIVE_SNAPSHOT_FILE = 'index.snapshot.live';
/** a live snapshot is saved after this many bytes of log, or this long after the last one
 *  when anything was committed since */
const LIVE_SNAPSHOT_BYTES = 64 << 20;
const LIVE_SNAPSHOT_MS = 5 * 60_000;

export type IndexSource = 'snapshot' | 'live-snapshot' | 'walk';

export class Store implements GreylistStore {
  readonly capabilities = CAPABILITIES;
  private readonly sync: boolean;
  private readonly maxRecords: number;
  private closed = false;
  private failure: Failure | null = null;
  private reopening: Promise<void> | null = null;
  /** set while appends to the write-ahead log fail: requests are not decided meanwhile */
  private walFailure: { since: number } | null = null;
  /** changes in the log and the index, not yet in LevelDB, oldest first */
  private pending: Array<readonly Change[]> = [];
  private pendingCount = 0;
  private feeding: Promise<void> | null = null;
  private feedTimer: NodeJS.Timeout | null = null;
  private feedBackoffMs = 0;
  /** why the last feed failed, if it did */
  private feedError: Error | null = null;
  /** commits made, and how many of them LevelDB holds */
  private commits = 0;
  private fedCommits = 0;
  /** how the index was loaded at open */
  indexSource: IndexSource = 'walk';
  /** logs from this sequence on are kept: the saved live snapshot (or the one being saved)
   *  needs them */
  private keepFrom: number | null = null;
  private snapshotting: Promise<void> | null = null;
  private logBytesAtSnapshot = 0;
  private logBytes = 0;
  // 0: the first feed after open saves one, so that a crash soon after a start is cheap too
  private lastSnapshot = 0;
  private commitsAtSnapshot = 0;
  /** whether a cleaning of LevelDB behind the index has run to its end since open: until one
   *  has, each expiry cleans, so that what a crash left behind is found */
  private cleanedSinceOpen = false;

  private constructor(
    private db: Db,
    readonly dir: string,
    private readonly opts: StoreOptions,
    private readonly lock: StoreLock,
    private readonly index: RecordIndex,
    private wal: WalWriter,
  ) {
    this.sync = opts.sync ?? false;
    this.maxRecords = opts.maxRecords ?? Infinity;
  }

  get location(): string {
    return this.dir;
  }

  static async open(dir: string, opts: StoreOptions = {}): Promise<Store> {
    const path = resolve(dir);
    privateFiles();
    makeStateDir(path);
    const lock = takeLock(path, opts.program);
    try {
      const fresh = inspectDir(path);
      // taken before LevelDB opens (opening may rewrite its files)
      const stamp = fresh ? null : fingerprint(path);
      opts.onPhase?.('lock');
      return await Store.start(openDb(path, fresh), path, opts, lock, stamp);
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  /** What every open does while LevelDB opens on its own threads: our logs read, the index
   *  read from a snapshot (the clean one, or after a crash the live one plus the logs since);
   *  then, once LevelDB is open, the index walked from it when there was no snapshot, and a
   *  new log. The logs' changes go to LevelDB through the background feed, as if just
   *  committed: a log is deleted only once LevelDB holds it, and every reader of LevelDB
   *  (scan, compact) waits for the feed first. */
  private static async start(opening: Promise<Db>, path: string, opts: StoreOptions, lock: StoreLock, stamp: Buffer | null): Promise<Store> {
    const dbOpen = opening.then((db) => {
      opts.onPhase?.('leveldb-open');
      return db;
    });
    dbOpen.catch(() => undefined); // (awaited below; a failure before that must not be unhandled)
    let index: RecordIndex | null = null;
    let source: IndexSource = 'walk';
    /** the first log the live snapshot loaded does not hold */
    let liveFrom = 0;
    let logs: WalContents[];
    let nextSeq: number;
    const snapshot = join(path, SNAPSHOT_FILE);
    const live = join(path, LIVE_SNAPSHOT_FILE);
    try {
      ({ logs, nextSeq } = readLogs(path));
      if (logs.length > 0) opts.onPhase?.('log-read');
      const changed = logs.some((l) => l.changes.length > 0);
      // a snapshot is the index only of the LevelDB files it was saved beside (their names,
      // sizes and times: any other writer changes them), and a log with changes means a
      // crash after it
      if (stamp !== null && !changed) {
        index = RecordIndex.load(snapshot, stamp);
        if (index !== null) source = 'snapshot';
      }
      if (index === null) {
        // after a crash: the snapshot saved while running, plus every log written since it
        // (those are kept until the next one is saved)
        const liveStamp = RecordIndex.stampOf(live);
        const from = liveStamp === null ? null : liveSnapshotSeq(liveStamp);
        if (liveStamp !== null && from !== null && logsFrom(logs, from)) {
          index = RecordIndex.load(live, liveStamp);
          if (index !== null) {
            source = 'live-snapshot';
            liveFrom = from;
            for (const l of logs) if (l.seq >= from) applyTo(index, l.changes);
          }
        }
      }
      if (index !== null) opts.onPhase?.('snapshot-read');
    } catch (e) {
      await dbOpen.then((db) => db.close()).catch(() => undefined);
      throw e instanceof StoreError ? e : openError(e, path);
    }
    const db = await dbOpen;
    try {
      // from here on no snapshot may be trusted again until one is saved anew, except the
      // clean one just loaded, kept as the live one: it is the index now, before the next log;
      // and the live one just loaded, with the logs it needs (the first feed saves a new one;
      // deleting 201 MB at 10M records would take the first reply 80 ms longer)
      if (source !== 'live-snapshot') removeFile(live);
      const kept = source === 'snapshot' && toLiveSnapshot(snapshot, live, nextSeq);
      if (!kept) removeFile(snapshot);
      if (index === null) {
        // LevelDB holds what was fed of the logs, in order; the logs over it give the rest
        index = await buildIndex(db);
        for (const l of logs) applyTo(index, l.changes);
      }
      opts.onPhase?.('index');
      const wal = new WalWriter(join(path, walName(nextSeq)), nextSeq, opts.sync ?? false);
      const store = new Store(db, path, opts, lock, index, wal);
      store.indexSource = source;
      if (kept) {
        // the logs from the new one on are the live snapshot's; no other is due for a while
        store.keepFrom = nextSeq;
        store.lastSnapshot = Date.now();
      } else if (source === 'live-snapshot') {
        store.keepFrom = liveFrom;
      }
      store.adoptLogs(logs);
      return store;
    } catch (e) {
      await db.close().catch(() => undefined);
      throw e instanceof StoreError ? e : openError(e, path);
    }
  }

  /** The changes of the logs a crash left, for the feed to write to LevelDB like fresh
   *  commits; the logs are deleted after it has (below the current log, as any other). */
  private adoptLogs(logs: readonly WalContents[]): void {
    for (const l of logs) {
      if (l.changes.length === 0) continue;
      this.pending.push(l.changes);
      this.pendingCount += l.changes.length;
      this.commits++;
    }
    if (this.pendingCount > 0) this.feedTimer = setTimeout(this.runFeed, 0).unref();
    else for (const l of logs) removeFile(l.path);
  }

  /** Rebuilds a damaged store with LevelDB's RepairDB (it salvages every readable record from
   *  the table and log files and writes a new manifest and CURRENT), then opens it, holding
   *  the store throughout. Refuses while another process holds the store, since RepairDB
   *  itself takes no lock. */
  static async repair(dir: string, opts: StoreOptions = {}): Promise<Store> {
    const path = resolve(dir);
    let st;
    try {
      st = statSync(path);
    } catch (e) {
      throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot examine it (${(e as NodeJS.ErrnoException).code}); give the state directory to repair`);
    }
    if (!st.isDirectory()) throw new StoreError('QGREYD_STORE_NOT_DIR', `state directory ${path} is not a directory; give the state directory to repair`);
    privateFiles();
    const lock = takeLock(path, opts.program);
    try {
      inspectDir(path, true);
      // the repaired store may have lost records the snapshot lists
      removeFile(join(path, SNAPSHOT_FILE));
      removeFile(join(path, LIVE_SNAPSHOT_FILE));
      await repairLocked(path);
    } catch (e) {
      lock.release();
      throw e;
    }
    try {
      return await Store.start(openDb(path, false), path, opts, lock, null);
    } catch (e) {
      lock.release();
      const message = e instanceof StoreError ? e.message : String(e);
      throw new StoreError('QGREYD_STORE_CORRUPT', `LevelDB's repair ran but the store still does not open: ${message}; move the directory aside and start on an empty one (known senders will be greylisted once more)`);
    }
  }

  get memoryRecords(): number {
    return this.index.size;
  }

  /** kept for callers that predate the index: every record is in memory */
  get cachedRecords(): number {
    return this.index.size;
  }

  lookupSync(key: string): Value {
    return this.index.get(key);
  }

  lookup(keys: readonly string[]): Promise<Value[]> {
    if (this.closed) return Promise.reject(this.closedError());
    const out = new Array<Value>(keys.length);
    for (let i = 0; i < keys.length; i++) out[i] = this.index.get(keys[i]);
    return Promise.resolve(out);
  }

  /** Values for keys, in order; undefined where there is no record. */
  get(keys: readonly string[]): Promise<Array<number | undefined>> {
    return this.lookup(keys);
  }

  /** The value for key from the index: a time, or null (absent). */
  peek(key: string): number | null {
    return this.index.get(key) ?? null;
  }

  commitSync(groups: readonly CommitGroup[]): CommitResult {
    if (this.closed) throw this.closedError();
    let changes: readonly Change[];
    let conflicts: CommitResult = null;
    if (groups.length === 1 && groups[0].expect.length === 0) {
      changes = groups[0].changes;
    } else {
      const staged = new Map<string, number | null>();
      const accepted: Change[] = [];
      const read = (k: string): Value => {
        const s = staged.get(k);
        return s === undefined ? this.index.get(k) : s === null ? undefined : s;
      };
      conflicts = checkGroups(groups, read, (c) => {
        staged.set(c[0], c[1]);
        accepted.push(c);
      });
      changes = accepted;
    }
    if (changes.length === 0) return conflicts;
    if (this.index.size >= this.maxRecords) this.checkRoom(changes);
    this.append(changes);
    for (let i = 0; i < changes.length; i++) {
      const [key, time] = changes[i];
      if (time === null) this.index.delete(key);
      else this.index.set(key, time);
    }
    this.pending.push(changes);
    this.pendingCount += changes.length;
    this.commits++;
    if (this.feedTimer === null && this.feeding === null) this.feedTimer = setTimeout(this.runFeed, FEED_MS).unref();
    return conflicts;
  }

  commit(groups: readonly CommitGroup[]): Promise<CommitResult> {
    try {
      return Promise.resolve(this.commitSync(groups));
    } catch (e) {
      return Promise.reject(e as Error);
    }
  }

  /** Writes a batch atomically: a number sets a record, null deletes it. */
  async write(ops: ReadonlyArray<readonly [key: string, time: number | null]>): Promise<void> {
    if (ops.length === 0) return;
    await this.commit([{ expect: [], changes: ops }]);
  }

  /** At the bound, a commit that would add a record is refused whole (the request is not
   *  decided: 01 05, or 00 04 with --fail-closed); refreshing and deleting go on, so the
   *  sweep makes room again. */
  private checkRoom(changes: readonly Change[]): void {
    let adds = 0;
    for (const [key, time] of changes) if (time !== null && this.index.get(key) === undefined) adds++;
    if (adds > 0 && this.index.size + adds > this.maxRecords) {
      throw new StoreError('QGREYD_STORE_FULL', `state directory ${this.dir}: the store holds ${this.index.size} records, the most --max-records allows; new records wait for the sweep to expire old ones, or raise --max-records`, true);
    }
  }

  /** One frame in the log; the failure state follows whether it could be written. */
  private append(changes: readonly Change[]): void {
    try {
      if (this.wal.broken) this.rotate();
      const before = this.wal.bytes;
      this.wal.append(changes);
      this.logBytes += this.wal.bytes - before;
    } catch (e) {
      const message = (e as Error).message;
      if (this.walFailure === null) {
        this.walFailure = { since: Date.now() };
        this.opts.onHealth?.({ state: 'failed', error: message, retryInMs: 0 });
      }
      throw new StoreError('QGREYD_STORE_IO', `state directory ${this.dir}: cannot append to the write-ahead log (${message})`, true);
    }
    if (this.walFailure !== null) {
      const since = this.walFailure.since;
      this.walFailure = null;
      this.opts.onHealth?.({ state: 'recovered', afterMs: Date.now() - since });
    }
  }

  /** A new log file: the ones before it are deleted once LevelDB holds what they hold. */
  private rotate(): void {
    const next = this.wal.seq + 1;
    const wal = new WalWriter(join(this.dir, walName(next)), next, this.sync);
    try {
      this.wal.close();
    } catch {
      // its frames are on disk already; a failed close loses nothing
    }
    this.wal = wal;
  }

  private readonly runFeed = (): void => {
    this.feedTimer = null;
    this.feeding = this.feed().finally(() => {
      this.feeding = null;
      if (this.pendingCount > 0 && !this.closed && this.feedTimer === null) this.feedTimer = setTimeout(this.runFeed, Math.max(FEED_MS, this.feedBackoffMs)).unref();
    });
  };

  /** Moves what is pending into LevelDB in large batches, off the request path; then deletes
   *  the log files LevelDB now holds all of. */
  private async feed(): Promise<void> {
    if (this.pendingCount === 0) return;
    this.feedError = null;
    if (this.wal.bytes >= WAL_ROTATE_BYTES) {
      try {
        this.rotate();
      } catch {
        // the current file goes on growing; the next feed tries again
      }
    }
    const current = this.wal.seq;
    const taken = this.pending;
    this.pending = [];
    this.pendingCount = 0;
    try {
      const db = await this.usable();
      let batch = db.batch();
      let n = 0;
      let encodedTime = NaN;
      let encoded: Buffer | null = null;
      for (const changes of taken) {
        for (const [key, time] of changes) {
          if (time === null) batch.del(key);
          else {
            // a batch's records mostly carry the same time: encode it once (the batch copies)
            if (time !== encodedTime || encoded === null) {
              encodedTime = time;
              encoded = encodeTime(time);
            }
            batch.put(key, encoded);
          }
          if (++n >= FEED_BATCH) {
            await batch.write({ sync: this.sync });
            batch = db.batch();
            n = 0;
          } else if (n % FEED_SLICE === 0) {
            // adding to a batch runs on the main thread: requests get their turns between slices
            await new Promise<void>((r) => setImmediate(r));
          }
        }
      }
      if (n > 0) await batch.write({ sync: this.sync });
      else await batch.close();
    } catch (e) {
      // all of it again next time (rewriting what did land is harmless: same values, in order)
      this.pending = taken.concat(this.pending);
      for (const c of taken) this.pendingCount += c.length;
      this.feedError = e instanceof StoreError ? e : this.failed(e);
      this.feedBackoffMs = Math.min(Math.max(this.feedBackoffMs * 2, REOPEN_FIRST_MS), REOPEN_MAX_MS);
      return;
    }
    this.feedBackoffMs = 0;
    this.fedCommits += taken.length;
    this.removeFedLogs(current);
    if (
      this.snapshotting === null &&
      (this.logBytes - this.logBytesAtSnapshot >= LIVE_SNAPSHOT_BYTES || (Date.now() - this.lastSnapshot >= LIVE_SNAPSHOT_MS && this.commits > this.commitsAtSnapshot))
    ) {
      void this.saveLiveSnapshot();
    }
  }

  /** Removes the logs before `below` that LevelDB holds, except those a live snapshot needs. */
  private removeFedLogs(below: number): void {
    const limit = this.keepFrom === null ? below : Math.min(below, this.keepFrom);
    for (const f of walFiles(this.dir)) if (f.seq < limit) removeFile(f.path);
  }

  /** Saves the index as it is now, in the background, so that a start after a crash loads it
   *  and replays only the logs written since. The image is taken and the log switched in one
   *  turn: every commit before is in the older logs, every commit after in the newer. */
  saveLiveSnapshot(): Promise<void> {
    if (this.snapshotting !== null || this.closed) return this.snapshotting ?? Promise.resolve();
    const image = this.index.beginImage();
    if (image === null) return Promise.resolve();
    try {
      this.rotate();
    } catch {
      this.index.endImage(image);
      return Promise.resolve();
    }
    const seq = this.wal.seq;
    const previous = this.keepFrom;
    this.keepFrom = previous === null ? seq : Math.min(previous, seq);
    this.lastSnapshot = Date.now();
    this.logBytesAtSnapshot = this.logBytes;
    this.commitsAtSnapshot = this.commits;
    const path = join(this.dir, LIVE_SNAPSHOT_FILE);
    // renamed off the main thread: replacing the previous snapshot frees its blocks (an unlink
    // of 201 MB at 10M records takes about 80 ms)
    this.snapshotting = this.index
      .saveImage(image, path + '.tmp', liveSnapshotStamp(seq))
      .then(() => (this.closed ? undefined : rename(path + '.tmp', path)))
      .then(
        () => {
          if (!this.closed) this.keepFrom = seq;
        },
        () => {
          try {
            removeFile(path + '.tmp');
          } catch {
            // left for the next start, which ignores it
          }
          this.keepFrom = previous;
        },
      )
      .finally(() => {
        this.snapshotting = null;
      });
    return this.snapshotting;
  }

  /** Resolves once LevelDB holds every committed change (what a scan reads). */
  async flush(): Promise<void> {
    if (this.closed) throw this.closedError();
    const target = this.commits;
    while (this.fedCommits < target) {
      if (this.feeding === null) {
        if (this.feedTimer !== null) {
          clearTimeout(this.feedTimer);
          this.feedTimer = null;
        }
        this.runFeed();
      }
      await this.feeding;
      if (this.feedError !== null && this.fedCommits < target) throw this.feedError;
    }
  }

  private closedError(): StoreError {
    return new StoreError('QGREYD_STORE_IO', `state directory ${this.dir}: the store is closed`);
  }

  /** Records whose key starts with prefix, in key order, in chunks; from `after` (exclusive).
   *  With `onCorrupt`, a corrupt part of the store is reported there and skipped: the scan
   *  goes on with every record it can read. Without it, corruption fails the scan.
   *  The scan reads LevelDB once it holds every change committed before the scan began. */
  async *scan(prefix: string, opts: ScanOptions = {}): AsyncGenerator<StoredRecord[]> {
    for await (const entries of this.chunks(prefix, opts, (db, range) => db.iterator(range), (e) => e[0])) {
      const records: StoredRecord[] = [];
      for (const [key, value] of entries) {
        try {
          records.push({ key, time: decodeTime(value) });
        } catch (e) {
          if (opts.onCorrupt === undefined) throw e;
          opts.onCorrupt(`state directory ${this.dir}: record ${JSON.stringify(key.slice(0, 200))}: ${(e as Error).message}; it was skipped`);
        }
      }
      if (records.length > 0) yield records;
    }
  }

  /** scan() for keys only: no value is copied out of LevelDB or decoded. */
  private keys(prefix: string, opts: ScanOptions): AsyncGenerator<string[]> {
    return this.chunks(prefix, opts, (db, range) => db.keys(range), (k) => k);
  }

  /** What scan() and keys() share: LevelDB read in chunks once it holds every change committed
   *  before, and a corrupt block stepped over when opts.onCorrupt is given. */
  private async *chunks<T>(
    prefix: string,
    opts: ScanOptions,
    open: (db: Db, range: { gt: string; lt: string }) => { nextv(n: number): Promise<T[]>; close(): Promise<void> },
    keyOf: (entry: T) => string,
  ): AsyncGenerator<T[]> {
    await this.flush();
    const db = await this.usable();
    const range = (after: string | undefined) => open(db, { gt: after ?? prefix, lt: prefix + '\uffff' });
    let after = opts.after;
    let it = range(after);
    // LevelDB's iterator steps over a block it cannot read and only says so when it reaches
    // the end of the range, failing that last read: the records it held are read again one
    // at a time, so only the unreadable block is lost
    let corrupt: string | null = null;
    try {
      for (;;) {
        let entries: T[];
        try {
          entries = await it.nextv(corrupt !== null ? 1 : opts.chunk ?? 1000);
        } catch (e) {
          // the database was reopened under this scan: the caller starts again later
          if (db !== this.db) throw new StoreError('QGREYD_STORE_IO', 'the store was reopened during a scan', true);
          if (opts.onCorrupt === undefined || (e as { code?: string }).code !== 'LEVEL_CORRUPTION') throw this.failed(e);
          if (corrupt !== null) break;
          corrupt = (e as Error).message;
          await it.close();
          it = range(after);
          continue;
        }
        if (entries.length === 0) break;
        after = keyOf(entries[entries.length - 1]);
        yield entries;
      }
      // (the second pass may not meet the damage again: it starts past it when it lay before)
      if (corrupt !== null) opts.onCorrupt?.(`state directory ${this.dir}: ${corrupt}; the records in the damaged part were skipped; stop qgreyd and run: qgreyd --repair ${this.dir}`);
    } finally {
      await it.close();
    }
  }

  /** Expires from the index (see GreylistStore.expireIndex), then brings LevelDB in line with
   *  it: a record the index no longer holds is deleted, one whose time differs is rewritten.
   *  Those changes join the background feed in order with the commits, so a record a request
   *  wrote after the index pass is never deleted behind it: the cleaning reads the index at
   *  the moment it queues a change, and the feed applies changes in the order queued. */
  async expireIndex(judge: ExpiryJudge, opts: ExpireOptions = {}): Promise<ExpireReport> {
    if (this.closed) throw this.closedError();
    const report: ExpireReport = { scanned: 0, deleted: 0, normalised: 0, cleaned: 0 };
    const stopping = opts.stopping ?? (() => false);
    const runSlice = opts.runSlice ?? nextTurnAfter;
    const fn = (ip: boolean, time: number): number | null | undefined => {
      report.scanned++;
      const r = judge(ip ? 'ip' : 'triplet', time);
      if (r === null) report.deleted++;
      else if (r !== undefined) report.normalised++;
      return r;
    };
    let from = 0;
    let capacity = this.index.capacity;
    const slice = (): void => {
      if (this.closed) {
        from = -1;
        return;
      }
      // requests added records and the table grew: every slot moved, so the pass starts
      // again (a record judged twice is judged the same)
      if (this.index.capacity !== capacity) {
        capacity = this.index.capacity;
        from = 0;
      }
      from = this.index.visit(from, opts.sliceSlots ?? EXPIRE_SLICE, fn);
    };
    while (from >= 0 && !stopping()) await runSlice(slice);
    if (from < 0 && !this.closed) await runSlice(() => this.index.visitOdd(fn));
    if (stopping() || this.closed || (report.deleted + report.normalised === 0 && this.cleanedSinceOpen)) return report;

    const pause = opts.pause ?? nextTurn;
    const scanOpts: ScanOptions = { chunk: CLEAN_CHUNK, ...(opts.onCorrupt !== undefined ? { onCorrupt: opts.onCorrupt } : {}) };
    for (const prefix of [TRIPLET_PREFIX, IP_PREFIX]) {
      // a record re-dated in the index is rewritten, so then the times are read and compared;
      // otherwise only deletions are due, and keys are enough
      const chunks = report.normalised > 0 ? this.scan(prefix, scanOpts) : this.keys(prefix, scanOpts);
      for await (const chunk of chunks) {
        if (stopping() || this.closed) return report;
        let changes: Change[] | null = null;
        for (const entry of chunk) {
          const key = typeof entry === 'string' ? entry : entry.key;
          const t = this.index.get(key);
          if (typeof entry === 'string' ? t === undefined : t !== entry.time) (changes ??= []).push([key, t ?? null]);
        }
        if (changes !== null) {
          this.pending.push(changes);
          this.pendingCount += changes.length;
          this.commits++;
          report.cleaned += changes.length;
          if (this.feedTimer === null && this.feeding === null) this.feedTimer = setTimeout(this.runFeed, FEED_MS).unref();
        }
        await pause(changes?.length ?? 0);
      }
    }
    this.cleanedSinceOpen = true;
    return report;
  }

  /** Compacts the whole key range, so that the space of deleted records goes back to the
   *  file system. LevelDB does it on its own threads: reads and writes go on meanwhile. */
  async compact(): Promise<void> {
    await this.snapshotting?.catch(() => undefined);
    await this.flush();
    // LevelDB holds everything: the logs can go, so that their space comes back as well (the
    // live snapshot that needed them goes too; the next feed saves a new one)
    if (this.pendingCount === 0 && this.feeding === null && this.snapshotting === null) {
      removeFile(join(this.dir, LIVE_SNAPSHOT_FILE));
      this.keepFrom = null;
      this.lastSnapshot = 0;
      this.rotate();
      this.removeFedLogs(this.wal.seq);
    }
    const db = await this.usable();
    const compactRange = (db as unknown as { compactRange?: (start: string, end: string) => Promise<void> }).compactRange;
    if (typeof compactRange !== 'function') throw new StoreError('QGREYD_STORE_IO', 'this build of the level package has no compactRange(); install classic-level');
    try {
      await compactRange.call(db, '\u0000', '\uffff');
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** Whether the last run-time failure is still unrepaired. */
  get healthy(): boolean {
    return this.failure === null && this.walFailure === null;
  }

  /** Feeds LevelDB everything, then saves the index beside it so the next start need not
   *  walk LevelDB, and removes the logs LevelDB now holds. When LevelDB cannot take the
   *  changes, the logs stay: the next open replays them. */
  async close(): Promise<void> {
    if (this.closed) return;
    let fed = false;
    try {
      await this.flush();
      fed = true;
    } catch {
      // the log keeps what LevelDB did not get
    }
    await this.snapshotting?.catch(() => undefined);
    this.closed = true;
    if (this.feedTimer !== null) clearTimeout(this.feedTimer);
    await this.reopening?.catch(() => undefined);
    try {
      this.wal.close();
    } catch {
      // every frame was written with write(): nothing is lost with the descriptor
    }
    try {
      const clean = fed && this.failure === null;
      if (clean) {
        // the clean snapshot replaces the live one and its logs
        removeFile(join(this.dir, LIVE_SNAPSHOT_FILE));
        for (const f of walFiles(this.dir)) removeFile(f.path);
      }
      await this.db.close().catch((e: unknown) => {
        if (this.failure === null) throw e;
      });
      if (clean) {
        const snapshot = join(this.dir, SNAPSHOT_FILE);
        try {
          this.index.save(snapshot + '.tmp', fingerprint(this.dir));
          renameSync(snapshot + '.tmp', snapshot);
        } catch {
          // no snapshot: the next start walks LevelDB
          removeFile(snapshot + '.tmp');
        }
      }
    } finally {
      this.lock.release();
    }
  }

  /** The open database, reopening it first after a failure once the backoff has passed. */
  private async usable(): Promise<Db> {
    if (this.closed) throw new StoreError('QGREYD_STORE_IO', `state directory ${this.dir}: the store is closed`);
    if (this.failure === null) return this.db;
    if (this.reopening === null) {
      const f = this.failure;
      if (Date.now() < f.nextAttempt) {
        throw new StoreError('QGREYD_STORE_IO', `state directory ${this.dir}: store unavailable (${f.error}); reopening in ${f.nextAttempt - Date.now()} ms`, true);
      }
      this.reopening = this.reopen(f).finally(() => {
        this.reopening = null;
      });
    }
    await this.reopening;
    return this.db;
  }

  private async reopen(f: Failure): Promise<void> {
    await this.db.close().catch(() => undefined);
    try {
      // never createIfMissing here: a CURRENT lost at run time must not become an empty store
      this.db = await openDb(this.dir, false);
    } catch (e) {
      f.error = (e as Error).message;
      f.backoffMs = Math.min(f.backoffMs * 2, REOPEN_MAX_MS);
      f.nextAttempt = Date.now() + f.backoffMs;
      this.opts.onHealth?.({ state: 'failed', error: f.error, retryInMs: f.backoffMs });
      throw new StoreError('QGREYD_STORE_IO', `state directory ${this.dir}: store unavailable (${f.error}); reopening in ${f.backoffMs} ms`, true);
    }
    this.failure = null;
    this.opts.onHealth?.({ state: 'recovered', afterMs: Date.now() - f.since });
  }

  /** Records a run-time failure; returns the error to throw. Corruption is not something a
   *  reopen cures, so it only fails the operation that met it. */
  private failed(e: unknown): Error {
    const err = e as { code?: string; message?: string };
    const message = err.message ?? String(e);
    if (err.code === 'LEVEL_CORRUPTION') {
      return new StoreError('QGREYD_STORE_CORRUPT', `state directory ${this.dir}: ${message}; stop qgreyd and run: qgreyd --repair ${this.dir}`);
    }
    if (this.failure === null) {
      const now = Date.now();
      this.failure = { since: now, error: message, backoffMs: REOPEN_FIRST_MS, nextAttempt: now + REOPEN_FIRST_MS };
      this.opts.onHealth?.({ state: 'failed', error: message, retryInMs: REOPEN_FIRST_MS });
    }
    return e instanceof Error ? e : new Error(message);
  }
}

async function repairLocked(path: string): Promise<void> {
  const probe: Db = new Level<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  try {
    await probe.open({ createIfMissing: false });
    await probe.close();
  } catch (e) {
    const err = openError(e, path);
    if (err.code === 'QGREYD_STORE_LOCKED' || err.code === 'QGREYD_STORE_ACCESS') throw err;
  }
  const repair = (Level as unknown as { repair?: (location: string) => Promise<void> }).repair;
  if (typeof repair !== 'function') throw new StoreError('QGREYD_STORE_IO', 'this build of the level package has no repair(); install classic-level 1.3 or later');
  try {
    await repair.call(Level, path);
  } catch (e) {
    throw openError(e, path);
  }
}

/** LevelDB creates its files (tables, logs, manifests) from its own threads for as long as the
 *  store is open, so the process umask, not a call's, decides their mode: 0600. */
function nextTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

function nextTurnAfter(slice: () => void): Promise<void> {
  slice();
  return nextTurn();
}

function privateFiles(): void {
  process.umask(process.umask() | 0o077);
}

function takeLock(path: string, program: string | undefined): StoreLock {
  let r;
  try {
    r = StoreLock.acquire(path, program);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw openError({ code: err.code, message: `cannot create ${join(path, PID_FILE)}: ${err.code ?? err.message}` }, path);
  }
  if (r.ok) return r.lock;
  if (r.holder !== null) return lockedError(path, `${r.holder.program} pid ${r.holder.pid}`);
  if (r.reason === 'held') return lockedError(path, 'a process that is starting');
  throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: ${r.reason}`, true);
}

function lockedError(path: string, who: string): never {
  throw new StoreError('QGREYD_STORE_LOCKED', `state directory ${path} is locked by another process (${who}); stop that process or give another directory`, true, who);
}

/** Files LevelDB may leave in a directory that holds no data (a refused open leaves LOCK and
 *  LOG), and our own. */
const NO_DATA = new Set([PID_FILE, 'admin.sock', 'LOCK', 'LOG', 'LOG.old', 'lost+found']);
const LEVELDB_FILE = /^(CURRENT|MANIFEST-\d+|\d+\.(ldb|sst|log))$/;

/** Checks what the directory holds before LevelDB sees it; true when it holds no store yet,
 *  the only case in which one may be created. A symbolic link inside is refused: LevelDB never
 *  makes one, and it would write through it. With `repairing`, a missing CURRENT is expected. */
function inspectDir(path: string, repairing = false): boolean {
  let names: string[];
  try {
    names = readdirSync(path);
  } catch (e) {
    throw openError({ code: (e as NodeJS.ErrnoException).code, message: `cannot list it: ${(e as NodeJS.ErrnoException).code}` }, path);
  }
  let data = false;
  let leveldb = false;
  for (const name of names) {
    const file = join(path, name);
    let st;
    try {
      st = lstatSync(file);
    } catch {
      continue; // gone meanwhile
    }
    if (st.isSymbolicLink()) {
      throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: ${file} is a symbolic link, which a store never holds (LevelDB would write through it); remove it, and check who could write the directory`);
    }
    if (!NO_DATA.has(name) && !name.startsWith(`${PID_FILE}.`)) data = true;
    if (LEVELDB_FILE.test(name)) leveldb = true;
  }
  if (!data || repairing) return !data;
  const corrupt = (detail: string) =>
    new StoreError('QGREYD_STORE_CORRUPT', `state directory ${path}: the store is corrupt (${detail}); stop every process using it and run: qgreyd --repair ${path}`);
  let current: string;
  try {
    current = readFileSync(join(path, 'CURRENT'), 'latin1');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw openError({ code, message: `cannot read ${join(path, 'CURRENT')}: ${code}` }, path);
    if (leveldb) throw corrupt('its CURRENT file is missing');
    throw new StoreError('QGREYD_STORE_FORMAT', `state directory ${path} holds files but no store (no CURRENT, no LevelDB files); give qgreyd an empty or new directory of its own`);
  }
  const m = /^(MANIFEST-\d+)\n$/.exec(current);
  if (!m) throw corrupt('its CURRENT file does not name a manifest');
  try {
    lstatSync(join(path, m[1]));
  } catch {
    throw corrupt(`CURRENT names ${m[1]}, which is missing`);
  }
  return false;
}

async function openDb(path: string, create: boolean): Promise<Db> {
  const db: Db = new Level<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
  try {
    await db.open({ createIfMissing: create });
  } catch (e) {
    throw openError(e, path);
  }
  try {
    await checkFormat(db, path);
  } catch (e) {
    await db.close().catch(() => undefined);
    throw e instanceof StoreError ? e : openError(e, path);
  }
  return db;
}

async function checkFormat(db: Db, dir: string): Promise<void> {
  const raw = await db.get(FORMAT_KEY);
  if (raw === undefined) {
    const it = db.keys({ limit: 1 });
    const any = await it.next();
    await it.close();
    if (any !== undefined) {
      throw new StoreError('QGREYD_STORE_FORMAT', `state directory ${dir} holds a LevelDB database that qgreyd did not write (no ${FORMAT_KEY} record); give qgreyd a directory of its own`);
    }
    await db.put(FORMAT_KEY, encodeMeta({ format: FORMAT_VERSION, created: Math.floor(Date.now() / 1000) }), { sync: true });
    return;
  }
  const meta = decodeMeta(raw);
  if (meta.format !== FORMAT_VERSION) {
    throw new StoreError('QGREYD_STORE_FORMAT', `state directory ${dir} has store format ${String(meta.format)}, this qgreyd reads format ${FORMAT_VERSION}; run the qgreyd release that wrote it, or migrate it`);
  }
}

/** Creates a missing state directory (0700); refuses anything but a directory. */
export function makeStateDir(path: string): void {
  let st;
  try {
    const link = lstatSync(path);
    const euid = process.geteuid?.();
    if (link.isSymbolicLink() && link.uid !== 0 && link.uid !== euid) {
      throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path} is a symbolic link owned by uid ${link.uid}, not root or this user; give the real path of a directory of your own`);
    }
    st = statSync(path);
  } catch (e) {
    if (e instanceof StoreError) throw e;
    const err = e as NodeJS.ErrnoException;
    if (err.code !== 'ENOENT') {
      throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot examine it (${err.code}); check the permissions of its parent directories`);
    }
    try {
      mkdirSync(path, { recursive: true, mode: 0o700 });
    } catch (e2) {
      let code = (e2 as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        // a recursive mkdir reports ENOENT for EROFS and EACCES too; when the parent exists,
        // a plain mkdir tells the real cause
        try {
          mkdirSync(path, { mode: 0o700 });
          return;
        } catch (e3) {
          code = (e3 as NodeJS.ErrnoException).code ?? code;
        }
      }
      const fix = code === 'EROFS' ? 'the file system is read-only; remount it read-write or give a directory on a writable one' : "create it by hand, writable by the daemon's user";
      throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot create it (${code}); ${fix}`);
    }
    return;
  }
  if (!st.isDirectory()) {
    throw new StoreError('QGREYD_STORE_NOT_DIR', `state directory ${path} is a regular file, not a directory (an old greydaemon save file?); give qgreyd a directory for its LevelDB store, and migrate a save file with qgreyctl import`);
  }
}

/** Why a store could not be opened, by the code the failure carries: classic-level's
 *  (LEVEL_LOCKED, LEVEL_CORRUPTION, LEVEL_IO_ERROR, on the error or, for a failed open, on its
 *  `cause`) or Node's errno (EACCES, EROFS, ENOSPC, ... on an fs error). */
function openError(e: unknown, path: string): StoreError {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = err.cause?.code ?? err.code;
  const detail = err.cause?.message ?? err.message ?? String(e);
  if (code === 'LEVEL_LOCKED') {
    return new StoreError('QGREYD_STORE_LOCKED', `state directory ${path} is locked by another process (another qgreyd, or a qgreyctl holding it); stop that process or give another directory`, true);
  }
  const errno = code === 'LEVEL_IO_ERROR' ? levelIoErrno(detail) : code;
  // a file of the store gone missing (CURRENT naming a lost manifest, a lost table) is damage
  // RepairDB fixes, though LevelDB reports it as I/O
  if (code === 'LEVEL_CORRUPTION' || (code === 'LEVEL_IO_ERROR' && errno === 'ENOENT' && detail.includes(path + '/'))) {
    return new StoreError('QGREYD_STORE_CORRUPT', `state directory ${path}: the store is corrupt (${detail}); stop every process using it and run: qgreyd --repair ${path}`);
  }
  if (errno === 'EROFS') {
    return new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot open the store, the file system is read-only (${detail}); remount it read-write or give a directory on a writable file system`);
  }
  if (errno === 'EACCES') {
    return new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot open the store (${detail}); make the directory and its files writable by the daemon's user`);
  }
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    return new StoreError('QGREYD_STORE_IO', `state directory ${path}: cannot open the store, the disk is full (${detail}); free space on the file system that holds it`, true);
  }
  return new StoreError('QGREYD_STORE_IO', `state directory ${path}: cannot open the store (${detail})`, true);
}

/** The errno behind a LEVEL_IO_ERROR. LevelDB's Status carries no errno, only text: its POSIX
 *  env writes "<file>: " and strerror(errno), which classic-level hands over as the message.
 *  So this one place reads the text, for the strerror words (glibc's, as on any Linux). */
function levelIoErrno(detail: string): string | undefined {
  if (/: No such file or directory\b/.test(detail)) return 'ENOENT';
  if (/: Read-only file system\b/.test(detail)) return 'EROFS';
  if (/: Permission denied\b/.test(detail)) return 'EACCES';
  if (/: No space left on device\b/.test(detail)) return 'ENOSPC';
  if (/: Disk quota exceeded\b/.test(detail)) return 'EDQUOT';
  return undefined;
}

interface WalContents {
  seq: number;
  path: string;
  changes: Change[];
}

/** Every log file's changes, oldest first, and the sequence of the next log. */
function readLogs(dir: string): { logs: WalContents[]; nextSeq: number } {
  const files = walFiles(dir);
  const logs = files.map((f) => ({ seq: f.seq, path: f.path, changes: readWal(f.path).changes }));
  return { logs, nextSeq: files.length === 0 ? 1 : files[files.length - 1].seq + 1 };
}

function applyTo(index: RecordIndex, changes: readonly Change[]): void {
  for (const [key, time] of changes) {
    if (time === null) index.delete(key);
    else index.set(key, time);
  }
}

/** Makes the clean snapshot just loaded the live one, which the logs from `seq` on complete:
 *  its stamp rewritten, then renamed (so the first minutes after a start need no snapshot of
 *  their own). False when that fails: the caller removes it. */
function toLiveSnapshot(snapshot: string, live: string, seq: number): boolean {
  try {
    const fd = openSync(snapshot, 'r+');
    try {
      if (writeSync(fd, liveSnapshotStamp(seq), 0, 16, 16) !== 16) return false;
    } finally {
      closeSync(fd);
    }
    renameSync(snapshot, live);
    return true;
  } catch {
    return false;
  }
}

/** A live snapshot's stamp: "LIVESNAP", then the first log sequence it does not hold. */
function liveSnapshotStamp(seq: number): Buffer {
  const b = Buffer.alloc(16);
  b.write('LIVESNAP', 0, 'latin1');
  b.writeUInt32LE(seq, 8);
  return b;
}

function liveSnapshotSeq(stamp: Buffer): number | null {
  return stamp.toString('latin1', 0, 8) === 'LIVESNAP' ? stamp.readUInt32LE(8) : null;
}

/** Whether the logs from `seq` on are all there: seq itself and every one after it. */
function logsFrom(logs: ReadonlyArray<{ seq: number }>, seq: number): boolean {
  let expect = seq;
  for (const l of logs) {
    if (l.seq < seq) continue;
    if (l.seq !== expect) return false;
    expect++;
  }
  return expect > seq;
}

/** The index from LevelDB, record by record: what a start after a crash costs (a clean stop
 *  leaves a snapshot instead). A record that cannot be read is left out: the sweep reports
 *  the damage. */
async function buildIndex(db: Db): Promise<RecordIndex> {
  const index = new RecordIndex();
  for (const prefix of [IP_PREFIX, TRIPLET_PREFIX]) {
    const range = (after: string | undefined) => db.iterator({ gt: after ?? prefix, lt: prefix + '\uffff' });
    let after: string | undefined;
    let it = range(after);
    // as in scan(): past a block LevelDB cannot read, the rest is read again one by one
    let corrupt = false;
    try {
      for (;;) {
        let entries: Array<[string, Buffer]>;
        try {
          entries = await it.nextv(corrupt ? 1 : 10_000);
        } catch (e) {
          if ((e as { code?: string }).code !== 'LEVEL_CORRUPTION' || corrupt) break;
          corrupt = true;
          await it.close();
          it = range(after);
          continue;
        }
        if (entries.length === 0) break;
        after = entries[entries.length - 1][0];
        for (const [key, value] of entries) {
          try {
            index.set(key, decodeTime(value));
          } catch {
            // not a time: the sweep reports it
          }
        }
      }
    } finally {
      await it.close();
    }
  }
  return index;
}

function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** What identifies LevelDB's files as they are: names, sizes and modification times of every
 *  file but its informational log. A snapshot saved with one fingerprint is the index of
 *  that LevelDB only. */
function fingerprint(dir: string): Buffer {
  const h = createHash('sha256');
  for (const name of readdirSync(dir).sort()) {
    if (!LEVELDB_FILE.test(name)) continue;
    try {
      const st = statSync(join(dir, name));
      h.update(`${name} ${st.size} ${st.mtimeMs}\n`);
    } catch {
      h.update(`${name} gone\n`);
    }
  }
  return h.digest().subarray(0, 16);
}
