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
import { lstatSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Level } from 'level';
import msgpack from 'msgpack-lite';
import { RecentCache } from './cache.js';
import { PID_FILE, StoreLock } from './store-lock.js';
import { QgreydError } from './errors.js';

export const FORMAT_VERSION = 1;
export const FORMAT_KEY = '!format';
export const IP_PREFIX = 'I ';
export const TRIPLET_PREFIX = 'G ';

export type StoreErrorCode =
  | 'QGREYD_STORE_NOT_DIR'
  | 'QGREYD_STORE_LOCKED'
  | 'QGREYD_STORE_ACCESS'
  | 'QGREYD_STORE_CORRUPT'
  | 'QGREYD_STORE_FORMAT'
  | 'QGREYD_STORE_IO';

export class StoreError extends QgreydError {
  declare readonly code: StoreErrorCode;
  constructor(
    code: StoreErrorCode,
    message: string,
    temporary = false,
    /** for QGREYD_STORE_LOCKED: who holds the store, when known ("qgreyd pid 123") */
    readonly holder?: string,
  ) {
    super(code, message, temporary);
  }
}

export interface StoreOptions {
  /** how many records the cache holds (default 100000) */
  cacheSize?: number;
  /** fsync each batch: survives power loss, not only process death (default false) */
  sync?: boolean;
  /** told when the store fails at run time, when a reopen fails, and when it is back */
  onHealth?: (event: StoreHealth) => void;
  /** the name the pid file gives to other openers (default: this program's file name) */
  program?: string;
}

export type StoreHealth =
  | { state: 'failed'; error: string; retryInMs: number }
  | { state: 'recovered'; afterMs: number };

/** Backoff between reopen attempts after a run-time failure: first, and at most. */
export const REOPEN_FIRST_MS = 250;
export const REOPEN_MAX_MS = 15_000;

interface Failure {
  since: number;
  error: string;
  backoffMs: number;
  nextAttempt: number;
}

export interface StoredRecord {
  key: string;
  time: number;
}

type Db = Level<string, Buffer>;

export class Store {
  private readonly cache: RecentCache<number | null>;
  private readonly sync: boolean;
  private closed = false;
  private failure: Failure | null = null;
  private reopening: Promise<void> | null = null;

  private constructor(private db: Db, readonly dir: string, private readonly opts: StoreOptions, private readonly lock: StoreLock) {
    this.cache = new RecentCache(opts.cacheSize ?? 100_000);
    this.sync = opts.sync ?? false;
  }

