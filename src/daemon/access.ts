// Who may ask (--allow): the client networks whose datagrams the daemon reads. Everything
// else is dropped before decoding, unanswered, and only counted; the log gets at most one
// summary line per period, so a flood from outside cannot flood the log.
import { normaliseIp } from '../ip.js';
import { parseRange, Whitelist } from '../whitelist.js';

export class AllowList {
  /** the ranges, matched as the whitelist matches its own */
  private readonly ranges: Whitelist;
  /** false: every source is allowed (bound to a non-loopback address with no --allow) */
  readonly restricted: boolean;
  /** the answers for the sources seen lately: they are few (the mail servers), and each
   *  datagram would otherwise parse its address again */
  private readonly seen = new Map<string, boolean>();

  private constructor(readonly entries: readonly string[], restricted: boolean) {
    this.restricted = restricted;
    this.ranges = restricted ? Whitelist.parse(entries.join('\n'), '--allow') : Whitelist.empty();
  }

  /** Parses CIDR ranges or single addresses, IPv4 or IPv6; throws with the bad entry. */
  static parse(entries: readonly string[]): AllowList {
    for (const text of entries) {
      const r = parseRange(text);
      if (typeof r === 'string') throw new Error(`${JSON.stringify(text)} ${r}`);
    }
    return new AllowList(entries, true);
  }

  static everyone(): AllowList {
    return new AllowList(['everyone'], false);
  }

  /** The default when no --allow is given: loopback only when every listen address is
   *  loopback, everyone (with a start-up warning) otherwise: a LAN address is there for other
   *  mail servers, which a loopback-only default would silently refuse. */
  static defaultFor(hosts: string | readonly string[]): AllowList {
    const all = typeof hosts === 'string' ? [hosts] : hosts;
    return all.every(isLoopback) ? AllowList.parse(['127.0.0.0/8', '::1']) : AllowList.everyone();
  }

  /** `ip` as reported by the socket (IPv4 dotted quad or IPv6 text). */
  allows(ip: string): boolean {
    if (!this.restricted) return true;
    let ok = this.seen.get(ip);
    if (ok === undefined) {
      ok = this.ranges.match(ip) !== undefined;
      // a flood from many addresses cannot grow it past the bound
      if (this.seen.size >= ALLOW_CACHE) this.seen.clear();
      this.seen.set(ip, ok);
    }
    return ok;
  }

  toString(): string {
    return this.entries.join(',');
  }
}

/** Source addresses whose answer allows() keeps. */
const ALLOW_CACHE = 1024;

export function isLoopback(host: string): boolean {
  const n = normaliseIp(host);
  if (n === null) return false;
  return n.family === 4 ? n.ip.startsWith('127.') : n.ip === '::1';
}

/** Counts dropped datagrams and reports them in at most one line per `periodMs`: the first
 *  drop after a quiet period is logged at once, later ones are summed into one line at the
 *  end of the period. */
export class RateLimitedCounter {
  total = 0;
  private pending = 0;
  private last = '';
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly write: (line: string) => void,
    private readonly word: string,
    private readonly periodMs = 10_000,
  ) {}

  note(client: string): void {
    this.total++;
    if (this.timer === null) {
      this.write(`${this.word} client=${client} count=1 total=${this.total}`);
      this.arm();
      return;
    }
    this.pending++;
    this.last = client;
  }

  private arm(): void {
    this.timer = setTimeout(() => this.tick(), this.periodMs);
    this.timer.unref();
  }

  private tick(): void {
    if (this.pending === 0) {
      this.timer = null;
      return;
    }
    this.report();
    this.arm();
  }

  private report(): void {
    this.write(`${this.word} client=${this.last} count=${this.pending} total=${this.total} period=${this.periodMs / 1000}s`);
    this.pending = 0;
  }

  /** Report what is pending now (at shutdown). */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.pending > 0) this.report();
  }
}
