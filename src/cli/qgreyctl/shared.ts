// What qgreyctl's commands share: flag parsing, the state directory, the settings of a stopped
// daemon, opening the store (through the daemon or directly). Output goes through the
// command's CtlIo (io.ts).
import { existsSync, statSync } from 'node:fs';
import type { Stats as FsStats } from 'node:fs';
import minimist from 'minimist';
import { CtlError, DEFAULT_WAIT_MS, openBackend, type Backend } from '../../admin/client.js';
import { settingsFrom, type Settings } from '../../policy.js';
import { normaliseIp } from '../../ip.js';
import { parseStoreUrl, StoreUrlError, type RedisTarget } from '../../store/redis-url.js';
import { storeDirFor } from '../state-path.js';
import { DEFAULT_STATE, keepNegativeValues, UsageError } from '../args.js';
import { defaultOf } from '../settings.js';
import { readSettings } from '../recorded-settings.js';

import { EXIT_PERMANENT, last } from '../common.js';
import type { CtlContext, CtlIo } from './io.js';

/** Thrown for bad usage; `exit` 100. */
export class Usage extends UsageError {}

// ---- arguments ----

export interface Parsed {
  a: minimist.ParsedArgs;
  pos: string[];
}

export function parse(cmd: string, argv: string[], spec: { string?: string[]; boolean?: string[]; alias?: Record<string, string> }): Parsed {
  const strings = [...(spec.string ?? []), 'state', 'store', '_'];
  // --timeout is days (the daemon's -t) wherever it is taken; a wait in seconds is --wait
  const known0 = new Set([...strings, ...Object.keys(spec.alias ?? {}), ...Object.values(spec.alias ?? {})]);
  if (!known0.has('timeout') && argv.some((x) => /^--timeout(=|$)/.test(x))) {
    throw new Usage(`${cmd}: --timeout is not an option here (it means the daemon's -t, in days); to say how many seconds to wait for an answer, give --wait SECONDS`);
  }
  argv = keepNegativeValues(argv, [...strings, ...Object.values(spec.alias ?? {})]);
  const bools = [...(spec.boolean ?? []), 'help'];
  const known = new Set<string>([...strings, ...bools, ...Object.keys(spec.alias ?? {}), ...Object.values(spec.alias ?? {}), 'h']);
  const unknown: string[] = [];
  const a = minimist(argv, {
    string: strings,
    boolean: bools,
    alias: { ...spec.alias, h: 'help' },
    unknown: (arg) => {
      if (arg.startsWith('-') && arg.length > 1) {
        const name = arg.replace(/^--?/, '').replace(/=.*$/, '');
        if (!known.has(name)) {
          unknown.push(arg);
          return false;
        }
      }
      return true;
    },
  });
  if (unknown.length > 0) throw new Usage(`${cmd}: unknown option ${unknown[0]}; see qgreyctl ${cmd} --help`);
  return { a, pos: (a._ as unknown[]).map(String) };
}

export function fileKind(st: FsStats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a directory';
}

export function stateDir(a: minimist.ParsedArgs, globalState: string | undefined): string {
  const s = last(a.state) ?? globalState ?? DEFAULT_STATE;
  if (s === '') throw new Usage('--state: an empty path; give the daemon\'s state directory');
  // the same path as qgreyd's: a greydaemon save file stands for the store made from it, which
  // only qgreyd may create (a store made first by qgreyctl would stop qgreyd's import)
  const { dir, savefile } = storeDirFor(s);
  if (savefile !== null && !existsSync(dir)) {
    throw new CtlError(`--state ${s}: a greydaemon save file that qgreyd has not imported yet; start qgreyd with it (it imports it into ${dir}), or give a state directory`, EXIT_PERMANENT);
  }
  // a path that cannot be a directory is the admin's mistake, not a daemon to wait for
  let st: FsStats | undefined;
  try {
    st = statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw new CtlError(`--state ${s}: a part of that path is a file, not a directory; give the daemon's state directory`, EXIT_PERMANENT);
  }
  if (st !== undefined && !st.isDirectory()) {
    throw new CtlError(`--state ${s}: ${dir} is ${fileKind(st)}, not a directory; give the daemon's state directory (qgreyd's last argument)`, EXIT_PERMANENT);
  }
  return dir;
}

export const SETTINGS_SPEC = { string: ['t', 'g', 'm', 'wait'], alias: { t: 'timeout', g: 'grey-window', m: 'min-resend' } };

/** Where the settings for a stopped daemon came from, as stats says it. */
export type SettingsSource = 'flags' | 'recorded' | 'defaults';

/** The direct-mode settings: -t/-g/-m where given, else what qgreyd recorded in the state
 *  directory at its last start, else qgreyd's defaults; which flags were given. */
