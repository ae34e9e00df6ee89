// One process per store. LevelDB's own LOCK is an fcntl lock on a file that anyone who may
// write the directory can delete, and a second opener then gets the same database: two writers
// corrupt it. So every opener (qgreyd, qgreyctl working directly, qgreyd --repair) also holds
// <statedir>/qgreyd.pid, created with O_EXCL|O_NOFOLLOW and holding "PID STARTTIME PROGRAM",
// STARTTIME being field 22 of /proc/PID/stat. A file whose process is gone, or whose pid now
// belongs to another process (the start time differs), is stale and taken over, so a daemon
// killed with SIGKILL restarts without help. Only a process holding qgreyd.pid.takeover (made
// the same way) deletes a stale file, after reading it again, so two processes starting at once
// cannot each delete the file the other just made.
//
// Limits: liveness is judged in this host's (and this PID namespace's) /proc, so two
// containers with separate PID namespaces sharing one state directory are not kept apart by
// this file (LevelDB's LOCK still is, unless deleted); neither are two hosts on NFS.
import { closeSync, constants, fstatSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';

export const PID_FILE = 'qgreyd.pid';
/** A pid file without readable content younger than this is taken to be still being written. */
const FRESH_MS = 10_000;

export interface Holder {
  pid: number;
  program: string;
}

export interface LockHooks {
  /** called when a stale pid file was found, before taking it over (tests widen the race) */
  beforeTakeover?: () => void;
}

export type LockResult = { ok: true; lock: StoreLock } | { ok: false; holder: Holder | null; reason: string };

export class StoreLock {
  private released = false;

  private constructor(readonly path: string, private readonly content: string) {}

  /** Takes the store's pid file, or says who holds it. Throws (with an errno code) only when
   *  the directory cannot be used at all. */
  static acquire(dir: string, program = defaultProgram(), hooks: LockHooks = {}): LockResult {
    const path = join(dir, PID_FILE);
    const content = `${process.pid} ${processStart(process.pid) ?? '-'} ${program.replace(/\s/g, '_')}\n`;
    // rounds: each either takes the file, finds a live holder, or clears a stale one (or waits
    // a little for another process clearing it)
    for (let round = 0; round < 50; round++) {
      try {
        closeSync(createExclusive(path, content));
        return { ok: true, lock: new StoreLock(path, content) };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const seen = readPidFile(path);
        if (seen === null) continue; // gone meanwhile
        if (seen.kind === 'symlink') return { ok: false, holder: null, reason: `${path} is a symbolic link, which qgreyd never creates; remove it` };
        if (seen.kind === 'unreadable') return { ok: false, holder: null, reason: `cannot read ${path} (${seen.code}); if no qgreyd or qgreyctl uses this directory, delete it` };
        const holder = parse(seen.text);
        if (holder === null ? seen.ageMs < FRESH_MS : isAlive(holder)) {
          return { ok: false, holder: holder === null ? null : { pid: holder.pid, program: holder.program }, reason: 'held' };
        }
        hooks.beforeTakeover?.();
        if (!clearStale(path, seen.text, content)) pause(20);
      }
    }
    return { ok: false, holder: null, reason: `${path} keeps changing; another process is starting on this directory` };
  }

  /** Removes the pid file if it is still ours. */
  release(): void {
    if (this.released) return;
    this.released = true;
    const seen = readPidFile(this.path);
    if (seen?.kind === 'text' && seen.text === this.content) {
      try {
        unlinkSync(this.path);
      } catch {
        // gone already
      }
    }
  }
}

function defaultProgram(): string {
  return basename(process.argv[1] ?? 'node').replace(/\.js$/, '');
}

interface Parsed {
  pid: number;
  start: string;
  program: string;
}

function parse(text: string): Parsed | null {
  const m = /^(\d+) (\d+|-) (\S+)\n$/.exec(text);
  if (!m) return null;
  return { pid: Number(m[1]), start: m[2], program: m[3] };
}

/** The process's start time in clock ticks after boot (field 22 of /proc/PID/stat), or null
 *  when there is no such process visible here. */
export function processStart(pid: number): string | null {
  let text: string;
  try {
    const fd = openSync(`/proc/${pid}/stat`, 'r');
    try {
      const buf = Buffer.alloc(4096);
      text = buf.toString('latin1', 0, readSync(fd, buf, 0, buf.length, 0));
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
  // the command name (field 2) is in parentheses and may hold spaces or parentheses itself
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null;
}

function isAlive(h: Parsed): boolean {
  const start = processStart(h.pid);
  if (start !== null) return h.start === '-' || start === h.start;
  // not visible in /proc (hidepid, or no /proc): only a signal probe can tell, without the
  // start time; EPERM means it exists
  try {
    process.kill(h.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

type Seen = { kind: 'text'; text: string; ageMs: number } | { kind: 'symlink' } | { kind: 'unreadable'; code: string };

function readPidFile(path: string): Seen | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') return { kind: 'symlink' };
    return { kind: 'unreadable', code };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { kind: 'unreadable', code: 'not a regular file' };
    const buf = Buffer.alloc(256);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return { kind: 'text', text: buf.toString('latin1', 0, n), ageMs: Date.now() - st.mtimeMs };
  } finally {
    closeSync(fd);
  }
}

/** Creates path with O_EXCL|O_NOFOLLOW, mode 0600, holding content; returns the open fd. */
function createExclusive(path: string, content: string): number {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, content);
  } catch (e) {
    // an empty file would block the next start for FRESH_MS
    closeSync(fd);
    unlinkSync(path);
    throw e;
  }
  return fd;
}

function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Deletes the stale pid file if it still holds staleText, holding the takeover file while
 *  doing so; false when another process holds the takeover file (a dead holder's is removed,
 *  for the next round). */
function clearStale(path: string, staleText: string, content: string): boolean {
  const takeover = `${path}.takeover`;
  try {
    closeSync(createExclusive(takeover, content));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const seen = readPidFile(takeover);
    if (seen?.kind === 'text') {
      const h = parse(seen.text);
      if (h === null ? seen.ageMs >= FRESH_MS : !isAlive(h)) {
        try {
          unlinkSync(takeover);
        } catch {
          // gone already
        }
      }
    }
    return false;
  }
  try {
    const now = readPidFile(path);
    if (now?.kind === 'text' && now.text === staleText) unlinkSync(path);
  } finally {
    unlinkSync(takeover);
  }
  return true;
}