  static async open(dir: string, opts: StoreOptions = {}): Promise<Store> {
    const path = resolve(dir);
    privateFiles();
    makeStateDir(path);
    const lock = takeLock(path, opts.program);
    try {
      const fresh = inspectDir(path);
      return new Store(await openDb(path, fresh), path, opts, lock);
    } catch (e) {
      lock.release();
      throw e;
    }
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
      await repairLocked(path);
    } catch (e) {
      lock.release();
      throw e;
    }
    try {
      return new Store(await openDb(path, false), path, opts, lock);
    } catch (e) {
      lock.release();
      const message = e instanceof StoreError ? e.message : String(e);
      throw new StoreError('QGREYD_STORE_CORRUPT', `LevelDB's repair ran but the store still does not open: ${message}; move the directory aside and start on an empty one (known senders will be greylisted once more)`);
    }
  }

  /** Values for keys, in order; undefined where there is no record. */
  async get(keys: readonly string[]): Promise<Array<number | undefined>> {
    const out = new Array<number | undefined>(keys.length);
    let missing: string[] | null = null;
    let missingAt: number[] | null = null;
    for (let i = 0; i < keys.length; i++) {
      const v = this.cache.get(keys[i]);
      if (v === undefined) {
        (missing ??= []).push(keys[i]);
        (missingAt ??= []).push(i);
      } else {
        out[i] = v === null ? undefined : v;
      }
    }
    if (missing !== null && missingAt !== null) {
      const db = await this.usable();
      let raw: Array<Buffer | undefined>;
      try {
        raw = await db.getMany(missing);
      } catch (e) {
        throw this.failed(e);
      }
      for (let j = 0; j < raw.length; j++) {
        const r = raw[j];
        const v = r === undefined ? undefined : decodeTime(r);
        out[missingAt[j]] = v;
        this.cache.set(missing[j], v ?? null);
      }
    }
    return out;
  }

  /** The cached value for key without going to LevelDB: a time, null (known absent), or
   *  undefined (not cached: ask get()). */
  peek(key: string): number | null | undefined {
    return this.cache.get(key);
  }

  /** Writes a batch atomically: a number sets a record, null deletes it. */
  async write(ops: ReadonlyArray<readonly [key: string, time: number | null]>): Promise<void> {
    if (ops.length === 0) return;
    const db = await this.usable();
    const batch = db.batch();
    // a batch's records mostly carry the same time (the batch's "now"): encode it once; the
    // batch copies the bytes, so sharing the buffer is safe
    let encodedTime = NaN;
    let encoded: Buffer | null = null;
    for (const [key, time] of ops) {
      if (time === null) batch.del(key);
      else {
        if (time !== encodedTime || encoded === null) {
          encodedTime = time;
          encoded = encodeTime(time);
        }
        batch.put(key, encoded);
      }
    }
    try {
      await batch.write({ sync: this.sync });
    } catch (e) {
      for (const [key] of ops) this.cache.delete(key);
      throw this.failed(e);
    }
    for (const [key, time] of ops) this.cache.set(key, time);
  }

  /** Records whose key starts with prefix, in key order, in chunks; from `after` (exclusive).
   *  With `onCorrupt`, a corrupt part of the store is reported there and skipped: the scan
   *  goes on with every record it can read. Without it, corruption fails the scan. */
  async *scan(prefix: string, opts: { after?: string | undefined; chunk?: number; onCorrupt?: (message: string) => void } = {}): AsyncGenerator<StoredRecord[]> {
    const db = await this.usable();
    const range = (after: string | undefined) => db.iterator({ gt: after ?? prefix, lt: prefix + '\uffff' });
    let after = opts.after;
    let it = range(after);
    // LevelDB's iterator steps over a block it cannot read and only says so when it reaches
    // the end of the range, failing that last read: the records it held are read again one
    // at a time, so only the unreadable block is lost
    let corrupt: string | null = null;
    try {
      for (;;) {
        let entries: Array<[string, Buffer]>;
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
        after = entries[entries.length - 1][0];
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
      // (the second pass may not meet the damage again: it starts past it when it lay before)
      if (corrupt !== null) opts.onCorrupt?.(`state directory ${this.dir}: ${corrupt}; the records in the damaged part were skipped; stop qgreyd and run: qgreyd --repair ${this.dir}`);
    } finally {
      await it.close();
    }
  }

  /** Compacts the whole key range, so that the space of deleted records goes back to the
   *  file system. LevelDB does it on its own threads: reads and writes go on meanwhile. */
  async compact(): Promise<void> {
    const db = await this.usable();
    const compactRange = (db as unknown as { compactRange?: (start: string, end: string) => Promise<void> }).compactRange;
    if (typeof compactRange !== 'function') throw new StoreError('QGREYD_STORE_IO', 'this build of the level package has no compactRange(); install classic-level');
    try {
      await compactRange.call(db, '\u0000', '\uffff');
    } catch (e) {
      throw this.failed(e);
    }
  }

  get cachedRecords(): number {
    return this.cache.size;
  }

  /** Whether the last run-time failure is still unrepaired. */
  get healthy(): boolean {
    return this.failure === null;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.reopening?.catch(() => undefined);
    this.cache.clear();
    try {
      await this.db.close().catch((e: unknown) => {
        if (this.failure === null) throw e;
      });
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
    // whatever the failed writes left behind, the cache must not vouch for it
    this.cache.clear();
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
function privateFiles(): void {
  process.umask(process.umask() | 0o077);
}

function takeLock(path: string, program: string | undefined): StoreLock {
  let r;
  try {
    r = StoreLock.acquire(path, program);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw openError({ message: `cannot create ${join(path, PID_FILE)}: ${err.code ?? err.message}` }, path);
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
    throw openError({ message: `cannot list it: ${(e as NodeJS.ErrnoException).code}` }, path);
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
    if (code !== 'ENOENT') throw openError({ message: `cannot read ${join(path, 'CURRENT')}: ${code}` }, path);
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
    await db.put(FORMAT_KEY, msgpack.encode({ format: FORMAT_VERSION, created: Math.floor(Date.now() / 1000) }), { sync: true });
    return;
  }
  const meta = msgpack.decode(raw) as { format?: unknown };
  if (meta.format !== FORMAT_VERSION) {
    throw new StoreError('QGREYD_STORE_FORMAT', `state directory ${dir} has store format ${String(meta.format)}, this qgreyd reads format ${FORMAT_VERSION}; run the qgreyd release that wrote it, or migrate it`);
  }
}

export function ipKey(ip: string): string {
  return IP_PREFIX + ip;
}
export function tripletDbKey(triplet: string): string {
  return TRIPLET_PREFIX + triplet;
}

function encodeTime(t: number): Buffer {
  return msgpack.encode(t);
}

function decodeTime(b: Buffer): number {
  // what msgpack-lite writes for a Unix time up to 2106 (uint32); anything else takes the
  // general decoder
  if (b.length === 5 && b[0] === 0xce) return b.readUInt32BE(1);
  const v: unknown = msgpack.decode(b);
  if (typeof v !== 'number') throw new StoreError('QGREYD_STORE_CORRUPT', `a stored record is not a time (${typeof v})`);
  return v;
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

function openError(e: unknown, path: string): StoreError {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = err.cause?.code ?? err.code;
  const detail = err.cause?.message ?? err.message ?? String(e);
  if (code === 'LEVEL_LOCKED') {
    return new StoreError('QGREYD_STORE_LOCKED', `state directory ${path} is locked by another process (another qgreyd, or a qgreyctl holding it); stop that process or give another directory`, true);
  }
  // a file of the store gone missing (CURRENT naming a lost manifest, a lost table) is damage
  // RepairDB fixes, though LevelDB reports it as I/O
  if (code === 'LEVEL_CORRUPTION' || (detail.includes(path + '/') && /No such file or directory/.test(detail))) {
    return new StoreError('QGREYD_STORE_CORRUPT', `state directory ${path}: the store is corrupt (${detail}); stop every process using it and run: qgreyd --repair ${path}`);
  }
  if (/read-only file system|EROFS/i.test(detail)) {
    return new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot open the store, the file system is read-only (${detail}); remount it read-write or give a directory on a writable file system`);
  }
  if (/permission denied|EACCES/i.test(detail)) {
    return new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot open the store (${detail}); make the directory and its files writable by the daemon's user`);
  }
  if (/no space left|ENOSPC|quota/i.test(detail)) {
    return new StoreError('QGREYD_STORE_IO', `state directory ${path}: cannot open the store, the disk is full (${detail}); free space on the file system that holds it`, true);
  }
  return new StoreError('QGREYD_STORE_IO', `state directory ${path}: cannot open the store (${detail})`, true);
}