export function settingsArgs(cmd: string, a: minimist.ParsedArgs, dir: string | null, io: CtlIo): { settings: Settings; given: string[]; source: SettingsSource } {
  const recorded = dir === null ? null : readSettings(dir);
  if (typeof recorded === 'string') io.err(`qgreyctl: ${cmd}: warning: ${recorded}; using -t/-g/-m or the defaults\n`);
  const fromFile = recorded !== null && typeof recorded !== 'string';
  const v: Record<string, number> = fromFile ? { t: recorded.timeoutDays, g: recorded.greyHours, m: recorded.minResendMinutes } : { t: defaultOf('timeout'), g: defaultOf('grey-window'), m: defaultOf('min-resend') };
  const given: string[] = [];
  for (const [flag, name, unit] of [
    ['t', 'timeout', 'days'],
    ['g', 'grey-window', 'hours'],
    ['m', 'min-resend', 'minutes'],
  ] as const) {
    const raw = last(a[flag]);
    if (raw === undefined) continue;
    const n = raw.trim() === '' ? NaN : Number(raw);
    if (!Number.isFinite(n) || n < 0 || (flag !== 'm' && n === 0)) {
      throw new Usage(`${cmd}: -${flag} (--${name}): ${JSON.stringify(raw)} is not a number of ${unit}; give the daemon's value, e.g. -${flag} ${v[flag]}`);
    }
    v[flag] = n;
    given.push(`-${flag}`);
  }
  return { settings: settingsFrom(v.t, v.g, v.m), given, source: given.length > 0 ? 'flags' : fromFile ? 'recorded' : 'defaults' };
}

/** --store URL (or QGREYD_STORE): the Redis of a qgreyd run with --store, for when it is stopped. */
function storeArg(a: minimist.ParsedArgs, env: CtlIo['env']): RedisTarget | null {
  const text = last(a.store) ?? env.QGREYD_STORE ?? '';
  if (text === '') return null;
  try {
    return parseStoreUrl(text);
  } catch (e) {
    if (e instanceof StoreUrlError) throw new Usage(e.message);
    throw e;
  }
}

/** --wait SECONDS: how long a command waits for each answer from a running daemon. */
export function waitArg(cmd: string, a: minimist.ParsedArgs): number {
  const raw = last(a.wait);
  if (raw === undefined) return DEFAULT_WAIT_MS;
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > 86400) {
    throw new Usage(`${cmd}: --wait ${JSON.stringify(raw)} is not a number of seconds (more than 0, at most 86400); e.g. --wait ${DEFAULT_WAIT_MS / 1000}`);
  }
  return n * 1000;
}

export function settingsText(s: Settings): string {
  return `timeout ${s.timeout / 86400}d, grey-window ${s.greyWindow / 3600}h, min-resend ${s.minResend / 60}m`;
}

/** Opens the store (through the running daemon, else directly) for fn, and closes it after;
 *  fn learns where the direct-mode settings came from (stats says it). */
export async function withBackend<T>(
  cmd: string,
  a: minimist.ParsedArgs,
  ctx: CtlContext,
  create: boolean,
  fn: (b: Backend, source: SettingsSource) => Promise<T>,
): Promise<T> {
  const dir = stateDir(a, ctx.globalState);
  const { settings, given, source } = settingsArgs(cmd, a, dir, ctx.io);
  const backend = await openBackend({ stateDir: dir, settings, create, waitMs: waitArg(cmd, a), store: storeArg(a, ctx.io.env), mayChangeUser: ctx.io.mayChangeUser });
  if (backend.mode === 'daemon' && given.length > 0) {
    ctx.io.err(`qgreyctl: ${cmd}: the daemon is running, so its own settings apply (${settingsText(backend.settings)}); ${given.join(' ')} ignored\n`);
  }
  try {
    return await fn(backend, source);
  } finally {
    await backend.close();
  }
}

export function requireIp(cmd: string, text: string | undefined): string {
  if (text === undefined) throw new Usage(`${cmd}: needs a client IP address; see qgreyctl ${cmd} --help`);
  const n = normaliseIp(text);
  if (n === null) throw new Usage(`${cmd}: ${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  return n.ip;
}

export function bounce(sender: string): string {
  return sender === '<>' ? '' : sender;
}

// ---- time ----

export function iso(t: number): string {
  return new Date(t * 1000).toISOString().replace('.000Z', 'Z');
}

/** 3d4h, 2h5m, 10m5s, 42s; negative ages (clock skew) as "in 5s". */
export function age(seconds: number): string {
  if (seconds < 0) return `in ${age(-seconds)}`;
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s % 60}s`;
  return `${s}s`;
}

export { fileLines } from '../common.js';
