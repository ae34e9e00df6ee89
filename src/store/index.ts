// An in-memory index of every record: key -> time, in typed arrays, so that no request waits
// for a read. Open addressing with linear probing over a 62-bit hash of the key; the key
// itself is not kept (at 10M records a JS Map of strings takes 1.3 GB, this 201 MB).
//
// Slot layout, three Uint32Arrays: `hi` (bit 31: occupied, bit 30: an IP record, bits 0-29:
// hash), `lo` (32 more hash bits, also the probe start), `time` (Unix seconds).
// Two different keys with the same 62 bits would share a record: at 10M records the chance
// that a lookup of an absent key meets one is 10^7 / 2^62, about 2e-12 per lookup (a new
// triplet taken for one first seen earlier: one early pass, at a million lookups a day about
// once in a million years). Accepted rather than keeping keys: see docs/performance.md.
//
// Deletion shifts later entries of the probe run back (no tombstones), so a lookup never
// scans further than the run it lands in and the table never fills with dead slots.
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { open as openAsync } from 'node:fs/promises';

const OCCUPIED = 0x80000000;
/** the slot time that says: look in `odd` */
const ODD = 0xffffffff;
const IP_BIT = 0x40000000;
const HASH_HI = 0x3fffffff;
/** grow when more than this fraction of slots is taken: 10M records fit 2^24 slots (201 MB) */
const MAX_LOAD = 0.625;
const MIN_CAPACITY = 1 << 12;

export class RecordIndex {
  private hi: Uint32Array;
  private lo: Uint32Array;
  private time: Uint32Array;
  private mask: number;
  private count = 0;
  /** times a uint32 cannot hold (before 1970, after 2106, fractions: only from imports), by
   *  key; their slot holds ODD */
  private readonly odd = new Map<string, number>();
  // the last key's hash, set by hash(): no object per lookup
  private h1 = 0;
  private h2 = 0;

  constructor(capacity = MIN_CAPACITY) {
    let c = MIN_CAPACITY;
    while (c < capacity) c *= 2;
    this.hi = new Uint32Array(c);
    this.lo = new Uint32Array(c);
    this.time = new Uint32Array(c);
    this.mask = c - 1;
  }

  get size(): number {
    return this.count;
  }

  get capacity(): number {
    return this.mask + 1;
  }

  /** bytes held by the table */
  get bytes(): number {
    return this.capacity * 12;
  }

  get(key: string): number | undefined {
    const i = this.find(key);
    if (i < 0) return undefined;
    const t = this.time[i];
    return t === ODD ? this.odd.get(key) : t;
  }

  set(key: string, time: number): void {
    let slotTime = time;
    if (!(Number.isInteger(time) && time >= 0 && time < ODD)) {
      this.odd.set(key, time);
      slotTime = ODD;
    }
    let i = this.find(key);
    if (i >= 0) {
      if (this.time[i] === ODD && slotTime !== ODD) this.odd.delete(key);
      this.time[i] = slotTime;
      return;
    }
    if ((this.count + 1) > this.capacity * MAX_LOAD) {
      this.grow();
      i = this.find(key); // re-probe in the new table (the hash is still in h1/h2)
    }
    const slot = -i - 1;
    this.hi[slot] = this.h1;
    this.lo[slot] = this.h2;
    this.time[slot] = slotTime;
    this.count++;
  }

  delete(key: string): boolean {
    const i = this.find(key);
    if (i < 0) return false;
    if (this.time[i] === ODD) this.odd.delete(key);
    this.removeAt(i);
    return true;
  }

  /** Calls fn on each record in slot order from `from`, for at most `limit` slots; fn returns
   *  undefined to keep the record, null to delete it, a number to set its time. Returns the
   *  slot to go on from, or -1 when the table is done. Entries that a deletion shifts back
   *  past the cursor are seen again; none is skipped. */
  visit(from: number, limit: number, fn: (ip: boolean, time: number) => number | null | undefined): number {
    const cap = this.capacity;
    let i = from;
    const end = Math.min(cap, from + limit);
    while (i < end) {
      const h = this.hi[i];
      // (a slot holding ODD is judged by visitOdd, which knows its key)
      if ((h & OCCUPIED) === 0 || this.time[i] === ODD) {
        i++;
        continue;
      }
      const r = fn((h & IP_BIT) !== 0, this.time[i]);
      if (r === undefined) i++;
      else if (r === null) this.removeAt(i); // the slot now holds the next entry of its run
      else {
        this.time[i] = r;
        i++;
      }
    }
    return i >= cap ? -1 : i;
  }

  /** Like visit(), for the records whose times the table cannot hold (see `odd`). */
  visitOdd(fn: (ip: boolean, time: number) => number | null | undefined): void {
    for (const [key, time] of [...this.odd]) {
      const r = fn(key.startsWith('I '), time);
      if (r === null) this.delete(key);
      else if (r !== undefined) this.set(key, r);
    }
  }

