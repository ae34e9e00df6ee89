#!/usr/bin/env node
// qgreyctl: the administrator's tool for qgreyd. Query the daemon, inspect and change its
// store (through the running daemon's admin socket, or directly when it is stopped), migrate
// from greydaemon, and report on the decision log.
// Exit codes: 0 success (accept, match), 1 a negative answer (defer, no match, nothing to
// forget), 100 permanent error (usage, bad file), 111 temporary error (no answer, locked).
import dgram from 'node:dgram';
import { once } from 'node:events';
import { createReadStream, existsSync, fstatSync, openSync, statSync, readFileSync, renameSync, unlinkSync, writeFileSync, type Stats as FsStats } from 'node:fs';
import { isIP } from 'node:net';
import minimist from 'minimist';
import { CtlError, daemonSettings, DEFAULT_WAIT_MS, openBackend, type Backend } from '../admin/client.js';
import type { LiveCounters } from '../metrics.js';
import { isDead, OpsError, shownSender, type DumpFilter, type Stats } from '../admin/ops.js';
import { formatSaveLine, parseSaveLine, type SaveRecord } from '../savefile.js';
import { unixNow } from '../greylist.js';
import { escapeField } from '../log/log.js';
import { settingsFrom, type Settings } from '../policy.js';
import { decodeReply, encodeRequest, isAccept, replyText, type Verdict } from '../protocol.js';
import { normaliseIp } from '../ip.js';
import { storeDirFor } from './state-path.js';
import { DEFAULT_RETRY, formatReport, ReportBuilder } from '../report/report.js';
import { formatHtml } from '../report/html.js';
import { StoreError } from '../store.js';
import { warningText, Whitelist, WhitelistError } from '../whitelist.js';
import { DEFAULT_STATE, keepNegativeValues, parseListen, UsageError } from './args.js';
import { readSettings, settingsPath } from './recorded-settings.js';
import { cmdSpfWhitelist, SPF_WHITELIST_HELP } from './qgreyctl/spf-whitelist.js';

const EXIT_OK = 0;
const EXIT_NO = 1;
const EXIT_PERMANENT = 100;
const EXIT_TEMPORARY = 111;

const GLOBAL_USAGE = `usage: qgreyctl [--state DIR] COMMAND [ARGS]

commands:
  query [--server IP:PORT] [--wait S] CLIENT-IP SENDER RCPT...   ask the daemon, as qmail-smtpd does
  dump [--json] [--ip IP] [--sender S] [--rcpt R] [--ips|--triplets] list stored records
  stats [--json]                                   counts, dead records, oldest/newest, disk use
  import [--skip-bad] [--dry-run] FILE             load a greydaemon save file
  export                                           write the store as a greydaemon save file
  whitelist check FILE IP                          does IP match the whitelist, and which line
  allow IP                                         mark IP known good from now
  forget IP [SENDER RCPT]                          delete IP's records, or one triplet
  report [--retry S] [--top N] [--json] [--html FILE] [LOGFILE...]  summarise the decision log
  spf-whitelist [-o FILE] [--resolver IP:PORT] DOMAIN... | -f LISTFILE
                                                   a whitelist from big senders' SPF records

  --state DIR   the daemon's state directory (default ${DEFAULT_STATE}); before or after COMMAND.
                A greydaemon save file qgreyd was given stands for the store made from it.
                When qgreyd runs, qgreyctl works through DIR/admin.sock; else it opens DIR itself.
  --wait S      (after COMMAND) seconds to wait for each answer from a running daemon
                (default ${DEFAULT_WAIT_MS / 1000}; query: for the UDP reply, default 3); no answer
                in time: exit 111. --timeout always means days (the daemon's -t).
  COMMAND --help shows a command's options.

exit codes: 0 done (accept, match); 1 a "no" (defer, no match, nothing to forget);
            100 permanent error (usage, unreadable file); 111 temporary (no answer, store locked)`;

const SETTINGS_HELP = `  -t, --timeout DAYS        the daemon's -t  } used only when the daemon is stopped, instead of
  -g, --grey-window HOURS   the daemon's -g  } the settings qgreyd recorded in DIR/qgreyd.settings
  -m, --min-resend MINUTES  the daemon's -m  } at its last start (or 7, 12, 5 without that file);
                                                a running daemon's own settings win`;

