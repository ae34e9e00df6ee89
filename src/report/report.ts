// qgreyctl report: what greylisting did, from the daemon's decision log (multilog output,
// with or without tai64n stamps). Pure: lines in, a Report out, text from the Report.
//
// The unit is the message, (sender, recipient) as the daemon keys them (spaces removed,
// lower-cased, the empty sender as "."), not the triplet: large senders retry from another
// address of their pool, and a triplet-keyed report would call every such retry spam.
// A deferral opens an episode for each of the request's recipients; the first later
// accepted request for the same message closes it ("came back"). Messages never accepted
// again either never came back (deferred once: likely spam) or kept trying without passing.
import { parseDecisionLine } from '../decision-log.js';
import { escapeField } from '../log/log.js';
import { asciiLower, normaliseSender, stripSpaces } from '../policy.js';
import { ipv6Groups, normaliseIp } from '../ip.js';

export interface Decision {
  /** Unix seconds from the line's stamp, when it has one */
  time: number | null;
  ip: string;
  /** normalised as in the store key; null when the line shows no envelope */
  sender: string | null;
  rcpts: string[];
  reply: string;
  reason: string;
  accept: boolean;
  /** which daemon wrote the line */
  source: LogSource;
}

export type LogSource = 'qgreyd' | 'greydaemon';

export type ParsedLine =
  | { kind: 'decision'; decision: Decision }
  | { kind: 'malformed' }
  | { kind: 'other' }
  | { kind: 'unreadable'; why: string };

/** tai64n as multilog writes it: '@' + 16 hex digits of TAI64 seconds + 8 of nanoseconds. */
const TAI64N = /^@([0-9a-f]{16})([0-9a-f]{8}) /;
/** the same after tai64nlocal: local time */
const LOCAL = /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(\.\d+)? /;
const TAI64_EPOCH = 2n ** 62n + 10n; // TAI64 label of 1970-01-01 00:00:00 TAI, plus TAI-UTC

export function tai64nToUnix(hexSeconds: string, hexNanos: string): number {
  return Number(BigInt('0x' + hexSeconds) - TAI64_EPOCH) + parseInt(hexNanos, 16) / 1e9;
}

/** Splits a stamp off a line: [Unix seconds or null, the rest]. */
export function splitStamp(line: string): [number | null, string] {
  if (line.charCodeAt(0) === 0x40 /* @ */) {
    const m = TAI64N.exec(line);
    if (m) return [tai64nToUnix(m[1], m[2]), line.slice(m[0].length)];
  }
  const l = LOCAL.exec(line);
  if (l) {
    const [y, mo, d, h, mi, s] = l.slice(1, 7).map(Number);
    const frac = l[7] ? Number(l[7]) : 0;
    return [new Date(y, mo - 1, d, h, mi, s).getTime() / 1000 + frac, line.slice(l[0].length)];
  }
  return [null, line];
}

export function parseLine(line: string): ParsedLine {
  const [time, rest] = splitStamp(line);
  const p = parseDecisionLine(rest);
  if (p.kind !== 'decision') return p;
  const { ip, sender, keyFrom, recipients, reply, reason } = p.line;
  if (ip === undefined) return { kind: 'unreadable', why: 'a decision without ip=' };
  return {
    kind: 'decision',
    decision: {
      time,
      // shown as the log wrote it
      ip: escapeField(ip),
      // with --normalise-senders the daemon keyed the sender without its per-message tags, and
      // a message is the same one on each retry only in that form
      sender: sender === undefined ? null : asciiLower(normaliseSender(keyFrom ?? sender)),
      rcpts: recipients.map((r) => asciiLower(stripSpaces(r))),
      reply,
      reason,
      accept: reply[1] !== '0',
      source: 'qgreyd',
    },
  };
}

// ---- greydaemon's log ----
//
// greydaemon prints "ADDR:PORT EVENT DATAGRAM" with the datagram's NULs turned into spaces, and
// prints the per-recipient events (new grey, retry too soon, retry ok, stale grey, bounce) once
// per recipient, each with the whole datagram and without saying which recipient: the reply
// is never printed. One request is therefore the run of consecutive lines with the same
// ADDR:PORT and datagram, one per T field (a bounce ends the run early); the reply is rebuilt
// from the events with the decision rules of PROTOCOL.md. Lines of one request are consecutive
// because greydaemon is a single loop that prints nothing else in between.

