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
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { open as openAsync, type FileHandle } from 'node:fs/promises';

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
  /** the image being saved, which must see each slot as it was before the table changes it */
  private image: IndexImage | null = null;
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
      if (this.image !== null) this.image.keep(i);
      this.time[i] = slotTime;
      return;
    }
    if ((this.count + 1) > this.capacity * MAX_LOAD) {
      this.grow();
      i = this.find(key); // re-probe in the new table (the hash is still in h1/h2)
    }
    const slot = -i - 1;
    if (this.image !== null) this.image.keep(slot);
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
        if (this.image !== null) this.image.keep(i);
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
      writeAll(fd, headerFor(this.capacity, this.count, stamp));
      for (const a of [this.hi, this.lo, this.time]) writeAll(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    } finally {
      closeSync(fd);
    }
  }

  /** The table as it is now, for saveImage() to write in the background while the table
   *  goes on changing; null when the table holds odd times (which a snapshot cannot) or an
   *  image is being saved already. Nothing is copied up front: until saveImage() has read a
   *  slot, the table keeps the piece of 256 slots it is about to change as it was (about
   *  20 MB at 10M records under load, against 201 MB for a copy of the table). Every write
   *  to the arrays must call image.keep(slot) first, as set, visit and removeAt do. */
  beginImage(): IndexImage | null {
    if (this.odd.size > 0 || this.image !== null) return null;
    this.image = new IndexImage(this.hi, this.lo, this.time, this.count);
    return this.image;
  }

  /** Ends an image that will not be saved. */
  endImage(image: IndexImage): void {
    if (this.image === image) this.image = null;
  }

  /** Writes an image (from beginImage()) to a file without blocking the event loop, a few MB
   *  at a time; the table may change meanwhile. The image ends with the call, written or not. */
  async saveImage(image: IndexImage, path: string, stamp: Buffer): Promise<void> {
    try {
      const f = await openAsync(path, 'w', 0o600);
      try {
        const cap = image.capacity;
        await writeFully(f, headerFor(cap, image.count, stamp), 0);
        const step = Math.min(IMAGE_STEP, cap);
        const staged = [new Uint32Array(step), new Uint32Array(step), new Uint32Array(step)] as const;
        for (let from = 0; from < cap; from += step) {
          image.stage(from, from + step, staged);
          // the file holds hi[], then lo[], then time[]
          for (let a = 0; a < 3; a++) await writeFully(f, new Uint8Array(staged[a].buffer), HEADER_BYTES + (a * cap + from) * 4);
        }
        await f.sync();
      } finally {
        await f.close();
      }
    } finally {
      this.endImage(image);
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

  /** The table saved at `path` if its stamp is `stamp`, else null. The file is read straight
   *  into the table's arrays (no buffer in between: the peak is the table itself), and
   *  refused unless its size is exactly what its header says and the header's record count
   *  is the number of occupied slots. */
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
      const count = header.readUInt32LE(12);
      if (capacity < MIN_CAPACITY || (capacity & (capacity - 1)) !== 0 || count > capacity * MAX_LOAD) return null;
      if (fstatSync(fd).size !== HEADER_BYTES + capacity * 12) return null;
      const ix = new RecordIndex(capacity);
      let pos = HEADER_BYTES;
      let occupied = 0;
      const hi = ix.hi;
      for (const a of [ix.hi, ix.lo, ix.time]) {
        const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
        // hi is read 1 MB at a time and its slots counted while in the CPU's cache
        const chunk = a === hi ? LOAD_CHUNK_BYTES : bytes.length;
        let counted = 0;
        for (let off = 0; off < bytes.length; ) {
          const n = readSync(fd, bytes, off, Math.min(chunk, bytes.length - off), pos);
          if (n === 0) return null;
          off += n;
          pos += n;
          if (a === hi) for (const end = off >>> 2; counted < end; counted++) if (hi[counted] !== 0) occupied++;
        }
      }
      if (occupied !== count) return null;
      ix.count = count;
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
        if (this.image !== null) this.image.keep(hole);
        this.hi[hole] = h;
        this.lo[hole] = this.lo[j];
        this.time[hole] = this.time[j];
        hole = j;
      }
    }
    if (this.image !== null) this.image.keep(hole);
    this.hi[hole] = 0;
    this.lo[hole] = 0;
    this.time[hole] = 0;
    this.count--;
  }

  private grow(): void {
    const { hi, lo, time } = this;
    // an image being saved reads the old arrays, which nothing changes from here on
    this.image = null;
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

/** slots in a piece that an image keeps before the table changes one of them (3 KB) */
const PIECE_BITS = 8;
const PIECE = 1 << PIECE_BITS;
/** slots an image writes per step: 3 MB of file */
const IMAGE_STEP = 1 << 18;

/** The table at one moment, read out piece by piece while the table changes: a slot at or past
 *  the cursor is kept (with its piece) before the table changes it. After the table grows it
 *  no longer writes these arrays, and the image reads them as they are. */
export class IndexImage {
  /** slots below this have been staged: the table changes them freely */
  private cursor = 0;
  /** pieces at or past the cursor that the table changed, as they were: hi, lo, time */
  private readonly kept = new Map<number, Uint32Array>();

  constructor(
    private readonly hi: Uint32Array,
    private readonly lo: Uint32Array,
    private readonly time: Uint32Array,
    readonly count: number,
  ) {}

  get capacity(): number {
    return this.hi.length;
  }

  /** pieces held now (for tests and the bench) */
  get keptPieces(): number {
    return this.kept.size;
  }

  /** The table is about to change slot i. */
  keep(i: number): void {
    if (i < this.cursor) return;
    const p = i >>> PIECE_BITS;
    if (this.kept.has(p)) return;
    const from = p << PIECE_BITS;
    const c = new Uint32Array(3 * PIECE);
    c.set(this.hi.subarray(from, from + PIECE), 0);
    c.set(this.lo.subarray(from, from + PIECE), PIECE);
    c.set(this.time.subarray(from, from + PIECE), 2 * PIECE);
    this.kept.set(p, c);
  }

  /** Copies slots [from, to) as they were at the image's moment into out (hi, lo, time, each
   *  to - from long) and moves the cursor to `to`. from and to are multiples of a piece. */
  stage(from: number, to: number, out: readonly [Uint32Array, Uint32Array, Uint32Array]): void {
    out[0].set(this.hi.subarray(from, to));
    out[1].set(this.lo.subarray(from, to));
    out[2].set(this.time.subarray(from, to));
    if (this.kept.size > 0) {
      for (let p = from >>> PIECE_BITS; p < to >>> PIECE_BITS; p++) {
        const c = this.kept.get(p);
        if (c === undefined) continue;
        const at = (p << PIECE_BITS) - from;
        out[0].set(c.subarray(0, PIECE), at);
        out[1].set(c.subarray(PIECE, 2 * PIECE), at);
        out[2].set(c.subarray(2 * PIECE), at);
        this.kept.delete(p);
      }
    }
    this.cursor = to;
  }
}

const MAGIC = 'QGIDX001';
const LOAD_CHUNK_BYTES = 1 << 20;
const HEADER_BYTES = 32;

function headerFor(capacity: number, count: number, stamp: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(MAGIC, 0, 'latin1');
  header.writeUInt32LE(capacity, 8);
  header.writeUInt32LE(count, 12);
  stamp.copy(header, 16);
  return header;
}

async function writeFully(f: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let off = 0; off < bytes.length; ) off += (await f.write(bytes, off, bytes.length - off, position + off)).bytesWritten;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
}

/** A saved table's header, or null when the file is too short or not a table. */
function readHeader(fd: number): Buffer | null {
  const header = Buffer.alloc(HEADER_BYTES);
  if (readSync(fd, header, 0, HEADER_BYTES, 0) !== HEADER_BYTES || header.toString('latin1', 0, 8) !== MAGIC) return null;
  return header;
}
