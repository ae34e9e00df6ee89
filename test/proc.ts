// The one /proc reader of the tests: a process's status fields (VmRSS, Uid, Groups, ...).
import { readFileSync } from 'node:fs';

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
