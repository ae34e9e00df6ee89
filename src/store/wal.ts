// The write-ahead log: every commit is one frame appended with one write() (and fdatasync
// with --sync) before the commit returns, so a turn's replies follow their records onto disk.
// LevelDB is fed from memory in the background; a log file is deleted once LevelDB holds
// everything in it. At open, what the logs hold goes into the index and to the feed, which
// every reader of LevelDB waits for (qgreyctl's offline paths, --repair, export see it).
//
// Files: wal-<sequence, 12 digits> in the state directory. Frame: u32 payload length,
// u32 CRC-32 of the payload, payload; payload: entries of u8 kind (0 set, 1 delete, 2 set
// with a time a uint32 cannot hold), the time (u32; f64 for kind 2; none for a delete), u32 key
// length, the key in UTF-8. A torn or damaged frame ends the replay of
// its file: it can only be the last one written before the process or the machine died
// (after a failed append the file is cut back to its last whole frame).
import { closeSync, fdatasyncSync, fstatSync, ftruncateSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Change } from './types.js';

const PREFIX = 'wal-';
const NAME = /^wal-(\d{12})$/;

export function walFiles(dir: string): Array<{ seq: number; path: string }> {
  return readdirSync(dir)
    .map((n) => NAME.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ seq: Number(m[1]), path: join(dir, m[0]) }))
    .sort((a, b) => a.seq - b.seq);
}

export function walName(seq: number): string {
  return PREFIX + String(seq).padStart(12, '0');
}

/** Every change the file holds, in order, up to its first damaged frame. */
export function readWal(path: string): { changes: Change[]; torn: boolean } {
  const b = readFileSync(path);
  const changes: Change[] = [];
  let off = 0;
  while (off + 8 <= b.length) {
    const len = b.readUInt32LE(off);
    const crc = b.readUInt32LE(off + 4);
    const start = off + 8;
    const end = start + len;
    if (end > b.length || crc32(b, start, end) !== crc) return { changes, torn: true };
    let p = start;
    while (p < end) {
      const kind = b[p];
      if (kind === 0) {
        const time = b.readUInt32LE(p + 1);
        const klen = b.readUInt32LE(p + 5);
        changes.push([b.toString('utf8', p + 9, p + 9 + klen), time]);
        p += 9 + klen;
      } else if (kind === 2) {
        const time = b.readDoubleLE(p + 1);
        const klen = b.readUInt32LE(p + 9);
        changes.push([b.toString('utf8', p + 13, p + 13 + klen), time]);
        p += 13 + klen;
      } else {
        const klen = b.readUInt32LE(p + 1);
        changes.push([b.toString('utf8', p + 5, p + 5 + klen), null]);
        p += 5 + klen;
      }
    }
    off = end;
  }
  return { changes, torn: off !== b.length };
}

export class WalWriter {
  private fd: number;
  private size: number;
  private buf = Buffer.allocUnsafe(1 << 20);

  constructor(
    readonly path: string,
    readonly seq: number,
    private readonly sync: boolean,
  ) {
    this.fd = openSync(path, 'a', 0o600);
    this.size = fstatSync(this.fd).size;
  }

  /** set when a failed append could not be cut off: the next append goes to a new file */
  broken = false;

  get bytes(): number {
    return this.size;
  }

  /** Appends one frame holding `changes`; throws (nothing appended) when it cannot. */
  append(changes: readonly Change[]): void {
    let need = 8;
    for (let i = 0; i < changes.length; i++) need += 13 + changes[i][0].length * 3;
    if (need > this.buf.length) this.buf = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
    const b = this.buf;
    let p = 8;
    for (let i = 0; i < changes.length; i++) {
      const [key, time] = changes[i];
      if (time === null) {
        b[p] = 1;
        const klen = b.write(key, p + 5, 'utf8');
        b.writeUInt32LE(klen, p + 1);
        p += 5 + klen;
      } else if (!(Number.isInteger(time) && time >= 0 && time <= 0xffffffff)) {
        b[p] = 2;
        b.writeDoubleLE(time, p + 1);
        const klen = b.write(key, p + 13, 'utf8');
        b.writeUInt32LE(klen, p + 9);
        p += 13 + klen;
      } else {
        b[p] = 0;
        b.writeUInt32LE(time, p + 1);
        const klen = b.write(key, p + 9, 'utf8');
        b.writeUInt32LE(klen, p + 5);
        p += 9 + klen;
      }
    }
    b.writeUInt32LE(p - 8, 0);
    b.writeUInt32LE(crc32(b, 8, p), 4);
    try {
      let off = 0;
      while (off < p) off += writeSync(this.fd, b, off, p - off);
      if (this.sync) fdatasyncSync(this.fd);
    } catch (e) {
      // a half-written frame would hide every later one from the replay: cut it off (making
      // a file shorter needs no space)
      try {
        ftruncateSync(this.fd, this.size);
      } catch {
        // the replay stops at the torn frame: no later frame may follow it in this file
        this.broken = true;
      }
      throw e;
    }
    this.size += p;
  }

  close(): void {
    closeSync(this.fd);
  }
}

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

function crc32(b: Buffer, start: number, end: number): number {
  let c = -1;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
