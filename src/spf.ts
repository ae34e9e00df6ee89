// Walks a domain's SPF record (RFC 7208) to the address ranges it authorises, for a generated
// whitelist. Only what can be enumerated is collected: ip4, ip6, a, mx, include and redirect;
// exists, ptr and macros depend on the connecting client and are reported, not expanded.
// Walking follows what a receiver's check_host() would do with the same record, so a record
// that receivers reject (a loop, more DNS lookups than the limit, a missing include) is
// rejected here too rather than half-whitelisted.
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { parseRange } from './whitelist.js';
import { QgreydError } from './errors.js';

/** RFC 7208 4.6.4: at most 10 terms that cause DNS lookups per check_host() */
export const DEFAULT_MAX_LOOKUPS = 10;
/** RFC 7208 4.6.4: an mx mechanism may look up the addresses of at most 10 exchanges */
const MAX_MX = 10;
/** Ranges wider than these are not a sender's servers but a mistake (or everyone). */
const MIN_PREFIX = { 4: 8, 6: 16 } as const;

export interface SpfDns {
  txt(name: string): Promise<string[][]>;
  a(name: string): Promise<string[]>;
  aaaa(name: string): Promise<string[]>;
  mx(name: string): Promise<Array<{ exchange: string; priority: number }>>;
}

/** node:dns with the given servers ("IP", "IP:PORT", "[IPv6]:PORT"), or the system's. */
export function nodeDns(servers: string[] | null, timeoutMs: number, tries: number): SpfDns {
  const r = new Resolver({ timeout: timeoutMs, tries });
  if (servers !== null && servers.length > 0) r.setServers(servers);
  // one query per name and type per run: big senders include the same blocks many times
  const cache = new Map<string, Promise<unknown>>();
  function cached<T>(key: string, fn: () => Promise<T>): Promise<T> {
    let p = cache.get(key) as Promise<T> | undefined;
    if (p === undefined) cache.set(key, (p = fn()));
    return p;
  }
  return {
    txt: (n) => cached(`txt ${n}`, () => r.resolveTxt(n)),
    a: (n) => cached(`a ${n}`, () => r.resolve4(n)),
    aaaa: (n) => cached(`aaaa ${n}`, () => r.resolve6(n)),
    mx: (n) => cached(`mx ${n}`, () => r.resolveMx(n)),
  };
}

export interface SpfRange {
  /** network/prefix, host bits cleared */
  cidr: string;
  family: 4 | 6;
  /** the domain whose record holds the mechanism */
  via: string;
}

export interface SpfResult {
  domain: string;
  ranges: SpfRange[];
  /** what was left out and why (not expandable, not a pass, no addresses) */
  notes: string[];
  lookups: number;
}

export class SpfError extends QgreydError {
  constructor(
    readonly domain: string,
    message: string,
    /** a DNS failure that may go away (timeout, SERVFAIL, refused); else the record is bad */
    temporary: boolean,
  ) {
    super('QGREYD_SPF', message, temporary);
  }
}

/** What a domain name given to us must look like: LDH labels (and _), 1 to 63 bytes each. */
export function isDomainName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((l) => /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/i.test(l)) && name.includes('.');
}

/** Domain names from a list file: one a line, "#" comments, blank lines ignored. */
export function parseDomainList(text: string, file: string): string[] {
  const out: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const hash = lines[i].indexOf('#');
    const body = (hash >= 0 ? lines[i].slice(0, hash) : lines[i]).trim();
    if (body === '') continue;
    const name = body.replace(/\.$/, '').toLowerCase();
    if (!isDomainName(name)) throw new SpfError(name, `${file}:${i + 1}: ${JSON.stringify(body)} is not a domain name; put one domain on a line`, false);
    out.push(name);
  }
  return out;
}

interface Walk {
  top: string;
  dns: SpfDns;
  maxLookups: number;
  lookups: number;
  ranges: SpfRange[];
  notes: string[];
}

/** Collects the ranges `domain`'s SPF record passes; throws SpfError. */
export async function walkSpf(domain: string, dns: SpfDns, maxLookups = DEFAULT_MAX_LOOKUPS): Promise<SpfResult> {
  const w: Walk = { top: domain, dns, maxLookups, lookups: 0, ranges: [], notes: [] };
  await walkRecord(w, domain, []);
  return { domain, ranges: w.ranges, notes: w.notes, lookups: w.lookups };
}

function dnsTemporary(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code !== 'ENOTFOUND' && code !== 'ENODATA';
}

function dnsText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOTFOUND') return 'no such domain';
  if (code === 'ENODATA') return 'no records';
  if (code === 'ETIMEOUT') return 'DNS timeout';
  if (code === 'ESERVFAIL') return 'DNS server failure (SERVFAIL)';
  if (code === 'EREFUSED') return 'DNS query refused';
  if (code === 'ECONNREFUSED') return 'DNS server not reachable';
  return `DNS error ${code ?? (e as Error).message}`;
}