const HELP: Record<string, string> = {
  query: `usage: qgreyctl query [--server IP:PORT] [--wait SECONDS] CLIENT-IP SENDER RCPT...

Sends the request qmail-smtpd would send and prints the reply, e.g. "defer 00:01 new triplet".
SENDER '' or '<>' is a bounce. --server defaults to 127.0.0.1:1999; --wait, how long to wait
for the reply, to 3 seconds (qmail-smtpd's wait).
A whitelisted probe address makes this a health check that changes no state.
exit: 0 accept, 1 defer, 100 usage, 111 no answer within --wait.`,
  dump: `usage: qgreyctl dump [--json] [--ip IP] [--sender S] [--rcpt R] [--ips | --triplets] [--state DIR]

Lists known-good IPs and triplets with their times (ISO 8601 UTC and age), streaming.
--ip, --sender, --rcpt filter (exact address, or @domain); --sender '' (or '<>') is the bounce
sender, shown as <> (and "" in --json). --json prints one JSON object per line. Dead records (by the daemon's settings) are marked.
${SETTINGS_HELP}
exit: 0 done, 100 usage or bad state directory, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  stats: `usage: qgreyctl stats [--json] [--state DIR]

Counts of known-good IPs and triplets, how many are dead but not yet swept, the oldest and
newest times, and the store's size on disk. Through a running daemon, also its live counters
since it started (requests, malformed, refused, overload, store health, the last sweep; with
qgreyd --metrics, replies by reason and each whitelist entry's hits); --json: "live".
${SETTINGS_HELP}
exit: 0 done, 100 usage or bad state directory, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  import: `usage: qgreyctl import [--skip-bad] [--dry-run] SAVEFILE [--state DIR]

Loads a greydaemon save file ("I time ip" and "G time ip sender recipient" lines), keeping the
times. The whole file is read and checked first: if any line is unreadable, nothing is
imported (each bad line is named) unless --skip-bad imports the good lines. Records already
dead by the settings are skipped; a record the store holds with better evidence (a later
last-good time, an earlier live first-seen time) is kept. Importing twice changes nothing.
--dry-run checks the file and counts, and writes nothing. Stop greydaemon first: it rewrites
its save file every few minutes.
${SETTINGS_HELP}
exit: 0 imported, 100 usage, unreadable file or bad lines, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  export: `usage: qgreyctl export [--state DIR] > SAVEFILE

Writes every stored record as a greydaemon save file on standard output, streaming.
exit: 0 done, 100 usage or bad state directory, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  whitelist: `usage: qgreyctl whitelist check FILE IP

Says whether IP matches the whitelist FILE, and which line matches (the most specific).
Lines not in a clean form (greydaemon's sloppy forms) are read as greydaemon read them, and
each is named on stderr with how it was read, as qgreyd logs it.
exit: 0 match, 1 no match, 100 usage or a bad or unreadable file.`,
  allow: `usage: qgreyctl allow IP [--state DIR]

Marks IP known good from now on, as if one of its triplets had just passed: its mail is
accepted until it has been idle for the daemon's timeout (-t). Logged by a running daemon.
exit: 0 done, 100 usage, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  forget: `usage: qgreyctl forget IP [SENDER RCPT] [--state DIR]

Deletes IP's known-good record and all of its triplets; or, with SENDER and RCPT, that one
triplet (keyed as the daemon keys it: spaces removed, lower-cased, '' or '<>' for a bounce).
Logged by a running daemon.
exit: 0 deleted, 1 nothing to delete, 100 usage, 111 store locked, daemon gone, or no answer within --wait SECONDS (default 30)`,
  report: `usage: qgreyctl report [--retry SECONDS] [--top N] [--json] [--html FILE] [LOGFILE...]

Reads the daemon's log (multilog output, raw "@4000..." stamps or tai64nlocal times, or no
stamps; greydaemon's log too, so the weeks before the switch can be compared) from the files
in order, or standard input, and reports per deferred message
(sender, recipient): those that came back (accepted later, from any address) and their retry
delay; those that kept trying and never passed; those that never came back (likely spam);
the top deferred client networks (/24, /48) and sender domains; a histogram of retry delays.
A message counts as retried if it came back within --retry seconds (default ${DEFAULT_RETRY});
one deferred in the last --retry seconds of the log is "too recent to tell".
Without stamps, delays are unknown. --top limits each list (default 10). A per-day table
(UTC) ends the report. --html FILE also writes the report as one self-contained HTML page
with charts (decisions per hour and per day, retry delays, top deferred networks and
senders); --html - prints the page instead of the text.
exit: 0 done, 100 usage, unreadable log or unwritable FILE, 111 FILE could not be written
for lack of space.`,
  'spf-whitelist': SPF_WHITELIST_HELP,
};

/** Thrown for bad usage; `exit` 100. */
class Usage extends Error {}

function fail(message: string, code: number): never {
  process.stderr.write(`qgreyctl: ${message}\n`);
  process.exit(code);
}

// ---- output with flow control: a dump of millions of records must not pile up in memory ----

let stdoutBroken = false;
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  // a reader that went away (dump | head) is not our failure
  if (e.code === 'EPIPE') {
    stdoutBroken = true;
    process.exit(EXIT_OK);
  }
  fail(`standard output: ${e.message}`, EXIT_TEMPORARY);
});

async function write(text: string, encoding: BufferEncoding = 'utf8'): Promise<void> {
  if (stdoutBroken) return;
  if (!process.stdout.write(text, encoding)) await once(process.stdout, 'drain');
}

// ---- arguments ----

interface Parsed {
  a: minimist.ParsedArgs;
  pos: string[];
}

function parse(cmd: string, argv: string[], spec: { string?: string[]; boolean?: string[]; alias?: Record<string, string> }): Parsed {
  const strings = [...(spec.string ?? []), 'state', '_'];
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

function last(v: unknown): string | undefined {
  if (Array.isArray(v)) return last(v[v.length - 1]);
  if (v === undefined || v === null || v === false) return undefined;
  return String(v);
}

function fileKind(st: FsStats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a directory';
}

function stateDir(a: minimist.ParsedArgs, globalState: string | undefined): string {
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

const SETTINGS_SPEC = { string: ['t', 'g', 'm', 'wait'], alias: { t: 'timeout', g: 'grey-window', m: 'min-resend' } };

/** Where the settings for a stopped daemon came from, as stats says it. */
type SettingsSource = 'flags' | 'recorded' | 'defaults';

/** The direct-mode settings: -t/-g/-m where given, else what qgreyd recorded in the state
 *  directory at its last start, else qgreyd's defaults; which flags were given. */
function settingsArgs(cmd: string, a: minimist.ParsedArgs, dir: string | null): { settings: Settings; given: string[]; source: SettingsSource } {
  const recorded = dir === null ? null : readSettings(dir);
  if (typeof recorded === 'string') process.stderr.write(`qgreyctl: ${cmd}: warning: ${recorded}; using -t/-g/-m or the defaults\n`);
  const fromFile = recorded !== null && typeof recorded !== 'string';
  const v: Record<string, number> = fromFile ? { t: recorded.timeoutDays, g: recorded.greyHours, m: recorded.minResendMinutes } : { t: 7, g: 12, m: 5 };
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

/** --wait SECONDS: how long a command waits for each answer from a running daemon. */
function waitArg(cmd: string, a: minimist.ParsedArgs): number {
  const raw = last(a.wait);
  if (raw === undefined) return DEFAULT_WAIT_MS;
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > 86400) {
    throw new Usage(`${cmd}: --wait ${JSON.stringify(raw)} is not a number of seconds (more than 0, at most 86400); e.g. --wait ${DEFAULT_WAIT_MS / 1000}`);
  }
  return n * 1000;
}

/** what withBackend chose, for stats to say */
let settingsSource: SettingsSource = 'defaults';

function settingsText(s: Settings): string {
  return `timeout ${s.timeout / 86400}d, grey-window ${s.greyWindow / 3600}h, min-resend ${s.minResend / 60}m`;
}

async function withBackend<T>(
  cmd: string,
  a: minimist.ParsedArgs,
  globalState: string | undefined,
  create: boolean,
  fn: (b: Backend) => Promise<T>,
): Promise<T> {
  const dir = stateDir(a, globalState);
  const { settings, given, source } = settingsArgs(cmd, a, dir);
  settingsSource = source;
  const backend = await openBackend({ stateDir: dir, settings, create, waitMs: waitArg(cmd, a) });
  if (backend.mode === 'daemon' && given.length > 0) {
    process.stderr.write(`qgreyctl: ${cmd}: the daemon is running, so its own settings apply (${settingsText(backend.settings)}); ${given.join(' ')} ignored\n`);
  }
  try {
    return await fn(backend);
  } finally {
    await backend.close();
  }
}

function requireIp(cmd: string, text: string | undefined): string {
  if (text === undefined) throw new Usage(`${cmd}: needs a client IP address; see qgreyctl ${cmd} --help`);
  const n = normaliseIp(text);
  if (n === null) throw new Usage(`${cmd}: ${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  return n.ip;
}

function bounce(sender: string): string {
  return sender === '<>' ? '' : sender;
}

// ---- time ----

function iso(t: number): string {
  return new Date(t * 1000).toISOString().replace('.000Z', 'Z');
}

/** 3d4h, 2h5m, 10m5s, 42s; negative ages (clock skew) as "in 5s". */
function age(seconds: number): string {
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

// ---- commands ----

const VERDICT_TEXT: Record<Verdict, string> = {
  'whitelisted': 'whitelisted',
  'known-good': 'known-good IP',
  'passed': 'triplet passed',
  'verp-bounce': 'VERP bounce',
  'new': 'new triplet',
  'too-soon': 'retried too soon',
  'too-late': 'retried too late',
  'not-decided': 'not decided (accepted)',
  'not-decided-closed': 'not decided (deferred: fail closed)',
  'exception': 'every recipient is an exception',
  'pending-cap': 'new triplet over the pending cap (not stored)',
};

async function cmdQuery(argv: string[]): Promise<number> {
  const { a, pos } = parse('query', argv, { string: ['server', 'wait'] });
  if (a.help) return help('query');
  let server: { host: string; port: number };
  try {
    server = parseListen(last(a.server) ?? '');
  } catch (e) {
    if (e instanceof UsageError) throw new Usage(`query: --server: ${e.message.replace(/^\w+: /, '')}`);
    throw e;
  }
  const timeoutText = last(a.wait) ?? '3';
  const timeout = Number(timeoutText);
  if (timeoutText.trim() === '' || !Number.isFinite(timeout) || timeout <= 0 || timeout > 3600) {
    throw new Usage(`query: --wait ${JSON.stringify(timeoutText)} is not a number of seconds (more than 0, at most 3600); qmail-smtpd waits 3`);
  }
  if (pos.length < 2) throw new Usage('query: needs CLIENT-IP SENDER [RCPT...]; see qgreyctl query --help');
  const ip = requireIp('query', pos[0]);
  const msg = encodeRequest(ip, bounce(pos[1]), pos.slice(2));
  const where = isIP(server.host) === 6 ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
  if (server.port === 0) throw new Usage('query: --server needs a port other than 0');
  const reply = await new Promise<Buffer | null>((resolve, reject) => {
    const sock = dgram.createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    const timer = setTimeout(() => {
      sock.close();
      resolve(null);
    }, timeout * 1000);
    sock.on('message', (m) => {
      clearTimeout(timer);
      sock.close();
      resolve(m);
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      sock.close();
      reject(new CtlError(`query: ${where}: ${e.message}`, EXIT_TEMPORARY));
    });
    sock.send(msg, server.port, server.host);
  });
  if (reply === null) {
    // qmail-smtpd accepts the mail in this case: say so, a monitor wants to know
    throw new CtlError(`query: no answer from ${where} within ${timeout} s (qmail-smtpd would accept the mail unchecked); give --wait SECONDS to wait longer`, EXIT_TEMPORARY);
  }
  const v = decodeReply(reply);
  if (v === null) {
    const hex = [...reply.subarray(0, 2)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    const accept = reply.length > 0 && reply[0] !== 0;
    await write(`${accept ? 'accept' : 'defer'} ${hex} unknown reply (${reply.length} bytes)\n`);
    return accept ? EXIT_OK : EXIT_NO;
  }
  await write(`${isAccept(v) ? 'accept' : 'defer'} ${replyText(v)} ${VERDICT_TEXT[v]}\n`);
  return isAccept(v) ? EXIT_OK : EXIT_NO;
}

async function cmdDump(argv: string[], globalState: string | undefined): Promise<number> {
  const { a, pos } = parse('dump', argv, {
    string: ['ip', 'sender', 'rcpt', ...SETTINGS_SPEC.string],
    boolean: ['json', 'ips', 'triplets'],
    alias: SETTINGS_SPEC.alias,
  });
  if (a.help) return help('dump');
  if (pos.length > 0) throw new Usage(`dump: unexpected argument ${JSON.stringify(pos[0])}; filter with --ip, --sender, --rcpt`);
  if (a.ips && a.triplets) throw new Usage('dump: --ips and --triplets exclude each other; give neither for both');
  const filter: DumpFilter = {};
  const ip = last(a.ip);
  if (ip !== undefined) filter.ip = requireIp('dump --ip', ip);
  const sender = last(a.sender);
  if (sender !== undefined) filter.sender = bounce(sender);
  const rcpt = last(a.rcpt);
  if (rcpt !== undefined) filter.rcpt = rcpt;
  if (a.ips) filter.only = 'ip';
  if (a.triplets) filter.only = 'triplet';
  const json = Boolean(a.json);
  return withBackend('dump', a, globalState, false, async (b) => {
    for await (const records of b.dump(filter)) {
      const now = unixNow();
      let text = '';
      for (const r of records) text += (json ? dumpJson(r, now, b.settings) : dumpText(r, now, b.settings)) + '\n';
      await write(text);
    }
    return EXIT_OK;
  });
}

function dumpText(r: SaveRecord, now: number, s: Settings): string {
  const dead = isDead(r, now, s) ? ' dead' : '';
  if (r.kind === 'ip') return `known-good ${r.ip} last-good=${iso(r.time)} age=${age(now - r.time)}${dead}`;
  return `triplet ${r.ip} <${escapeField(shownSender(r.sender))}> <${escapeField(r.rcpt)}> first-seen=${iso(r.time)} age=${age(now - r.time)}${dead}`;
}

function dumpJson(r: SaveRecord, now: number, s: Settings): string {
  const shown = r.kind === 'triplet' ? { ...r, sender: shownSender(r.sender) } : r;
  return JSON.stringify({ ...shown, iso: iso(r.time), age: now - r.time, dead: isDead(r, now, s) });
}

async function cmdStats(argv: string[], globalState: string | undefined): Promise<number> {
  const { a, pos } = parse('stats', argv, { string: SETTINGS_SPEC.string, boolean: ['json'], alias: SETTINGS_SPEC.alias });
  if (a.help) return help('stats');
  if (pos.length > 0) throw new Usage(`stats: unexpected argument ${JSON.stringify(pos[0])}`);
  return withBackend('stats', a, globalState, false, async (b) => {
    const s = await b.stats();
    if (a.json) {
      await write(JSON.stringify({ state: b.stateDir, mode: b.mode, ...s }) + '\n');
      return EXIT_OK;
    }
    await write(statsText(s, b));
    return EXIT_OK;
  });
}

function statsText(s: Stats, b: Backend): string {
  const how = b.mode === 'daemon' ? 'daemon running, asked through its admin socket' : 'daemon not running, store opened directly';
  const whose =
    b.mode === 'daemon'
      ? "the daemon's"
      : settingsSource === 'flags'
        ? 'from -t/-g/-m'
        : settingsSource === 'recorded'
          ? `recorded by qgreyd at its last start, ${settingsPath(b.stateDir)}`
          : "qgreyd's defaults: no settings recorded in the state directory";
  const kind = (name: string, k: Stats['ips']) =>
    `${name.padEnd(15)} ${k.count} (dead, not yet swept: ${k.dead})` +
    (k.oldest !== null && k.newest !== null ? `; oldest ${iso(k.oldest)} (${ago(s.now - k.oldest)}), newest ${iso(k.newest)} (${ago(s.now - k.newest)})` : '');
  return [
    `state           ${b.stateDir} (${how})`,
    `settings        ${settingsText(s.settings)} (${whose})`,
    kind('known-good IPs', s.ips),
    kind('triplets', s.triplets),
    // a daemon older than this qgreyctl does not report them
    ...(s.future === undefined ? [] : [futureText(s)]),
    `disk            ${s.diskBytes} bytes (${(s.diskBytes / 1048576).toFixed(1)} MiB)`,
    ...(s.live === undefined ? [] : liveText(s.live, s.now)),
  ].join('\n') + '\n';
}

/** The running daemon's counters since it started. */
function liveText(l: LiveCounters, now: number): string[] {
  const out = [
    `daemon up       since ${iso(l.started)} (${age(now - l.started)}); store ${l.storeHealthy ? 'healthy' : 'FAILING (answering not decided)'}`,
    `requests        received ${l.received}, replied ${l.replied}, in flight ${l.inFlight}, malformed ${l.malformed}, refused (not in --allow) ${l.refused}, overload ${l.overload}, store errors ${l.storeErrors}` +
      (l.shutdown > 0 ? `, shutdown ${l.shutdown}` : ''),
    l.lastSweep === null
      ? 'last sweep      none yet'
      : `last sweep      ${iso(l.lastSweep.at)} (${ago(now - l.lastSweep.at)}): scanned ${l.lastSweep.scanned}, deleted ${l.lastSweep.deleted}, ${l.lastSweep.ms} ms`,
  ];
  if (l.replies === null) {
    out.push(`replies         by reason: counted only with qgreyd --metrics`);
  } else {
    const sorted = [...l.replies].sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason));
    out.push(`replies         ${sorted.length === 0 ? 'none yet' : sorted.map((r) => `${r.reason} (${r.reply}) ${r.count}`).join(', ')}`);
  }
  if (l.whitelistHits === null) {
    out.push(`whitelist       ${l.whitelistEntries} entries; hits per entry: counted only with qgreyd --metrics`);
  } else {
    const unused = l.whitelistHits.filter((h) => h.hits === 0).length;
    out.push(`whitelist       ${l.whitelistEntries} entries, ${unused} never matched since the daemon started or the list was reloaded`);
    for (const h of l.whitelistHits) out.push(`  ${String(h.hits).padStart(10)}  ${escapeField(h.file)}:${h.line} ${escapeField(h.entry)}`);
  }
  if (l.exceptionEntries !== undefined) {
    if (l.exceptionHits === null || l.exceptionHits === undefined) {
      out.push(`exceptions      ${l.exceptionEntries} entries; recipients per entry: counted only with qgreyd --metrics`);
    } else {
      const unused = l.exceptionHits.filter((h) => h.hits === 0).length;
      out.push(`exceptions      ${l.exceptionEntries} entries, ${unused} never matched since the daemon started or the list was reloaded`);
      for (const h of l.exceptionHits) out.push(`  ${String(h.hits).padStart(10)}  ${escapeField(h.file)}:${h.line} ${escapeField(h.entry)}`);
    }
  }
  return out;
}

/** "5m ago", or "in 5m" for a time ahead of now */
function ago(seconds: number): string {
  return seconds < 0 ? age(seconds) : `${age(seconds)} ago`;
}

function futureText(s: Stats): string {
  const f = s.future;
  if (f.count === 0 || f.furthest === null) return `future-dated    0`;
  return `future-dated    ${f.count} (dated ahead of now: the clock was set back, or an import came from a clock ahead; they count as now, and the next sweep sets them to now); furthest ${iso(f.furthest)} (${age(f.furthest - s.now)} ahead)`;
}

/** Lines of a file as latin1 text (addresses are bytes), split on \n only, from an open fd. */
async function* fileLines(fd: number): AsyncGenerator<string> {
  const stream = createReadStream('', { fd, start: 0, autoClose: false, encoding: 'latin1', highWaterMark: 1 << 16 });
  let partial = '';
  for await (const chunk of stream as AsyncIterable<string>) {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    yield* parts;
  }
  if (partial !== '') yield partial;
}

const IMPORT_BATCH = 2000;
const SHOW_BAD = 20;

async function cmdImport(argv: string[], globalState: string | undefined): Promise<number> {
  const { a, pos } = parse('import', argv, { string: SETTINGS_SPEC.string, boolean: ['skip-bad', 'dry-run'], alias: SETTINGS_SPEC.alias });
  if (a.help) return help('import');
  if (pos.length !== 1) throw new Usage('import: needs one greydaemon save file; see qgreyctl import --help');
  const file = pos[0];
  // bad -t/-g/-m are usage errors before any work
  settingsArgs('import', a, null);
  // opened before anything else: qgreyctl may become the state directory's owner later
  let fd: number;
  let before: FsStats;
  try {
    fd = openSync(file, 'r');
    before = fstatSync(fd);
    if (before.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CtlError(`import: cannot read ${file} (${err.code ?? err.message}); give a greydaemon save file`, EXIT_PERMANENT);
  }

  // A dry run judges deadness by the settings the real import would use: a running daemon's
  // own, else those withBackend chooses (flags, recorded, defaults).
  let running: Settings | null = null;
  let judge: Settings | null = null;
  if (a['dry-run']) {
    const dir = stateDir(a, globalState);
    running = await daemonSettings(dir, waitArg('import', a));
    judge = running ?? settingsArgs('import', a, dir).settings;
  }

  // pass 1: read and check every line; nothing is written yet
  const now = unixNow();
  let lines = 0;
  let records = 0;
  let bad = 0;
  let deadIps = 0;
  let deadTriplets = 0;
  try {
    for await (const line of fileLines(fd)) {
      lines++;
      const r = parseSaveLine(line, now);
      if (r === null) continue;
      if ('error' in r) {
        bad++;
        if (bad <= SHOW_BAD) process.stderr.write(`qgreyctl: ${file}:${lines}: ${r.error}\n`);
        continue;
      }
      records++;
      if (judge !== null && isDead(r, now, judge)) {
        if (r.kind === 'ip') deadIps++;
        else deadTriplets++;
      }
    }
  } catch (e) {
    throw new CtlError(`import: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); nothing imported`, EXIT_PERMANENT);
  }
  if (bad > SHOW_BAD) process.stderr.write(`qgreyctl: ${file}: ... and ${bad - SHOW_BAD} more unreadable lines\n`);
  if (records === 0 && bad > 0) {
    throw new CtlError(`import: ${file} has no readable record (${bad} unreadable line${bad === 1 ? '' : 's'}); nothing imported; is it a greydaemon save file?`, EXIT_PERMANENT);
  }
  if (bad > 0 && !a['skip-bad'] && !a['dry-run']) {
    throw new CtlError(`import: ${file} has ${bad} unreadable line${bad === 1 ? '' : 's'} of ${lines}; nothing imported (fix ${bad === 1 ? 'it' : 'them'}, or give --skip-bad to import the ${records} good records)`, EXIT_PERMANENT);
  }
  if (a['dry-run']) {
    await write(
      `${file}: ${lines} lines, ${records} records, ${bad} unreadable; dead by ${settingsText(judge!)}${running !== null ? " (the running daemon's)" : ''}: ${deadIps} known-good IPs, ${deadTriplets} triplets; nothing written (dry run)\n`,
    );
    return bad > 0 ? EXIT_PERMANENT : EXIT_OK;
  }

  // pass 2: the same lines again, in batches
  return withBackend('import', a, globalState, true, async (b) => {
    const changed = () => {
      const st = fstatSync(fd);
      return st.size !== before.size || st.mtimeMs !== before.mtimeMs;
    };
    if (changed()) throw new CtlError(`import: ${file} changed while it was being checked (is greydaemon still running?); stop it and import again`, EXIT_TEMPORARY);
    let lineNo = 0;
    async function* batches(): AsyncGenerator<SaveRecord[]> {
      let batch: SaveRecord[] = [];
      for await (const line of fileLines(fd)) {
        lineNo++;
        const r = parseSaveLine(line, now);
        if (r === null || 'error' in r) continue;
        batch.push(r);
        if (batch.length >= IMPORT_BATCH) {
          yield batch;
          batch = [];
        }
      }
      if (lineNo !== lines || changed()) {
        throw new CtlError(`import: ${file} changed while it was being imported (is greydaemon still running?); the records read were imported; stop it and import again`, EXIT_TEMPORARY);
      }
      if (batch.length > 0) yield batch;
    }
    const c = await b.import(batches());
    const via = b.mode === 'daemon' ? ' (through the running daemon, with its settings)' : '';
    await write(
      `imported ${file}${via}: ${lines} lines, ${c.records} records; ${c.imported} written, ${c.dead} skipped as dead, ${c.kept} kept the stored record` +
        (bad > 0 ? `; ${bad} unreadable lines skipped` : '') +
        '\n',
    );
    return EXIT_OK;
  });
}

async function cmdExport(argv: string[], globalState: string | undefined): Promise<number> {
  const { a, pos } = parse('export', argv, { string: ['wait'] });
  if (a.help) return help('export');
  if (pos.length > 0) throw new Usage(`export: unexpected argument ${JSON.stringify(pos[0])}; export writes to standard output (qgreyctl export > savefile)`);
  return withBackend('export', a, globalState, false, async (b) => {
    let ips = 0;
    let triplets = 0;
    for await (const records of b.export()) {
      let text = '';
      for (const r of records) {
        if (r.kind === 'ip') ips++;
        else triplets++;
        text += formatSaveLine(r) + '\n';
      }
      await write(text, 'latin1');
    }
    process.stderr.write(`qgreyctl: exported ${ips} known-good IPs and ${triplets} triplets from ${b.stateDir}\n`);
    return EXIT_OK;
  });
}

async function cmdWhitelist(argv: string[]): Promise<number> {
  const { a, pos } = parse('whitelist', argv, {});
  if (a.help) return help('whitelist');
  if (pos[0] !== 'check' || pos.length !== 3) throw new Usage('whitelist: usage: qgreyctl whitelist check FILE IP');
  const [, file, ipText] = pos;
  if (normaliseIp(ipText) === null) throw new Usage(`whitelist check: ${JSON.stringify(ipText)} is not an IPv4 or IPv6 address`);
  let text: string;
  try {
    text = readFileSync(file, 'latin1');
  } catch (e) {
    throw new CtlError(`whitelist check: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give the whitelist file (qgreyd -w)`, EXIT_PERMANENT);
  }
  let wl: Whitelist;
  try {
    wl = Whitelist.parse(text, file);
  } catch (e) {
    if (e instanceof WhitelistError) throw new CtlError(`whitelist check: ${e.message}; qgreyd would refuse this file too`, EXIT_PERMANENT);
    throw e;
  }
  for (const w of wl.warnings) process.stderr.write(`qgreyctl: warning: ${warningText(w)}\n`);
  const m = wl.match(ipText);
  if (m === undefined) {
    await write(`${ipText} does not match ${file} (${wl.size} entries)\n`);
    return EXIT_NO;
  }
  await write(`${ipText} matches ${m.file}:${m.line}: ${m.text}\n`);
  return EXIT_OK;
}

async function cmdAllow(argv: string[], globalState: string | undefined): Promise<number> {
  const { a, pos } = parse('allow', argv, { string: ['wait'] });
  if (a.help) return help('allow');
  if (pos.length !== 1) throw new Usage('allow: needs one IP address; see qgreyctl allow --help');
  const ip = requireIp('allow', pos[0]);
  return withBackend('allow', a, globalState, true, async (b) => {
    const r = await b.allow(ip);
    const was = r.previous === null ? 'was not known' : `was last good ${iso(r.previous)}`;
    await write(`allowed ${r.ip}: known good from ${iso(r.time)} (${was})\n`);
    return EXIT_OK;
  });
}

async function cmdForget(argv: string[], globalState: string | undefined): Promise<number> {
  const { a, pos } = parse('forget', argv, { string: ['wait'] });
  if (a.help) return help('forget');
  if (pos.length !== 1 && pos.length !== 3) throw new Usage('forget: needs IP, or IP SENDER RCPT; see qgreyctl forget --help');
  const ip = requireIp('forget', pos[0]);
  const triplet = pos.length === 3 ? { sender: bounce(pos[1]), rcpt: pos[2] } : undefined;
  return withBackend('forget', a, globalState, false, async (b) => {
    const r = await b.forget(ip, triplet);
    const what = r.triplet !== undefined ? `triplet ${r.ip} <${escapeField(shownSender(r.triplet.sender))}> <${escapeField(r.triplet.rcpt)}>` : `${r.ip} and its triplets`;
    if (r.deleted === 0) {
      await write(`nothing to forget: no record of ${what}\n`);
      return EXIT_NO;
    }
    await write(`forgot ${what}: ${r.deleted} record${r.deleted === 1 ? '' : 's'} deleted\n`);
    return EXIT_OK;
  });
}

async function cmdReport(argv: string[]): Promise<number> {
  const { a, pos } = parse('report', argv, { string: ['retry', 'top', 'html'], boolean: ['json'] });
  if (a.help) return help('report');
  const retryText = last(a.retry) ?? String(DEFAULT_RETRY);
  const retry = Number(retryText);
  if (retryText.trim() === '' || !Number.isFinite(retry) || retry <= 0) throw new Usage(`report: --retry ${JSON.stringify(retryText)} is not a positive number of seconds; e.g. --retry 86400`);
  const topText = last(a.top) ?? '10';
  const top = Number(topText);
  if (!/^\d+$/.test(topText)) throw new Usage(`report: --top ${JSON.stringify(topText)} is not a whole number`);
  const html = last(a.html);
  if (html !== undefined && html.trim() === '') throw new Usage('report: --html needs a file name, e.g. --html /var/www/greylist.html (or - for standard output)');
  if (html !== undefined && a.json) throw new Usage('report: give --json or --html, not both');
  const builder = new ReportBuilder({ retry });
  const sources: Array<{ name: string; fd: number }> = [];
  for (const f of pos) {
    try {
      const fd = openSync(f, 'r');
      if (fstatSync(fd).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
      sources.push({ name: f, fd });
    } catch (e) {
      throw new CtlError(`report: cannot read ${f} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give multilog files such as /var/log/qgreyd/current`, EXIT_PERMANENT);
    }
  }
  if (sources.length === 0) {
    // nobody types a log in by hand: a report run on a terminal without files is a mistake,
    // and waiting silently for input looks like a hang
    if (process.stdin.isTTY === true) throw new Usage('report: give the log files (e.g. /var/log/qgreyd/current), or pipe the log in: qgreyctl report < current; see qgreyctl report --help');
    sources.push({ name: 'standard input', fd: 0 });
  }
  for (const s of sources) {
    try {
      const lines = s.fd === 0 ? stdinLines() : fileLines(s.fd);
      for await (const line of lines) builder.line(line);
    } catch (e) {
      throw new CtlError(`report: cannot read ${s.name} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, EXIT_PERMANENT);
    }
  }
  const r = builder.finish();
  if (html === '-') {
    await write(formatHtml(r, top), 'latin1');
    return EXIT_OK;
  }
  if (html !== undefined) writeReplacing(html, formatHtml(r, top));
  await write(a.json ? JSON.stringify(r) + '\n' : formatReport(r, top), 'latin1');
  return EXIT_OK;
}

/** Writes beside FILE and renames, so a web server never serves half a page. */
function writeReplacing(file: string, text: string): void {
  const tmp = `${file}.tmp${process.pid}`;
  try {
    writeFileSync(tmp, text, 'latin1');
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // it was never created
    }
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    const temporary = code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO';
    throw new CtlError(`report: cannot write ${file} (${code}); give --html a file in a writable directory`, temporary ? EXIT_TEMPORARY : EXIT_PERMANENT);
  }
}

async function* stdinLines(): AsyncGenerator<string> {
  process.stdin.setEncoding('latin1');
  let partial = '';
  for await (const chunk of process.stdin as AsyncIterable<string>) {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    yield* parts;
  }
  if (partial !== '') yield partial;
}

function help(cmd: string): number {
  process.stdout.write(HELP[cmd] + '\n');
  return EXIT_OK;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const COMMANDS: Record<string, (argv: string[], globalState: string | undefined) => Promise<number>> = {
  query: cmdQuery,
  dump: cmdDump,
  stats: cmdStats,
  import: cmdImport,
  export: cmdExport,
  whitelist: cmdWhitelist,
  allow: cmdAllow,
  forget: cmdForget,
  report: cmdReport,
  'spf-whitelist': cmdSpfWhitelist,
};

async function main(argv: string[]): Promise<number> {
  // options before the command: only --state, --help and --version
  let globalState: string | undefined;
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(GLOBAL_USAGE + '\n');
      return EXIT_OK;
    }
    if (arg === '--version') {
      process.stdout.write(`qgreyctl ${version()}\n`);
      return EXIT_OK;
    }
    if (arg === '--state') {
      if (i + 1 >= argv.length) throw new Usage('--state needs a directory');
      globalState = argv[++i];
    } else if (arg.startsWith('--state=')) {
      globalState = arg.slice('--state='.length);
    } else {
      throw new Usage(`unknown option ${arg} before the command; see qgreyctl --help`);
    }
    if (globalState === '') throw new Usage("--state: an empty path; give the daemon's state directory");
  }
  const cmd = argv[i];
  if (cmd === undefined) throw new Usage('no command given; see qgreyctl --help');
  if (cmd === 'help') {
    const which = argv[i + 1];
    process.stdout.write((which !== undefined && HELP[which] ? HELP[which] : GLOBAL_USAGE) + '\n');
    return EXIT_OK;
  }
  const run = COMMANDS[cmd];
  if (run === undefined) throw new Usage(`unknown command ${JSON.stringify(cmd)}; commands: ${Object.keys(COMMANDS).join(', ')}`);
  return run(argv.slice(i + 1), globalState);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof Usage || e instanceof UsageError) fail(e.message, EXIT_PERMANENT);
    if (e instanceof CtlError) fail(e.message, e.exit);
    if (e instanceof OpsError) fail(e.message, e.permanent ? EXIT_PERMANENT : EXIT_TEMPORARY);
    // met while working on an open store (a corrupt block): the message carries the advice
    if (e instanceof StoreError) fail(e.message, EXIT_TEMPORARY);
    fail(`unexpected error: ${(e as Error).stack ?? String(e)}`, EXIT_TEMPORARY);
  },
);

