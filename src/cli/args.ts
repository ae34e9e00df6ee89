// The qgreyd command line: greydaemon's flags and positional arguments, plus long names.
import { isIP } from 'node:net';
import minimist from 'minimist';
import type { ListenSpec } from '../daemon/listen.js';
import { parsePrefix, type Prefixes } from '../network.js';
import { parseStoreUrl, StoreUrlError, type RedisTarget } from '../store/redis-url.js';
import { parseRange } from '../whitelist.js';
import { QgreydError } from '../errors.js';
import { all, last } from './common.js';
import { defaultOf, setting } from './settings.js';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = defaultOf('port');
export const DEFAULT_STATE = setting('statedir').conf;

export interface Options {
  debug: boolean;
  user: string | null;
  /** -w, repeatable: files, or directories of files */
  whitelist: string[];
  /** sweep interval, minutes (-s) */
  sweepMinutes: number;
  /** known-good lifetime, days (-t) */
  timeoutDays: number;
  /** grey window, hours (-g) */
  greyHours: number;
  /** minimum resend delay, minutes (-m) */
  minResendMinutes: number;
  sync: boolean;
  /** --allow: client networks that may query; empty: the default for the listen address */
  allow: string[];
  /** --cache-size: accepted for old run scripts; the local store keeps every record in its index */
  cacheSize: number;
  /** --max-records: the most records the store's index holds; past it new records are refused */
  maxRecords: number;
  /** --fail-closed: a request that cannot be decided is deferred (00 04), not accepted (01 05) */
  failClosed: boolean;
  /** --ipv4-prefix / --ipv6-prefix: records keyed by the client's network (32 / 128: the address) */
  prefixes: Prefixes;
  /** --normalise-senders: per-message tags out of the sender in the key */
  normaliseSenders: boolean;
  /** --exceptions FILE: recipients never greylisted */
  exceptions: string | null;
  /** --max-pending N: stored triplets per client network before new ones are refused */
  maxPending: number | null;
  /** --store (or QGREYD_STORE): the shared Redis store; null: the LevelDB store in stateDir */
  store: RedisTarget | null;
  /** every listen address, in the order given */
  listen: ListenSpec[];
  /** --metrics: where to serve /metrics, or null for no metrics server */
  metrics: { host: string; port: number } | null;
  /** the first listen address */
  host: string;
  port: number;
  stateDir: string;
}

export const DEFAULT_CACHE_SIZE = defaultOf('cache-size');
export const DEFAULT_MAX_RECORDS = defaultOf('max-records');

export type Parsed =
  | { kind: 'run'; options: Options }
  | { kind: 'repair'; stateDir: string }
  | { kind: 'help' }
  | { kind: 'version' };

/** Bad usage: a flag, a value or an argument; always permanent. */
export class UsageError extends QgreydError {
  constructor(message: string) {
    super('QGREYD_USAGE', message);
  }
}

