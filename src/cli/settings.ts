// qgreyd's settings, each defined once: its flag, its file in the service's env/ directory,
// its unit, its default and what qgreyd-conf writes. The argument parser takes the numeric
// defaults from here, qgreyd-conf writes env/ from here, and test/unit/settings.test.ts checks
// the rest against this table: --help, the run script (supervise/qgreyd/run), the README's
// options table and the env/ table of docs/operations.md. A new setting is a row here first.

export interface Setting {
  /** the long flag without its dashes, or the positional argument's name */
  readonly name: string;
  /** -t; absent for long-only flags */
  readonly short?: string;
  /** ipaddr and statedir are arguments, not flags */
  readonly positional?: true;
  /** a flag without a value (--sync): its env/ file is on unless empty, 0 or no */
  readonly boolean?: true;
  /** the file in env/ that the run script turns into the flag */
  readonly env: string;
  /** the value's unit as --help and the README name it */
  readonly unit?: string;
  /** the default when the flag is not given, for the numbers --help and the README state */
  readonly default?: number;
  /** what qgreyd-conf writes into env/; '' is the default. IP, PORT and USER come from its
   *  arguments. */
  readonly conf: string;
  /** the run script passes it in this environment variable, not as a flag: it may hold a
   *  password, and ps shows every process's arguments */
  readonly environment?: string;
}

export const SETTINGS = [
  { name: 'ipaddr', positional: true, env: 'IP', conf: '' },
  { name: 'port', positional: true, env: 'PORT', default: 1999, conf: '' },
  { name: 'user', short: 'u', env: 'USER', conf: '' },
  { name: 'whitelist', short: 'w', env: 'WHITELIST', conf: './whitelist' },
  { name: 'statedir', positional: true, env: 'STATE', conf: './data' },
  { name: 'timeout', short: 't', env: 'TIMEOUT_DAYS', unit: 'days', default: 7, conf: '7' },
  { name: 'grey-window', short: 'g', env: 'GREY_HOURS', unit: 'hours', default: 12, conf: '12' },
  { name: 'min-resend', short: 'm', env: 'MIN_RESEND_MINUTES', unit: 'minutes', default: 5, conf: '5' },
  { name: 'sweep', short: 's', env: 'SWEEP_MINUTES', unit: 'minutes', default: 10, conf: '10' },
  { name: 'debug', short: 'd', boolean: true, env: 'DEBUG', conf: '' },
  { name: 'sync', boolean: true, env: 'SYNC', conf: '' },
  // empty: loopback only when every listen address is loopback
  { name: 'allow', env: 'ALLOW', conf: '' },
  // accepted and ignored: the local store keeps every record in its index
  { name: 'cache-size', env: 'CACHE_SIZE', default: 100_000, conf: '' },
  // the index's bound: 20M records, 2^25 slots, 402 MB
  { name: 'max-records', env: 'MAX_RECORDS', unit: 'records', default: 20_000_000, conf: '' },
  // empty: fail open (01 05) when a request cannot be decided; 1: defer (00 04)
  { name: 'fail-closed', boolean: true, env: 'FAIL_CLOSED', conf: '' },
  // the policy options: empty keeps greydaemon's keys and verdicts (qgreyd-conf recommends values)
  { name: 'ipv4-prefix', env: 'IPV4_PREFIX', default: 32, conf: '' },
  { name: 'ipv6-prefix', env: 'IPV6_PREFIX', default: 128, conf: '' },
  { name: 'normalise-senders', boolean: true, env: 'NORMALISE_SENDERS', conf: '' },
  { name: 'exceptions', env: 'EXCEPTIONS', conf: '' },
  { name: 'max-pending', env: 'MAX_PENDING', unit: 'triplets', conf: '' },
  // empty: no metrics server; a port (on loopback) or HOST:PORT serves /metrics
  { name: 'metrics', env: 'METRICS', conf: '' },
  // empty: LevelDB in statedir; a redis:// URL shares the records with other MX servers
  { name: 'store', env: 'STORE', environment: 'QGREYD_STORE', conf: '' },
] as const satisfies readonly Setting[];

export type SettingName = (typeof SETTINGS)[number]['name'];

export function setting(name: SettingName): Setting {
  return SETTINGS.find((s) => s.name === name)!;
}

/** The default of a numeric setting. */
export function defaultOf(name: SettingName): number {
  const d = setting(name).default;
  if (d === undefined) throw new Error(`setting ${name} has no numeric default`);
  return d;
}
