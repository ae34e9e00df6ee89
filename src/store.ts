// The LevelDB store. Two kinds of record, keyed so that a dump reads like the reference
// save file:
//   "I <ip>"                      -> last-good time (Unix seconds)
//   "G <ip> <sender> <recipient>" -> first-seen time (Unix seconds)
// Values are msgpack-lite encoded. A meta record "!format" carries the format version so a
// later release can migrate. A bounded cache of values (and of known absences) sits in
// front of LevelDB; every write goes through this object, so the cache is never stale.
import { mkdirSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Level } from 'level';
import msgpack from 'msgpack-lite';
import { RecentCache } from './cache.js';

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

export class StoreError extends Error {
  constructor(readonly code: StoreErrorCode, message: string, readonly temporary = false) {
    super(message);
  }
}

export interface StoreOptions {
  /** how many records the cache holds (default 100000) */
  cacheSize?: number;
  /** fsync each batch: survives power loss, not only process death (default false) */
  sync?: boolean;
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

  private constructor(private readonly db: Db, readonly dir: string, opts: StoreOptions) {
    this.cache = new RecentCache(opts.cacheSize ?? 100_000);
    this.sync = opts.sync ?? false;
  }

  static async open(dir: string, opts: StoreOptions = {}): Promise<Store> {
    const path = resolve(dir);
    prepareDir(path);
    const db: Db = new Level<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer' });
    try {
      await db.open();
    } catch (e) {
      throw openError(e, path);
    }
    const store = new Store(db, path, opts);
    try {
      await store.checkFormat();
    } catch (e) {
      await db.close().catch(() => undefined);
      throw e;
    }
    return store;
  }

  private async checkFormat(): Promise<void> {
    const raw = await this.db.get(FORMAT_KEY);
    if (raw === undefined) {
      const it = this.db.keys({ limit: 1 });
      const any = await it.next();
      await it.close();
      if (any !== undefined) {
        throw new StoreError('QGREYD_STORE_FORMAT', `state directory ${this.dir} holds a LevelDB database that qgreyd did not write (no ${FORMAT_KEY} record); give qgreyd a directory of its own`);
      }
      await this.db.put(FORMAT_KEY, msgpack.encode({ format: FORMAT_VERSION, created: Math.floor(Date.now() / 1000) }), { sync: true });
      return;
    }
    const meta = msgpack.decode(raw) as { format?: unknown };
    if (meta.format !== FORMAT_VERSION) {
      throw new StoreError('QGREYD_STORE_FORMAT', `state directory ${this.dir} has store format ${String(meta.format)}, this qgreyd reads format ${FORMAT_VERSION}; run the qgreyd release that wrote it, or migrate it`);
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
      const raw = await this.db.getMany(missing);
      for (let j = 0; j < raw.length; j++) {
        const r = raw[j];
        const v = r === undefined ? undefined : decodeTime(r);
        out[missingAt[j]] = v;
        this.remember(missing[j], v ?? null);
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
    const batch = this.db.batch();
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
      throw e;
    }
    for (const [key, time] of ops) this.remember(key, time);
  }

  private remember(key: string, v: number | null): void {
    this.cache.set(key, v);
  }

  /** Records whose key starts with prefix, in key order, in chunks; from `after` (exclusive). */
  async *scan(prefix: string, opts: { after?: string; chunk?: number } = {}): AsyncGenerator<StoredRecord[]> {
    const it = this.db.iterator({
      gt: opts.after ?? prefix,
      lt: prefix + '\uffff',
    });
    try {
      for (;;) {
        const entries = await it.nextv(opts.chunk ?? 1000);
        if (entries.length === 0) return;
        yield entries.map(([key, value]) => ({ key, time: decodeTime(value) }));
      }
    } finally {
      await it.close();
    }
  }

  get cachedRecords(): number {
    return this.cache.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    await this.db.close();
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

function prepareDir(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code !== 'ENOENT') {
      throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot examine it (${err.code}); check the permissions of its parent directories`);
    }
    try {
      mkdirSync(path, { recursive: true, mode: 0o700 });
    } catch (e2) {
      const err2 = e2 as NodeJS.ErrnoException;
      throw new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot create it (${err2.code}); create it by hand, writable by the daemon's user`);
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
  if (code === 'LEVEL_CORRUPTION') {
    return new StoreError('QGREYD_STORE_CORRUPT', `state directory ${path}: the store is corrupt (${detail}); see "Repairing a corrupt store" in the README`);
  }
  if (/permission denied|EACCES|read-only/i.test(detail)) {
    return new StoreError('QGREYD_STORE_ACCESS', `state directory ${path}: cannot open the store (${detail}); make the directory and its files writable by the daemon's user`);
  }
  return new StoreError('QGREYD_STORE_IO', `state directory ${path}: cannot open the store (${detail})`, true);
}