export const USAGE = `usage: qgreyd [-d] [-u user] [-w whitelist] [-s minutes] [-t days] [-g hours] [-m minutes]
              [--sync] [--allow CIDR]... [--max-records N] [--fail-closed] [--store URL]
              [--ipv4-prefix N] [--ipv6-prefix N] [--normalise-senders]
              [--exceptions FILE] [--max-pending N]
              [--metrics [HOST:]PORT]
              [ipaddr[:port] [statedir]]
       qgreyd --repair [statedir]

  ipaddr[:port]  address to listen on (default ${DEFAULT_HOST}:${DEFAULT_PORT});
                 IPv6 as ::1 or [::1]:1999; port 0 picks a free port. Several
                 separated by commas: 127.0.0.1,192.0.2.25. 0.0.0.0 means every IPv4
                 address of this host, :: every IPv4 and IPv6 address (re-read on SIGHUP)
  statedir       LevelDB state directory, created if missing (default ${DEFAULT_STATE}); a
                 greydaemon save file here is imported once into statedir.qgreyd.
                 With --store it holds only the admin socket and the pid file

  -t, --timeout DAYS          a known-good IP stays known this long after its last use (${defaultOf('timeout')})
  -g, --grey-window HOURS     latest acceptable retry after first sight (${defaultOf('grey-window')})
  -m, --min-resend MINUTES    earliest acceptable retry (${defaultOf('min-resend')})
  -s, --sweep MINUTES         how often dead records are deleted (${defaultOf('sweep')})
  -w, --whitelist FILE|DIR    client addresses and ranges that are never greylisted
                              (repeatable; a directory: every file in it)
  -u, --user USER             after binding, run as this user (uid, gid and groups)
  -d, --debug                 log each triplet's outcome, malformed datagrams in hex,
                              and when each part of the start-up ended
      --sync                  fsync every write (survive power loss, not only a crash)
      --allow CIDR            client networks that may query (repeatable; IPv4 or IPv6
                              ranges or addresses, several per value separated by blanks
                              or commas). Default: loopback only when every listen
                              address is loopback, everyone (with a warning) otherwise
      --max-records N         records the store holds at most (${DEFAULT_MAX_RECORDS}); past
                              it a request that would add one is not decided
      --cache-size N          ignored (every record is in memory); kept for old scripts
      --fail-closed           when a request cannot be decided (store unavailable,
                              overload, shutdown) answer defer (00 04), not accept (01 05)
      --ipv4-prefix N         greylist IPv4 clients by their /N network (32: the address)
      --ipv6-prefix N         greylist IPv6 clients by their /N network (128: the address)
      --normalise-senders     take per-message tags (BATV, SRS, +ext, VERP numbers) out
                              of the sender before keying
      --exceptions FILE       recipients never greylisted (postmaster@, @domain, ...);
                              re-read on SIGHUP
      --max-pending N         a client network with N stored triplets gets its new ones
                              deferred without storing them (00 05)
      --metrics [HOST:]PORT   serve live counters in the Prometheus text format at
                              http://HOST:PORT/metrics (HOST defaults to 127.0.0.1;
                              [::1]:9419 for IPv6; port 0 picks a free port)
      --store URL             keep the records in Redis, shared by several qgreyd:
                              redis://[user:password@]host:port[/db], rediss://... (TLS),
                              redis-cluster://host:port[,host:port...]. Default: the
                              QGREYD_STORE environment variable (keeps a password out of
                              ps), else LevelDB in statedir
      --repair                rebuild a corrupt store with LevelDB's repair, then exit
      --help, --version
Values may be fractional: -m 0.05 is three seconds.`;

const NUMERIC: Array<[flag: string, name: string, unit: string, min: number, allowZero: boolean]> = [
  ['s', 'sweep', 'minutes', 0, false],
  ['t', 'timeout', 'days', 0, false],
  ['g', 'grey-window', 'hours', 0, false],
  ['m', 'min-resend', 'minutes', 0, true],
];

const STRING_FLAGS = ['u', 'w', 's', 't', 'g', 'm', 'allow', 'cache-size', 'max-records', 'ipv4-prefix', 'ipv6-prefix', 'exceptions', 'max-pending', 'metrics', 'store'];
const ALIASES = { d: 'debug', u: 'user', w: 'whitelist', s: 'sweep', t: 'timeout', g: 'grey-window', m: 'min-resend' };

