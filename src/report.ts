// qgreyctl report: what greylisting did, from the daemon's decision log (multilog output,
// with or without tai64n stamps). Pure: lines in, a Report out, text from the Report.
//
// The unit is the message, (sender, recipient) as the daemon keys them (spaces removed,
// lower-cased, the empty sender as "."), not the triplet: large senders retry from another
// address of their pool, and a triplet-keyed report would call every such retry spam.
// A deferral opens an episode for each of the request's recipients; the first later
// accepted request for the same message closes it ("came back"). Messages never accepted
// again either never came back (deferred once: likely spam) or kept trying without passing.
import { escapeField } from './log.js';
import { asciiLower, normaliseSender, stripSpaces } from './policy.js';
import { ipv6Groups, normaliseIp } from './protocol.js';

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
}

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

const DECISION = /^client=\S+ (?:ip=(\S+) )?(?:from=<([^>]*)> to=(\S*) )?reply=(\S+) reason=(\S+)/;

export function parseLine(line: string): ParsedLine {
  const [time, rest] = splitStamp(line);
  if (!rest.startsWith('client=')) return { kind: 'other' };
  const m = DECISION.exec(rest);
  if (!m) return { kind: 'unreadable', why: 'a client= line without reply= and reason=' };
  const [, ip, from, to, reply, reason] = m;
  if (reply === 'none') return { kind: 'malformed' };
  if (!/^0[01]:0\d$/.test(reply)) return { kind: 'unreadable', why: `reply=${reply} is not a reply code` };
  if (ip === undefined) return { kind: 'unreadable', why: 'a decision without ip=' };
  const rcpts: string[] = [];
  if (to !== undefined && to !== '') {
    for (const part of to.split(',')) {
      if (/^\+\d+$/.test(part)) continue; // recipients beyond what the log line shows
      if (!part.startsWith('<') || !part.endsWith('>')) return { kind: 'unreadable', why: `to= has ${JSON.stringify(part)}` };
      rcpts.push(asciiLower(stripSpaces(unescape(part.slice(1, -1)))));
    }
  }
  return {
    kind: 'decision',
    decision: {
      time,
      ip,
      sender: from === undefined ? null : asciiLower(normaliseSender(unescape(from))),
      rcpts,
      reply,
      reason,
      accept: reply[1] !== '0',
    },
  };
}

function unescape(s: string): string {
  return s.indexOf('\\x') < 0 ? s : s.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
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
  /** retry delays of those that came back (in time or late), in seconds */
  delays: number[];
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

  constructor(private readonly opts: ReportOptions = { retry: DEFAULT_RETRY }) {
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
      delays: [],
    };
  }

  line(text: string): void {
    const r = this.r;
    r.lines++;
    if (text === '') return;
    const p = parseLine(text);
    if (p.kind === 'other') {
      r.other++;
      return;
    }
    if (p.kind === 'malformed') {
      r.malformed++;
      return;
    }
    if (p.kind === 'unreadable') {
      r.unreadableCount++;
      if (r.unreadable.length < KEEP_UNREADABLE) r.unreadable.push({ line: r.lines, why: p.why });
      return;
    }
    const d = p.decision;
    r.decisions++;
    r.reasons[d.reason] = (r.reasons[d.reason] ?? 0) + 1;
    if (d.time === null) this.untimed++;
    else {
      if (r.firstTime === null || d.time < r.firstTime) r.firstTime = d.time;
      if (r.lastTime === null || d.time > r.lastTime) r.lastTime = d.time;
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
        this.open.set(key, { sender: d.sender, rcpt, ip: d.ip, first: d.time, attempts: 1 });
      }
    }
  }

  finish(): Report {
    const r = this.r;
    r.timed = this.untimed === 0 && r.decisions > 0;
    const nets = new Map<string, NetCount>();
    const domains = new Map<string, NetCount>();
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
      else r.cameBack.push(ep);
      count(nets, network(ep.ip), true);
      count(domains, senderDomain(ep.sender), true);
    }
    for (const ep of this.open.values()) {
      // without stamps nothing is too recent to judge: the whole log is the window
      if (r.timed && ep.first !== null && r.lastTime !== null && r.lastTime - ep.first < r.retry) r.tooRecent.push(ep);
      else if (ep.attempts > 1) r.keptTrying.push(ep);
      else r.neverCameBack.push(ep);
      count(nets, network(ep.ip), false);
      count(domains, senderDomain(ep.sender), false);
    }
    const order = (a: NetCount, b: NetCount) => b.deferred - a.deferred || b.neverPassed - a.neverPassed || (a.key < b.key ? -1 : 1);
    r.networks = [...nets.values()].sort(order);
    r.domains = [...domains.values()].sort(order);
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

export function histogram(delays: readonly number[], width = 40): string[] {
  const counts = BUCKETS.map(() => 0);
  for (const d of delays) counts[BUCKETS.findIndex(([max]) => d < max)]++;
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

function iso(t: number | null): string {
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
  out.push(`qgreyd report: ${r.decisions} decisions in ${r.lines} lines${span}`);
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
  return out.join('\n') + '\n';
}