function path(chain: string[], domain: string): string {
  return [...chain, domain].join(' -> ');
}

async function spfRecord(w: Walk, domain: string, chain: string[]): Promise<string> {
  let txt: string[][];
  try {
    txt = await w.dns.txt(domain);
  } catch (e) {
    throw new SpfError(w.top, `${path(chain, domain)}: TXT lookup failed: ${dnsText(e)}`, dnsTemporary(e));
  }
  // a TXT record may come in several strings; RFC 7208 3.3 joins them without spaces
  const spf = txt.map((parts) => parts.join('')).filter((t) => /^v=spf1( |$)/i.test(t));
  if (spf.length === 0) throw new SpfError(w.top, `${path(chain, domain)}: no SPF record (no TXT record starting "v=spf1")`, false);
  if (spf.length > 1) throw new SpfError(w.top, `${path(chain, domain)}: ${spf.length} SPF records; RFC 7208 allows one, receivers reject this`, false);
  return spf[0];
}

function countLookup(w: Walk, chain: string[], domain: string, term: string): void {
  w.lookups++;
  if (w.lookups > w.maxLookups) {
    throw new SpfError(
      w.top,
      `${path(chain, domain)}: ${term} needs DNS lookup number ${w.lookups}, over the limit of ${w.maxLookups} (RFC 7208 4.6.4; receivers reject this record; --max-lookups raises it)`,
      false,
    );
  }
}

function add(w: Walk, via: string, text: string, term: string): void {
  const r = parseRange(text);
  if (typeof r === 'string') throw new SpfError(w.top, `${via}: ${term}: ${JSON.stringify(text)} ${r}`, false);
  if (r.prefix < MIN_PREFIX[r.family]) {
    w.notes.push(`${via}: ${term}: skipped ${text}: wider than /${MIN_PREFIX[r.family]}, too broad to whitelist`);
    return;
  }
  const cidr = r.family === 4 ? `${formatV4(r.network)}/${r.prefix}` : `${formatV6(r.network)}/${r.prefix}`;
  w.ranges.push({ cidr, family: r.family, via });
}

async function walkRecord(w: Walk, domain: string, chain: string[]): Promise<void> {
  if (chain.includes(domain)) throw new SpfError(w.top, `${path(chain, domain)}: include loop`, false);
  const record = await spfRecord(w, domain, chain);
  const terms = record.split(' ').slice(1).filter((t) => t !== '');
  let redirect: string | null = null;
  for (const term of terms) {
    const mod = /^([a-z][a-z0-9_.-]*)=(.*)$/i.exec(term);
    if (mod) {
      if (mod[1].toLowerCase() === 'redirect') redirect = mod[2];
      // exp= and unknown modifiers do not change which addresses pass
      continue;
    }
    const m = /^([+?~-]?)([a-z][a-z0-9_.-]*)(.*)$/i.exec(term);
    if (!m) throw new SpfError(w.top, `${domain}: ${JSON.stringify(term)} is not an SPF term; receivers reject this record`, false);
    const qualifier = m[1] === '' ? '+' : m[1];
    const name = m[2].toLowerCase();
    const arg = m[3];
    if (['include', 'a', 'mx', 'ptr', 'exists'].includes(name)) countLookup(w, chain, domain, term);
    if (name === 'all') {
      if (qualifier === '+') throw new SpfError(w.top, `${domain}: "${term}" passes every address; nothing from this domain can be whitelisted`, false);
      // nothing after all is ever evaluated, and redirect= is ignored (RFC 7208 6.1)
      return;
    }
    if (!['ip4', 'ip6', 'include', 'a', 'mx', 'ptr', 'exists'].includes(name)) {
      throw new SpfError(w.top, `${domain}: unknown mechanism ${JSON.stringify(term)}; receivers reject this record`, false);
    }
    if (qualifier !== '+') {
      w.notes.push(`${domain}: ${term}: skipped, ${qualifier === '-' ? 'fail' : qualifier === '~' ? 'softfail' : 'neutral'} is not a pass`);
      continue;
    }
    if (arg.includes('%')) {
      w.notes.push(`${domain}: ${term}: not expandable (a macro depends on the client or sender), skipped`);
      continue;
    }
    switch (name) {
      case 'ip4':
      case 'ip6': {
        const text = arg.startsWith(':') ? arg.slice(1) : '';
        const addr = text.replace(/\/[^/]*$/, '');
        if (isIP(addr) !== (name === 'ip4' ? 4 : 6)) throw new SpfError(w.top, `${domain}: ${JSON.stringify(term)} is not a valid ${name} mechanism; receivers reject this record`, false);
        add(w, domain, text, term);
        break;
      }
      case 'include': {
        if (!arg.startsWith(':') || arg.length < 2) throw new SpfError(w.top, `${domain}: ${JSON.stringify(term)} names no domain; receivers reject this record`, false);
        await walkRecord(w, targetName(w, domain, term, arg.slice(1)), [...chain, domain]);
        break;
      }
      case 'a':
      case 'mx': {
        const s = /^(?::([^/]+))?(?:\/(\d{1,2}))?(?:\/\/(\d{1,3}))?$/.exec(arg);
        if (!s || Number(s[2] ?? 32) > 32 || Number(s[3] ?? 128) > 128) throw new SpfError(w.top, `${domain}: ${JSON.stringify(term)} is not a valid ${name} mechanism; receivers reject this record`, false);
        const target = s[1] === undefined ? domain : targetName(w, domain, term, s[1]);
        const p4 = s[2] ?? '32';
        const p6 = s[3] ?? '128';
        let hosts = [target];
        if (name === 'mx') {
          const mx = await lookup(w, chain, domain, term, () => w.dns.mx(target));
          hosts = [...mx].sort((x, y) => x.priority - y.priority).map((r) => r.exchange.replace(/\.$/, '').toLowerCase()).filter((h) => h !== '');
          if (hosts.length > MAX_MX) throw new SpfError(w.top, `${domain}: ${term}: ${target} has ${hosts.length} MX records, over the limit of ${MAX_MX} (RFC 7208 4.6.4); receivers reject this record`, false);
        }
        let found = 0;
        for (const h of hosts) {
          const v4 = await lookup(w, chain, domain, term, () => w.dns.a(h));
          const v6 = await lookup(w, chain, domain, term, () => w.dns.aaaa(h));
          for (const ip of v4) add(w, domain, `${ip}/${p4}`, term);
          for (const ip of v6) add(w, domain, `${ip}/${p6}`, term);
          found += v4.length + v6.length;
        }
        if (found === 0) w.notes.push(`${domain}: ${term}: ${name === 'mx' ? `no mail exchanger of ${target} has an address` : `${target} has no address`}`);
        break;
      }
      default:
        // ptr and exists: whether they pass depends on the connecting client
        w.notes.push(`${domain}: ${term}: not expandable (depends on the client), skipped`);
    }
  }
  if (redirect !== null) {
    countLookup(w, chain, domain, `redirect=${redirect}`);
    if (redirect.includes('%')) {
      w.notes.push(`${domain}: redirect=${redirect}: not expandable (a macro), skipped`);
      return;
    }
    // a redirect target without a record is a permerror (RFC 7208 6.1): walkRecord throws
    await walkRecord(w, targetName(w, domain, `redirect=${redirect}`, redirect), [...chain, domain]);
  }
}