export function parseArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): Parsed {
  const unknown: string[] = [];
  const a = minimist(keepNegativeValues(argv, [...STRING_FLAGS, ...Object.values(ALIASES)]), {
    string: STRING_FLAGS,
    boolean: ['d', 'help', 'version', 'sync', 'repair', 'fail-closed', 'normalise-senders'],
    alias: ALIASES,
    unknown: (arg) => {
      if (arg.startsWith('-') && arg !== '-' && !/^-\d/.test(arg)) {
        unknown.push(arg);
        return false;
      }
      return true;
    },
  });
  if (unknown.length > 0) throw new UsageError(`unknown option ${unknown[0]}; see qgreyd --help`);
  if (a.help) return { kind: 'help' };
  if (a.version) return { kind: 'version' };
  if (a.repair) {
    const pos = a._.map(String);
    if (pos.length > 1) throw new UsageError(`--repair takes one state directory, not ${pos.length} arguments`);
    const dir = pos[0] ?? DEFAULT_STATE;
    if (dir === '') throw new UsageError('--repair: an empty path; give the state directory');
    return { kind: 'repair', stateDir: dir };
  }

  const num: Record<string, number> = { s: defaultOf('sweep'), t: defaultOf('timeout'), g: defaultOf('grey-window'), m: defaultOf('min-resend') };
  for (const [flag, name, unit, , allowZero] of NUMERIC) {
    const raw = last(a[flag]);
    if (raw === undefined) continue;
    const v = raw.trim() === '' ? NaN : Number(raw);
    if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
      throw new UsageError(`-${flag} (--${name}): ${JSON.stringify(raw)} is not a ${allowZero ? '' : 'positive '}number of ${unit}; give e.g. -${flag} ${num[flag]}`);
    }
    num[flag] = v;
  }
  if (num.g * 60 <= num.m) {
    throw new UsageError(`-g ${num.g} hours is not longer than -m ${num.m} minutes, so no retry could ever pass; make the grey window longer than the minimum resend time`);
  }
  const user = last(a.u);
  if (user !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(user)) {
    throw new UsageError(`-u (--user): ${JSON.stringify(user)} is not a user name`);
  }
  const whitelist = all(a.w);
  if (whitelist.includes('')) throw new UsageError('-w (--whitelist): needs a file or directory name');
  const prefixes = { v4: 32, v6: 128 };
  for (const family of [4, 6] as const) {
    const raw = last(a[`ipv${family}-prefix`]);
    if (raw === undefined) continue;
    const p = parsePrefix(raw, family);
    if (typeof p === 'string') throw new UsageError(`--ipv${family}-prefix: ${p}`);
    if (family === 4) prefixes.v4 = p;
    else prefixes.v6 = p;
  }
  const exceptions = last(a.exceptions);
  if (exceptions === '') throw new UsageError('--exceptions: needs a file name');
  let maxPending: number | null = null;
  const rawPending = last(a['max-pending']);
  if (rawPending !== undefined) {
    if (!/^\d{1,9}$/.test(rawPending.trim()) || Number(rawPending.trim()) === 0) {
      throw new UsageError(`--max-pending: ${JSON.stringify(rawPending)} is not a positive whole number of triplets; give e.g. --max-pending 5000`);
    }
    maxPending = Number(rawPending.trim());
  }

  const allow = parseAllow(a.allow);
  let cacheSize = DEFAULT_CACHE_SIZE;
  const rawCache = last(a['cache-size']);
  if (rawCache !== undefined) {
    if (!/^\d{1,9}$/.test(rawCache.trim())) {
      throw new UsageError(`--cache-size: ${JSON.stringify(rawCache)} is not a whole number of records; give e.g. --cache-size ${DEFAULT_CACHE_SIZE}`);
    }
    cacheSize = Number(rawCache.trim());
  }
  let maxRecords = DEFAULT_MAX_RECORDS;
  const rawMax = last(a['max-records']);
  if (rawMax !== undefined) {
    if (!/^\d{1,10}$/.test(rawMax.trim()) || Number(rawMax.trim()) < 1 || Number(rawMax.trim()) > 1_000_000_000) {
      throw new UsageError(`--max-records: ${JSON.stringify(rawMax)} is not a whole number of records from 1 to 1000000000; give e.g. --max-records ${DEFAULT_MAX_RECORDS}`);
    }
    maxRecords = Number(rawMax.trim());
  }

  const metrics = parseMetrics(last(a.metrics));
  const storeText = last(a.store) ?? env.QGREYD_STORE ?? '';
  let store: RedisTarget | null = null;
  if (storeText !== '') {
    try {
      store = parseStoreUrl(storeText);
    } catch (e) {
      if (e instanceof StoreUrlError) throw new UsageError(e.message);
      throw e;
    }
  }

  const pos = a._.map(String);
  if (pos.length > 2) throw new UsageError(`too many arguments (${pos.slice(2).join(' ')}); expected [ipaddr[:port] [statedir]]`);
  const listen = parseListenList(pos[0] ?? '');
  const { host, port } = listen[0];
  const stateDir = pos[1] ?? DEFAULT_STATE;
  if (stateDir === '') throw new UsageError('statedir: an empty path; give a directory');

  return {
    kind: 'run',
    options: {
      debug: Boolean(a.d),
      user: user ?? null,
      whitelist,
      prefixes,
      normaliseSenders: Boolean(a['normalise-senders']),
      exceptions: exceptions ?? null,
      maxPending,
      sweepMinutes: num.s,
      timeoutDays: num.t,
      greyHours: num.g,
      minResendMinutes: num.m,
      sync: Boolean(a.sync),
      allow,
      cacheSize,
      maxRecords,
      store,
      listen,
      failClosed: Boolean(a['fail-closed']),
      metrics,
      host,
      port,
      stateDir,
    },
  };
}