export type GreydaemonEvent = 'new grey' | 'retry too soon' | 'retry ok' | 'stale grey' | 'bounce' | 'white' | 'ok ip' | 'bad req';

export interface GreydaemonLine {
  time: number | null;
  /** ADDR:PORT of the qmail-smtpd that asked */
  client: string;
  event: GreydaemonEvent;
  /** the datagram as printed, trailing spaces removed: the key that ties a request's lines */
  datagram: string;
  ip: string;
  /** normalised as in the store key; null when the datagram has no F field */
  sender: string | null;
  rcpts: string[];
}

const GD_LINE = /^(\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}) (new grey|retry too soon|retry ok|stale grey|bounce|white|ok ip|bad req no [IFT]) ?(.*)$/;

/** One line of greydaemon's output, or null when it is not a request line (start-up, save, debug). */
export function parseGreydaemonLine(line: string): GreydaemonLine | null {
  const [time, rest] = splitStamp(line);
  const m = GD_LINE.exec(rest);
  if (!m) return null;
  const datagram = m[3].replace(/ +$/, '');
  const event = (m[2].startsWith('bad req') ? 'bad req' : m[2]) as GreydaemonEvent;
  // Fields were NUL-separated; a space inside an address now looks like a field break, so a
  // piece that does not start a field belongs to the one before (greydaemon strips spaces
  // from addresses anyway, so the joined text is its key).
  const fields: string[] = [];
  for (const piece of datagram.split(' ')) {
    if (piece === '') continue;
    const c = piece[0];
    if (fields.length === 0 || (c === 'F' && fields.length === 1) || (c === 'T' && fields.length >= 2)) fields.push(piece);
    else fields[fields.length - 1] += piece;
  }
  const ip = fields[0]?.startsWith('I') ? fields[0].slice(1) : '';
  const sender = fields[1]?.startsWith('F') ? asciiLower(normaliseSender(fields[1].slice(1))) : null;
  const rcpts = fields.slice(2).filter((f) => f.startsWith('T')).map((f) => asciiLower(f.slice(1)));
  return { time, client: m[1], event, datagram, ip, sender, rcpts };
}

/** What a run of per-recipient events made greydaemon reply: [reply, reason]. */
function greydaemonReply(events: readonly GreydaemonEvent[]): [string, string] {
  let reply: [string, string] = ['01:03', 'passed'];
  for (const e of events) {
    if (e === 'bounce') return ['01:04', 'verp-bounce'];
    if (e === 'new grey') reply = ['00:01', 'new'];
    else if (e === 'retry too soon') reply = ['00:02', 'too-soon'];
    else if (e === 'stale grey') reply = ['00:03', 'too-late'];
  }
  return reply;
}

/** Joins greydaemon's per-recipient lines back into requests. Feed every line in order. */
export class GreydaemonRequests {
  private run: { first: GreydaemonLine; events: GreydaemonEvent[] } | null = null;

  /** whether a request's lines are still being collected */
  get open(): boolean {
    return this.run !== null;
  }

  /** What `line` completes: decisions and malformed requests, in log order. A request is
   *  complete when a line that does not continue it arrives (or at `finish`). */
  line(g: GreydaemonLine | null): Array<Decision | 'malformed'> {
    const out: Array<Decision | 'malformed'> = [];
    const run = this.run;
    if (run !== null) {
      const same = g !== null && g.client === run.first.client && g.datagram === run.first.datagram;
      if (same && g.event === 'bad req') {
        // the datagram went bad after some recipients: greydaemon sent no reply
        this.run = null;
        out.push('malformed');
        return out;
      }
      const ended = run.events[run.events.length - 1] === 'bounce' || run.events.length >= run.first.rcpts.length;
      if (same && perRecipient(g.event) && !ended) {
        run.events.push(g.event);
        return out;
      }
      out.push(this.close()); // cut short: decide on what was printed
    }
    if (g === null) return out;
    if (g.event === 'bad req') out.push('malformed');
    else if (g.event === 'white') out.push(decision(g, '01:01', 'whitelisted'));
    else if (g.event === 'ok ip') out.push(decision(g, '01:02', 'known-good'));
    // kept open even when complete: a "bad req no T" for a later field may still follow
    else this.run = { first: g, events: [g.event] };
    return out;
  }