/** A domain a term names; one DNS cannot look up is the record's fault, not a DNS failure. */
function targetName(w: Walk, domain: string, term: string, raw: string): string {
  const name = raw.replace(/\.$/, '').toLowerCase();
  if (!isDomainName(name)) throw new SpfError(w.top, `${domain}: ${term}: ${JSON.stringify(raw)} is not a domain name; receivers reject this record`, false);
  return name;
}

/** An address lookup for a or mx: no such name or no records is "no addresses", not a failure. */
async function lookup<T>(w: Walk, chain: string[], domain: string, term: string, fn: () => Promise<T[]>): Promise<T[]> {
  try {
    return await fn();
  } catch (e) {
    if (!dnsTemporary(e)) return [];
    throw new SpfError(w.top, `${path(chain, domain)}: ${term}: ${dnsText(e)}`, true);
  }
}

function formatV4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** RFC 5952 text: lower case, no leading zeros, the longest run of two or more zero groups as "::". */
function formatV6(n: bigint): string {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** The whitelist file: each range once, commented with the domains it came from and the date. */
export function formatWhitelist(results: SpfResult[], date: Date, skipped: string[]): string {
  const day = date.toISOString().slice(0, 10);
  const lines = [
    `# qgreyd whitelist generated by qgreyctl spf-whitelist on ${date.toISOString().replace(/\.\d+Z$/, 'Z')}`,
    '# from the SPF records of the domains below. It is rewritten by the periodic job that made it:',
    '# change the list of domains, not this file.',
  ];
  for (const r of results) lines.push(`#   ${r.domain}: ${r.ranges.length} ranges, ${r.lookups} DNS lookups`);
  for (const s of skipped) lines.push(`#   left out: ${s}`);
  for (const r of results) for (const n of r.notes) lines.push(`#   note: ${n}`);
  lines.push('');
  const seen = new Map<string, string[]>();
  for (const r of results) {
    for (const range of r.ranges) {
      const from = range.via === r.domain ? r.domain : `${r.domain} via ${range.via}`;
      const list = seen.get(range.cidr);
      if (list === undefined) seen.set(range.cidr, [from]);
      else if (!list.includes(from)) list.push(from);
    }
  }
  const width = Math.max(18, ...[...seen.keys()].map((c) => c.length));
  for (const [cidr, from] of seen) lines.push(`${cidr.padEnd(width)}  # ${from.join('; ')}, ${day}`);
  return lines.join('\n') + '\n';
}