  /** Writes the table to a file; with `stamp` (16 bytes) to match at load. */
  save(path: string, stamp: Buffer): void {
    // (the odd times' keys are not in the table: such a store walks LevelDB at start)
    if (this.odd.size > 0) throw new Error('the index holds times a snapshot cannot');
    const fd = openSync(path, 'w', 0o600);
    try {
      const header = Buffer.alloc(HEADER_BYTES);
      header.write(MAGIC, 0, 'latin1');
      header.writeUInt32LE(this.capacity, 8);
      header.writeUInt32LE(this.count, 12);
      stamp.copy(header, 16);
      writeAll(fd, header);
      for (const a of [this.hi, this.lo, this.time]) writeAll(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    } finally {
      closeSync(fd);
    }
  }

  /** A copy of the table as it is now, for saveCopy() to write in the background; null when
   *  the table holds odd times (which a snapshot cannot). */
  copy(): IndexCopy | null {
    if (this.odd.size > 0) return null;
    return { hi: this.hi.slice(), lo: this.lo.slice(), time: this.time.slice(), count: this.count };
  }

  /** Writes a copy() to a file without blocking the event loop. */
  static async saveCopy(path: string, stamp: Buffer, c: IndexCopy): Promise<void> {
    const f = await openAsync(path, 'w', 0o600);
    try {
      const header = Buffer.alloc(HEADER_BYTES);
      header.write(MAGIC, 0, 'latin1');
      header.writeUInt32LE(c.hi.length, 8);
      header.writeUInt32LE(c.count, 12);
      stamp.copy(header, 16);
      await f.write(header);
      for (const a of [c.hi, c.lo, c.time]) await f.write(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
      await f.sync();
    } finally {
      await f.close();
    }
  }

  /** The stamp a saved table carries, or null when there is no readable one. */
  static stampOf(path: string): Buffer | null {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return null;
    }
    try {
      const header = readHeader(fd);
      return header === null ? null : Buffer.from(header.subarray(16, 32));
    } finally {
      closeSync(fd);
    }
  }

  /** The table saved at `path` if its stamp is `stamp`, else null. */
  static load(path: string, stamp: Buffer): RecordIndex | null {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return null;
    }
    try {
      const header = readHeader(fd);
      if (header === null || !header.subarray(16, 32).equals(stamp)) return null;
      const capacity = header.readUInt32LE(8);
      if (capacity < MIN_CAPACITY || (capacity & (capacity - 1)) !== 0) return null;
      const ix = new RecordIndex(capacity);
      let pos = HEADER_BYTES;
      for (const a of [ix.hi, ix.lo, ix.time]) {
        const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
        for (let off = 0; off < bytes.length; ) {
          const n = readSync(fd, bytes, off, bytes.length - off, pos);
          if (n === 0) return null;
          off += n;
          pos += n;
        }
      }
      ix.count = header.readUInt32LE(12);
      return ix;
    } finally {
      closeSync(fd);
    }
  }

  /** The slot holding key, or -(the free slot where it would go) - 1. */
  private find(key: string): number {
    this.hash(key);
    const h1 = this.h1;
    const h2 = this.h2;
    const mask = this.mask;
    for (let i = h2 & mask; ; i = (i + 1) & mask) {
      const h = this.hi[i];
      if (h === 0) return -i - 1;
      if (h === h1 && this.lo[i] === h2) return i;
    }
  }

  private removeAt(i: number): void {
    const mask = this.mask;
    let hole = i;
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const h = this.hi[j];
      if (h === 0) break;
      const home = this.lo[j] & mask;
      // move j into the hole when its home is not in (hole, j] (cyclically)
      if (hole <= j ? home <= hole || home > j : home <= hole && home > j) {
        this.hi[hole] = h;
        this.lo[hole] = this.lo[j];
        this.time[hole] = this.time[j];
        hole = j;
      }
    }
    this.hi[hole] = 0;
    this.lo[hole] = 0;
    this.time[hole] = 0;
    this.count--;
  }

  private grow(): void {
    const { hi, lo, time } = this;
    const c = this.capacity * 2;
    this.hi = new Uint32Array(c);
    this.lo = new Uint32Array(c);
    this.time = new Uint32Array(c);
    this.mask = c - 1;
    const mask = this.mask;
    for (let k = 0; k < hi.length; k++) {
      const h = hi[k];
      if (h === 0) continue;
      let i = lo[k] & mask;
      while (this.hi[i] !== 0) i = (i + 1) & mask;
      this.hi[i] = h;
      this.lo[i] = lo[k];
      this.time[i] = time[k];
    }
  }

  /** Two independent 32-bit hashes of the key's UTF-16 code units (murmur3's mixing), the
   *  first marked occupied and with the record kind: "I " keys are IP records. */
  private hash(key: string): void {
    let a = 0x9747b28c;
    let b = 0x2f6b4e1d;
    const n = key.length;
    for (let i = 0; i < n; i++) {
      const c = key.charCodeAt(i);
      a = Math.imul(a ^ c, 0xcc9e2d51);
      a = (a << 15) | (a >>> 17);
      b = Math.imul(b ^ c, 0x1b873593);
      b = (b << 13) | (b >>> 19);
      b = Math.imul(b, 5) + 0xe6546b64;
    }
    a ^= n;
    a ^= a >>> 16;
    a = Math.imul(a, 0x85ebca6b);
    a ^= a >>> 13;
    a = Math.imul(a, 0xc2b2ae35);
    a ^= a >>> 16;
    b ^= n;
    b ^= b >>> 16;
    b = Math.imul(b, 0x85ebca6b);
    b ^= b >>> 13;
    b = Math.imul(b, 0xc2b2ae35);
    b ^= b >>> 16;
    const ip = key.charCodeAt(0) === 0x49 && key.charCodeAt(1) === 0x20;
    this.h1 = ((a & HASH_HI) | OCCUPIED | (ip ? IP_BIT : 0)) >>> 0;
    this.h2 = b >>> 0;
  }
}

export interface IndexCopy {
  hi: Uint32Array;
  lo: Uint32Array;
  time: Uint32Array;
  count: number;
}

const MAGIC = 'QGIDX001';
const HEADER_BYTES = 32;

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
}

/** A saved table's header, or null when the file is too short or not a table. */
function readHeader(fd: number): Buffer | null {
  const header = Buffer.alloc(HEADER_BYTES);
  if (readSync(fd, header, 0, HEADER_BYTES, 0) !== HEADER_BYTES || header.toString('latin1', 0, 8) !== MAGIC) return null;
  return header;
}