  /** The request still open at the end of the log, if any. */
  finish(): Array<Decision | 'malformed'> {
    return this.line(null);
  }

  private close(): Decision {
    const run = this.run!;
    this.run = null;
    const [reply, reason] = greydaemonReply(run.events);
    return decision(run.first, reply, reason);
  }
}

function perRecipient(e: GreydaemonEvent): boolean {
  return e !== 'white' && e !== 'ok ip' && e !== 'bad req';
}

function decision(g: GreydaemonLine, reply: string, reason: string): Decision {
  return { time: g.time, ip: g.ip, sender: g.sender, rcpts: g.rcpts, reply, reason, accept: reply[1] !== '0', source: 'greydaemon' };
}

export interface Episode {
  sender: string;
  rcpt: string;
  /** where and when it was first deferred */
  ip: string;
  first: number | null;
  /** deferrals, the first included */
  attempts: number;
  /** set when it came back */
  acceptedAt?: number | null;
  acceptedIp?: string;
}

export interface NetCount {
  key: string;
  deferred: number;
  neverPassed: number;
}

export interface Report {
  retry: number;
  /** whether every decision line had a stamp; without them delays are unknown */
  timed: boolean;
  firstTime: number | null;
  lastTime: number | null;
  lines: number;
  decisions: number;
  other: number;
  malformed: number;
  unreadable: Array<{ line: number; why: string }>;
  unreadableCount: number;
  /** decision lines by reason */
  reasons: Record<string, number>;
  accepted: number;
  deferred: number;
  /** deferred messages (episodes), by outcome */
  episodes: number;
  cameBack: Episode[];
  cameBackLate: Episode[];
  keptTrying: Episode[];
  neverCameBack: Episode[];
  tooRecent: Episode[];
  networks: NetCount[];
  domains: NetCount[];
  /** deferred sender addresses */
  senders: NetCount[];
  /** retry delays of those that came back (in time or late), in seconds */
  delays: number[];
  /** stamped decisions per hour; hours without any are left out */
  hours: HourCount[];
  /** stamped decisions per UTC day; days without any are left out */
  days: DayCount[];
  /** decisions read from greydaemon's log lines (the rest are qgreyd's) */
  greydaemonDecisions: number;
}

export interface HourCount {
  /** Unix seconds at the start of the hour */
  start: number;
  accepted: number;
  deferred: number;
}

export interface DayCount {
  /** YYYY-MM-DD, UTC */
  day: string;
  start: number;
  decisions: number;
  accepted: number;
  deferred: number;
  /** messages (sender, recipient) first deferred that day */
  episodes: number;
  /** of those, how many came back within --retry */
  cameBack: number;
  /** decisions read from greydaemon's lines */
  greydaemon: number;
}

export interface ReportOptions {
  /** a deferred message counts as retried when it came back within this many seconds */
  retry: number;
}

export const DEFAULT_RETRY = 86400;
const KEEP_UNREADABLE = 20;

/** Feed lines in order; `finish()` gives the report. Memory grows with open episodes only. */
export class ReportBuilder {
  private open = new Map<string, Episode>();
  private closed: Episode[] = [];
  private r: Report;
  private untimed = 0;
  private greydaemon = new GreydaemonRequests();
  private hours = new Map<number, HourCount>();
  private days = new Map<number, DayCount>();

  constructor(opts: ReportOptions = { retry: DEFAULT_RETRY }) {
    this.r = {
      retry: opts.retry,
      timed: true,
      firstTime: null,
      lastTime: null,
      lines: 0,
      decisions: 0,
      other: 0,
      malformed: 0,
      unreadable: [],
      unreadableCount: 0,
      reasons: {},
      accepted: 0,
      deferred: 0,
      episodes: 0,
      cameBack: [],
      cameBackLate: [],
      keptTrying: [],
      neverCameBack: [],
      tooRecent: [],
      networks: [],
      domains: [],
      senders: [],
      delays: [],
      hours: [],
      days: [],
      greydaemonDecisions: 0,
    };
  }