/** Every --allow value, split on blanks and commas (so an env file's list can be passed as
 *  one argument), each checked to be an address or range. */
function parseAllow(v: unknown): string[] {
  const values = v === undefined ? [] : Array.isArray(v) ? v.map(String) : [String(v)];
  const out: string[] = [];
  for (const value of values) {
    const items = value.split(/[\s,]+/).filter((x) => x !== '');
    if (items.length === 0) throw new UsageError('--allow: needs an address or range, e.g. --allow 127.0.0.1 or --allow 192.0.2.0/24');
    for (const item of items) {
      const r = parseRange(item);
      if (typeof r === 'string') throw new UsageError(`--allow: ${JSON.stringify(item)} ${r}`);
      out.push(item);
    }
  }
  return out;
}

/** --metrics [HOST:]PORT: a bare port is on loopback, so that turning metrics on never
 *  publishes them beyond this host by accident. */
export function parseMetrics(text: string | undefined): { host: string; port: number } | null {
  if (text === undefined) return null;
  const t = text.trim();
  const example = 'give e.g. --metrics 9419 (loopback) or --metrics 192.0.2.25:9419';
  if (t === '') throw new UsageError(`--metrics: needs a port or HOST:PORT; ${example}`);
  const spec = /^\d+$/.test(t) ? `${DEFAULT_HOST}:${t}` : t;
  if (!/:\d+$/.test(spec)) throw new UsageError(`--metrics: ${JSON.stringify(text)} has no port; ${example}`);
  try {
    return parseListen(spec);
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(`--metrics: ${e.message.replace(/^\w+: /, '')}`);
    throw e;
  }
}

/** minimist reads "-m -5" as -m without a value and a flag -5, so a negative number would be
 *  lost before it could be refused by name ("" is not a number). A value that looks like a
 *  negative number after a flag that takes a value is joined to it (--min-resend=-5). */
export function keepNegativeValues(argv: string[], valueFlags: readonly string[]): string[] {
  const takes = new Set(valueFlags);
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const m = /^--?([^=]+)$/.exec(arg);
    const next = argv[i + 1];
    if (m !== null && takes.has(m[1]) && (arg.startsWith('--') || m[1].length === 1) && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      out.push(`${arg.startsWith('--') ? '--' : '-'}${m[1]}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** ipaddr[:port][,ipaddr[:port]]...: several listen addresses separated by commas (or blanks,
 *  as an env file may hold them); none at all is the default address. */
export function parseListenList(text: string): ListenSpec[] {
  const items = text.split(/[\s,]+/).filter((x) => x !== '');
  return items.length === 0 ? [parseListen('')] : items.map(parseListen);
}

/** ipaddr[:port]: "", ":", "127.0.0.1", "127.0.0.1:2000", ":2000", "::1", "[::1]", "[::1]:2000". */
export function parseListen(text: string): { host: string; port: number } {
  let host: string;
  let portText = '';
  const bracket = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracket) {
    host = bracket[1];
    portText = bracket[2] ?? '';
  } else if ((text.match(/:/g) ?? []).length > 1) {
    host = text;
  } else {
    const colon = text.indexOf(':');
    host = colon >= 0 ? text.slice(0, colon) : text;
    portText = colon >= 0 ? text.slice(colon + 1) : '';
  }
  if (host === '') host = DEFAULT_HOST;
  if (isIP(host) === 0) {
    throw new UsageError(`ipaddr: ${JSON.stringify(host)} is not an IPv4 or IPv6 address; give e.g. 127.0.0.1, 127.0.0.1:1999 or [::1]:1999`);
  }
  let port = DEFAULT_PORT;
  if (portText !== '') {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
      throw new UsageError(`port: ${JSON.stringify(portText)} is not a port number (0 to 65535)`);
    }
    port = Number(portText);
  }
  return { host, port };
}
