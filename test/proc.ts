// The one /proc reader of the tests: a process's status fields (VmRSS, Uid, Groups, ...), its
// state and parent, its command line.
import { readdirSync, readFileSync } from 'node:fs';

/** /proc/PID/status as name -> value (the text after the colon, trimmed). Throws, naming the
 *  pid, when the process is gone. */
export function procStatus(pid: number): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    throw new Error(`process ${pid} is gone`);
  }
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** A "1234 kB" field of procStatus as a number of kB. */
export function kb(status: Record<string, string>, field: string): number {
  return Number(/^(\d+)/.exec(status[field] ?? '')?.[1] ?? NaN);
}

/** /proc/PID/stat's state letter and parent pid, or null when the process is gone. */
export function procStat(pid: number): { state: string; ppid: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // pid (comm) state ppid ...; comm may hold spaces and parentheses
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0], ppid: Number(fields[1]) };
}

/** /proc/PID/cmdline as its arguments (latin1: an argument is bytes). */
export function procCmdline(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').slice(0, -1);
}

/** The pids of every process /proc lists. */
export function procPids(): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
}