  line(text: string): void {
    const r = this.r;
    r.lines++;
    if (text === '') {
      this.fromGreydaemon(null);
      return;
    }
    const p = parseLine(text);
    if (p.kind === 'other') {
      const g = parseGreydaemonLine(text);
      this.fromGreydaemon(g);
      if (g === null) r.other++;
      return;
    }
    this.fromGreydaemon(null);
    if (p.kind === 'malformed') {
      r.malformed++;
      return;
    }
    if (p.kind === 'unreadable') {
      r.unreadableCount++;
      if (r.unreadable.length < KEEP_UNREADABLE) r.unreadable.push({ line: r.lines, why: p.why });
      return;
    }
    this.decide(p.decision);
  }

  private fromGreydaemon(g: GreydaemonLine | null): void {
    if (g === null && !this.greydaemon.open) return; // the common case: a qgreyd log
    for (const x of this.greydaemon.line(g)) {
      if (x === 'malformed') this.r.malformed++;
      else this.decide(x);
    }
  }

  private decide(d: Decision): void {
    const r = this.r;
    r.decisions++;
    r.reasons[d.reason] = (r.reasons[d.reason] ?? 0) + 1;
    if (d.source === 'greydaemon') r.greydaemonDecisions++;
    let day: DayCount | undefined;
    if (d.time === null) this.untimed++;
    else {
      if (r.firstTime === null || d.time < r.firstTime) r.firstTime = d.time;
      if (r.lastTime === null || d.time > r.lastTime) r.lastTime = d.time;
      const hourStart = Math.floor(d.time / 3600) * 3600;
      let hour = this.hours.get(hourStart);
      if (!hour) this.hours.set(hourStart, (hour = { start: hourStart, accepted: 0, deferred: 0 }));
      if (d.accept) hour.accepted++;
      else hour.deferred++;
      day = this.day(d.time);
      day.decisions++;
      if (d.accept) day.accepted++;
      else day.deferred++;
      if (d.source === 'greydaemon') day.greydaemon++;
    }
    if (d.accept) r.accepted++;
    else r.deferred++;
    if (d.sender === null) return;
    for (const rcpt of d.rcpts) {
      const key = `${d.sender} ${rcpt}`;
      const ep = this.open.get(key);
      if (d.accept) {
        if (ep === undefined) continue;
        ep.acceptedAt = d.time;
        ep.acceptedIp = d.ip;
        this.open.delete(key);
        this.closed.push(ep);
      } else if (ep !== undefined) {
        ep.attempts++;
      } else {
        r.episodes++;
        if (day) day.episodes++;
        this.open.set(key, { sender: d.sender, rcpt, ip: d.ip, first: d.time, attempts: 1 });
      }
    }
  }

  private day(t: number): DayCount {
    const start = Math.floor(t / 86400) * 86400;
    let day = this.days.get(start);
    if (!day) {
      day = { day: new Date(start * 1000).toISOString().slice(0, 10), start, decisions: 0, accepted: 0, deferred: 0, episodes: 0, cameBack: 0, greydaemon: 0 };
      this.days.set(start, day);
    }
    return day;
  }

  finish(): Report {
    const r = this.r;
    this.fromGreydaemon(null);
    r.timed = this.untimed === 0 && r.decisions > 0;
    const nets = new Map<string, NetCount>();
    const domains = new Map<string, NetCount>();
    const senders = new Map<string, NetCount>();
    const count = (m: Map<string, NetCount>, key: string, passed: boolean) => {
      let c = m.get(key);
      if (!c) m.set(key, (c = { key, deferred: 0, neverPassed: 0 }));
      c.deferred++;
      if (!passed) c.neverPassed++;
    };
    for (const ep of this.closed) {
      const delay = ep.first !== null && ep.acceptedAt != null ? ep.acceptedAt - ep.first : null;
      if (delay !== null) r.delays.push(delay);
      if (delay !== null && delay > r.retry) r.cameBackLate.push(ep);
      else {
        r.cameBack.push(ep);
        if (ep.first !== null) this.day(ep.first).cameBack++;
      }
      count(nets, network(ep.ip), true);
      count(domains, senderDomain(ep.sender), true);
      count(senders, ep.sender, true);
    }
    for (const ep of this.open.values()) {
      // without stamps nothing is too recent to judge: the whole log is the window
      if (r.timed && ep.first !== null && r.lastTime !== null && r.lastTime - ep.first < r.retry) r.tooRecent.push(ep);
      else if (ep.attempts > 1) r.keptTrying.push(ep);
      else r.neverCameBack.push(ep);
      count(nets, network(ep.ip), false);
      count(domains, senderDomain(ep.sender), false);
      count(senders, ep.sender, false);
    }
    const order = (a: NetCount, b: NetCount) => b.deferred - a.deferred || b.neverPassed - a.neverPassed || (a.key < b.key ? -1 : 1);
    r.networks = [...nets.values()].sort(order);
    r.domains = [...domains.values()].sort(order);
    r.senders = [...senders.values()].sort(order);
    r.hours = [...this.hours.values()].sort((a, b) => a.start - b.start);
    r.days = [...this.days.values()].sort((a, b) => a.start - b.start);
    r.delays.sort((a, b) => a - b);
    return r;
  }
}

export function buildReport(lines: Iterable<string>, opts?: ReportOptions): Report {
  const b = new ReportBuilder(opts);
  for (const l of lines) b.line(l);
  return b.finish();
}

/** The client network a deferral counts against: /24 for IPv4, /48 for IPv6. */
export function network(ip: string): string {
  const n = normaliseIp(ip);
  if (n === null) return ip;
  if (n.family === 4) {
    const o = n.ip.split('.');
    return `${o[0]}.${o[1]}.${o[2]}.0/24`;
  }
  return `${ipv6Groups(n.ip).slice(0, 3).map((g) => g.toString(16)).join(':')}::/48`;
}

export function senderDomain(sender: string): string {
  if (sender === '.') return '(bounce)';
  const at = sender.lastIndexOf('@');
  return at < 0 ? '(no domain)' : sender.slice(at + 1);
}

// ---- text ----

/** The per-day table, header first; "log" says which daemon wrote the day's decisions. */
export function dayTable(r: Report): string[] {
  const cols = ['decisions', 'accepted', 'deferred', 'deferred%', 'msgs-deferred', 'came-back'];
  const rows = [`  ${'day'.padEnd(10)} ${cols.map((c) => c.padStart(Math.max(c.length, 8))).join(' ')}  log`];
  for (const d of r.days) {
    const pct = d.decisions > 0 ? ((100 * d.deferred) / d.decisions).toFixed(1) : '-';
    const log = d.greydaemon === 0 ? 'qgreyd' : d.greydaemon === d.decisions ? 'greydaemon' : 'both';
    const vals = [d.decisions, d.accepted, d.deferred, pct, d.episodes, d.cameBack];
    rows.push(`  ${d.day} ${vals.map((v, i) => String(v).padStart(Math.max(cols[i].length, 8))).join(' ')}  ${log}`);
  }
  return rows;
}

/** Histogram buckets: upper bounds in seconds. */
const BUCKETS: Array<[number, string]> = [
  [300, '< 5m'],
  [600, '5-10m'],
  [900, '10-15m'],
  [1800, '15-30m'],
  [3600, '30m-1h'],
  [7200, '1-2h'],
  [14400, '2-4h'],
  [43200, '4-12h'],
  [86400, '12-24h'],
  [Infinity, '> 24h'],
];

/** Retry delays counted into the histogram's buckets: [label, count]. */
export function bucketCounts(delays: readonly number[]): Array<[string, number]> {
  const counts = BUCKETS.map(() => 0);
  for (const d of delays) counts[BUCKETS.findIndex(([max]) => d < max)]++;
  return BUCKETS.map(([, label], i) => [label, counts[i]]);
}

export function histogram(delays: readonly number[], width = 40): string[] {
  const counts = bucketCounts(delays).map(([, n]) => n);
  const most = Math.max(...counts, 1);
  return BUCKETS.map(([, label], i) => {
    const bar = '#'.repeat(Math.round((counts[i] / most) * width));
    return `  ${label.padEnd(7)} |${bar.padEnd(width)} ${counts[i]}`;
  });
}

export function duration(s: number): string {
  const t = Math.round(s);
  const d = Math.floor(t / 86400);
  const h = Math.floor((t % 86400) / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  const hms = `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
  return d > 0 ? `${d}d ${hms}` : hms;
}

export function iso(t: number | null): string {
  return t === null ? '-' : new Date(Math.floor(t) * 1000).toISOString().replace('.000Z', 'Z');
}

function message(ep: Episode): string {
  return `${ep.ip} <${escapeField(ep.sender)}> -> <${escapeField(ep.rcpt)}>`;
}

export function formatReport(r: Report, top = 10): string {
  const out: string[] = [];
  const reasons = (names: string[]) =>
    names
      .filter((n) => r.reasons[n])
      .map((n) => `${n} ${r.reasons[n]}`)
      .join(', ');
  const span = r.firstTime !== null ? ` from ${iso(r.firstTime)} to ${iso(r.lastTime)}` : '';
  const gd = r.greydaemonDecisions > 0 ? ` (${r.greydaemonDecisions} from greydaemon's log)` : '';
  out.push(`qgreyd report: ${r.decisions} decisions${gd} in ${r.lines} lines${span}`);
  out.push(`  accepted ${r.accepted} (${reasons(['whitelisted', 'known-good', 'passed', 'verp-bounce', 'store-error']) || 'none'})`);
  out.push(`  deferred ${r.deferred} (${reasons(['new', 'too-soon', 'too-late']) || 'none'})`);
  out.push(`  malformed datagrams ${r.malformed}, other lines ${r.other}, unreadable lines ${r.unreadableCount}`);
  for (const u of r.unreadable) out.push(`    line ${u.line}: ${u.why}`);
  if (r.unreadableCount > r.unreadable.length) out.push(`    ... and ${r.unreadableCount - r.unreadable.length} more`);
  if (!r.timed) {
    out.push('  retry delays unknown: not every decision line has a timestamp (give multilog t output, raw or through tai64nlocal)');
  }
  out.push('');
  const fromOther = r.cameBack.filter((e) => e.acceptedIp !== e.ip).length;
  out.push(`deferred messages (sender, recipient): ${r.episodes}`);
  out.push(`  came back${r.timed ? ` within ${r.retry} s` : ''}: ${r.cameBack.length}${fromOther ? ` (${fromOther} from another address)` : ''}`);
  if (r.timed) out.push(`  came back after more than ${r.retry} s: ${r.cameBackLate.length}`);
  out.push(`  kept trying, never passed: ${r.keptTrying.length}`);
  out.push(`  never came back (likely spam): ${r.neverCameBack.length}`);
  if (r.timed) out.push(`  too recent to tell (deferred in the last ${r.retry} s of the log): ${r.tooRecent.length}`);

  const list = (title: string, eps: Episode[], show: (e: Episode) => string) => {
    if (eps.length === 0) return;
    out.push('');
    out.push(`${title}${eps.length > top ? ` (first ${top} of ${eps.length})` : ''}:`);
    for (const e of eps.slice(0, top)) out.push(`  ${show(e)}`);
  };
  list('never came back', r.neverCameBack, (e) => `${iso(e.first)} ${message(e)}`);
  list('kept trying, never passed', r.keptTrying, (e) => `${iso(e.first)} ${message(e)} attempts=${e.attempts}`);
  list(r.timed ? `came back within ${r.retry} s` : 'came back', r.cameBack, (e) => {
    const delay = e.first !== null && e.acceptedAt != null ? duration(e.acceptedAt - e.first) : 'delay unknown';
    const other = e.acceptedIp !== e.ip ? ` (accepted from ${e.acceptedIp})` : '';
    return `${delay} ${message(e)}${other}`;
  });

  if (r.delays.length > 0) {
    const median = r.delays[Math.floor((r.delays.length - 1) / 2)];
    out.push('');
    out.push(`retry delays (${r.delays.length}; shortest ${duration(r.delays[0])}, median ${duration(median)}, longest ${duration(r.delays[r.delays.length - 1])}):`);
    out.push(...histogram(r.delays));
  }
  const table = (title: string, rows: NetCount[], what: string) => {
    if (rows.length === 0) return;
    out.push('');
    out.push(`${title}:`);
    out.push(`  ${'deferred'.padStart(8)} ${'never-passed'.padStart(12)}  ${what}`);
    for (const c of rows.slice(0, top)) out.push(`  ${String(c.deferred).padStart(8)} ${String(c.neverPassed).padStart(12)}  ${escapeField(c.key)}`);
  };
  table('top deferred client networks', r.networks, 'network');
  table('top deferred sender domains', r.domains, 'sender domain');
  table('top deferred senders', r.senders, 'sender');
  if (r.days.length > 0) {
    out.push('');
    out.push(`per day (UTC)${r.timed ? '' : ', decisions with a timestamp only'}:`);
    out.push(...dayTable(r));
  }
  return out.join('\n') + '\n';
}
