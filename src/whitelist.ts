// The whitelist file of PROTOCOL.md: IPv4 (reference forms and CIDR) and IPv6 ranges.
// Matching looks up one hash table per distinct prefix length in the file, so its cost does
// not grow with the number of entries.
// IPv4 lines are read as greydaemon reads them (its addrange), because admins copy their old
// file over and a line greydaemon loaded must not stop qgreyd: whatever greydaemon took from a
// line, qgreyd takes too, and says so in a warning when the line was not in a clean form.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { escapeField, quoted } from './log/log.js';
import { ipv6Groups, normaliseIp } from './ip.js';
import { QgreydError } from './errors.js';

export interface WhitelistEntry {
  file: string;
  line: number;
  /** the line's text without comment and surrounding blanks */
  text: string;
  family: 4 | 6;
  prefix: number;
}

/** A line that loaded, but not in a clean form: how it was read, and why that way. */
export interface WhitelistWarning {
  file: string;
  line: number;
  text: string;
  /** the range taken, as CIDR */
  readAs: string;
  why: string;
}

export class WhitelistError extends QgreydError {
  constructor(message: string) {
    super('QGREYD_BAD_WHITELIST', message);
  }
}

export class Whitelist {
  /** prefix length -> network -> entry; prefix lengths longest first */
  private v4 = new Map<number, Map<number, WhitelistEntry>>();
  private v6 = new Map<number, Map<bigint, WhitelistEntry>>();
  private v4Prefixes: number[] = [];
  private v6Prefixes: number[] = [];
  readonly entries: WhitelistEntry[] = [];
  readonly warnings: WhitelistWarning[] = [];

  constructor(readonly file: string | null = null) {}

  static empty(): Whitelist {
    return new Whitelist(null);
  }

  /** Reads and parses a file; throws WhitelistError naming file:line for a bad line. */
  static load(file: string): Whitelist {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new WhitelistError(`whitelist ${file}: cannot read it (${err.code ?? err.message}); give a readable file with -w`);
    }
    return Whitelist.parse(text, file);
  }

  /** Reads every path given with -w, in order: a file, or a directory whose files are read
   *  in name order (names starting with a dot or ending in ~ are left out: editors' backups
   *  and the temporary files of qgreyctl spf-whitelist). One list; an address in ranges of
   *  the same length in two files matches the first file's entry. Throws WhitelistError
   *  naming the file (and line) for the first bad one. */
  static loadAll(paths: readonly string[]): Whitelist {
    const all = new Whitelist(paths.join(','));
    for (const file of whitelistFiles(paths)) {
      const wl = Whitelist.load(file);
      for (const [entry, network] of wl.ranges()) all.add(entry, network);
      all.warnings.push(...wl.warnings);
    }
    return all;
  }

  /** every entry with its network, in file order */
  private *ranges(): Generator<[WhitelistEntry, number | bigint]> {
    for (const [, m] of this.v4) for (const [n, e] of m) yield [e, n];
    for (const [, m] of this.v6) for (const [n, e] of m) yield [e, n];
  }

  static parse(text: string, file: string): Whitelist {
    const wl = new Whitelist(file);
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const hash = lines[i].indexOf('#');
      const body = (hash >= 0 ? lines[i].slice(0, hash) : lines[i]).trim();
      if (body === '') continue;
      const r = parseWhitelistLine(body);
      if ('error' in r) {
        throw new WhitelistError(`whitelist ${file}:${i + 1}: ${JSON.stringify(body)} ${r.error}`);
      }
      const { range } = r;
      wl.add({ file, line: i + 1, text: body, family: range.family, prefix: range.prefix }, range.network);
      if (r.notes.length > 0) wl.warnings.push({ file, line: i + 1, text: body, readAs: formatRange(range), why: r.notes.join('; ') });
    }
    return wl;
  }

  get size(): number {
    return this.entries.length;
  }

  private add(entry: WhitelistEntry, network: number | bigint): void {
    this.entries.push(entry);
    if (entry.family === 4) {
      let m = this.v4.get(entry.prefix);
      if (!m) {
        this.v4.set(entry.prefix, (m = new Map()));
        this.v4Prefixes = [...this.v4.keys()].sort((a, b) => b - a);
      }
      if (!m.has(network as number)) m.set(network as number, entry);
    } else {
      let m = this.v6.get(entry.prefix);
      if (!m) {
        this.v6.set(entry.prefix, (m = new Map()));
        this.v6Prefixes = [...this.v6.keys()].sort((a, b) => b - a);
      }
      if (!m.has(network as bigint)) m.set(network as bigint, entry);
    }
  }

  /** The most specific entry containing the address, if any. `ip` is any IP text. */
  match(ip: string): WhitelistEntry | undefined {
    if (this.entries.length === 0) return undefined;
    const n = normaliseIp(ip);
    return n === null ? undefined : this.matchNormalised(n.ip, n.family);
  }

  /** match() for an address already in normaliseIp()'s form, as the decoder gives it. */
  matchNormalised(ip: string, family: 4 | 6): WhitelistEntry | undefined {
    if (this.entries.length === 0) return undefined;
    if (family === 4) {
      if (this.v4Prefixes.length === 0) return undefined;
      const addr = ipv4ToInt(ip);
      for (const p of this.v4Prefixes) {
        const e = this.v4.get(p)!.get(maskV4(addr, p));
        if (e) return e;
      }
      return undefined;
    }
    if (this.v6Prefixes.length === 0) return undefined;
    const addr = ipv6ToBigInt(ip);
    for (const p of this.v6Prefixes) {
      const e = this.v6.get(p)!.get(maskV6(addr, p));
      if (e) return e;
    }
    return undefined;
  }
}

/** The warning as one line of text, for stderr and qgreyctl: `file:line: "text" read as ... (why)`. */
export function warningText(w: WhitelistWarning): string {
  return `${w.file}:${w.line}: ${JSON.stringify(w.text)} read as ${w.readAs} (${w.why})`;
}

/** The warning as a daemon log line. */
export function warningLogLine(w: WhitelistWarning): string {
  return `warning whitelist=${escapeField(w.file)}:${w.line} text=${quoted(w.text)} read-as=${w.readAs} why=${quoted(w.why)}`;
}

type Range = { family: 4; prefix: number; network: number } | { family: 6; prefix: number; network: bigint };

/** A range, or what is wrong with the text. */
export function parseRange(body: string): Range | string {
  if (/\s/.test(body)) return 'has more than one word; put one address or range on a line';
  // the reference forms: 1 to 4 dotted decimal octets mean /8, /16, /24, /32
  if (/^\d+(\.\d+){0,3}$/.test(body)) {
    const octets = body.split('.').map(Number);
    if (octets.some((o) => o > 255)) return 'has an octet above 255';
    while (octets.length < 4) {
      octets.push(0);
    }
    const prefix = body.split('.').length * 8;
    return { family: 4, prefix, network: maskV4(octetsToInt(octets), prefix) };
  }
  const slash = body.indexOf('/');
  const addr = slash >= 0 ? body.slice(0, slash) : body;
  const bits = slash >= 0 ? body.slice(slash + 1) : null;
  const kind = isIP(addr);
  if (kind === 0) return 'is not an IPv4 or IPv6 address or range (forms: 192.0.2.7, 192.0.2, 192.0, 192, 198.51.100.0/22, 2001:db8::1, 2001:db8::/32)';
  const max = kind === 4 ? 32 : 128;
  let prefix = max;
  if (bits !== null) {
    if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return `has a prefix length that is not 0 to ${max}`;
    prefix = Number(bits);
  }
  if (kind === 4) return { family: 4, prefix, network: maskV4(ipv4ToInt(addr), prefix) };
  const n = normaliseIp(addr)!;
  if (n.family === 4) {
    // ::ffff:a.b.c.d/n names IPv4 hosts; clients are matched as IPv4 too
    if (prefix < 96) return 'is an IPv4-mapped range shorter than /96; write the IPv4 range instead';
    return { family: 4, prefix: prefix - 96, network: maskV4(ipv4ToInt(n.ip), prefix - 96) };
  }
  return { family: 6, prefix, network: maskV6(ipv6ToBigInt(n.ip), prefix) };
}

/** One whitelist line (comment and surrounding blanks removed): its range and, when the line
 *  was not in a clean form, notes saying how it was read; or what makes it unreadable.
 *  A first word with two or more colons is an IPv6 entry (this project's addition, read
 *  strictly); anything else is read as greydaemon reads it. */
export function parseWhitelistLine(body: string): { range: Range; notes: string[] } | { error: string } {
  const first = body.split(/\s/, 1)[0];
  if ((first.split('/', 1)[0].match(/:/g) ?? []).length >= 2) {
    const r = parseRange(first);
    if (typeof r === 'string') return { error: r };
    const rest = body.slice(first.length).trim();
    return { range: r, notes: rest === '' ? [] : [`the rest of the line (${JSON.stringify(rest)}) is ignored`] };
  }
  return readAsGreydaemon(body);
}

/** greydaemon's addrange, in its order: the first CIDR anywhere in the line, else the first
 *  four-part dotted number, else three parts (/24), two (/16), one (/8); no digit at all is
 *  the one line it dies on. The address's parts go through Perl's pack "C": missing parts
 *  are 0, parts after the fourth are dropped, and a part above 255 wraps modulo 256. */
const GREYDAEMON_FORMS: ReadonlyArray<readonly [RegExp, number | null]> = [
  [/(\d[0-9.]+)\/(\d+)/, null],
  [/\d+\.\d+\.\d+\.\d+/, 32],
  [/\d+\.\d+\.\d+/, 24],
  [/\d+\.\d+/, 16],
  [/\d+/, 8],
];

function readAsGreydaemon(body: string): { range: Range; notes: string[] } | { error: string } {
  let m: RegExpExecArray | null = null;
  let fixed: number | null = null;
  for (const [re, prefix] of GREYDAEMON_FORMS) {
    m = re.exec(body);
    if (m) {
      fixed = prefix;
      break;
    }
  }
  if (m === null) {
    return { error: 'has no address in it (greydaemon stops on such a line too); forms: 192.0.2.7, 192.0.2, 192.0, 192, 198.51.100.0/22, 2001:db8::1, 2001:db8::/32' };
  }
  const notes: string[] = [];
  const before = body.slice(0, m.index).trim();
  const after = body.slice(m.index + m[0].length).trim();
  if (before !== '') notes.push(`the text before the address (${JSON.stringify(before)}) is ignored`);
  if (after === '.') notes.push('the trailing dot is ignored');
  else if (after !== '') notes.push(`the rest of the line (${JSON.stringify(after)}) is ignored`);

  const cidr = fixed === null;
  const parts = (cidr ? m[1] : m[0]).split('.');
  // Perl's split drops trailing empty fields
  let trailing = 0;
  while (parts.length > 1 && parts[parts.length - 1] === '') {
    parts.pop();
    trailing++;
  }
  if (trailing > 0) notes.push(trailing === 1 ? 'the trailing dot is ignored' : 'the trailing dots are ignored');
  if (parts.length > 4) notes.push(`the parts after the fourth (${JSON.stringify(parts.slice(4).join('.'))}) are ignored`);
  const octets: number[] = [];
  for (const p of parts.slice(0, 4)) {
    if (p === '') {
      notes.push('an empty part is read as 0');
      octets.push(0);
      continue;
    }
    const v = Number(BigInt(p) % 256n);
    if (BigInt(p) > 255n) notes.push(`${p} is above 255 and wraps to ${v}, as in greydaemon`);
    octets.push(v);
  }
  if (cidr && octets.length < 4) notes.push('the missing parts of the address are 0');
  while (octets.length < 4) octets.push(0);
  const addr = octetsToInt(octets);

  let prefix = cidr ? Number(m[2]) : (fixed as number);
  if (prefix > 32) {
    notes.push(`/${m[2]} is longer than 32 bits and is read as /32`);
    prefix = 32;
  }
  const network = maskV4(addr, prefix);
  // greydaemon stored such an address unmasked and then matched it oddly (often never);
  // the network the admin wrote is the useful reading
  if (network !== addr) notes.push(`host bits are set; read as the whole /${prefix} network`);
  return { range: { family: 4, prefix, network }, notes };
}

export function formatRange(r: Range): string {
  if (r.family === 4) {
    const n = r.network;
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/${r.prefix}`;
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((r.network >> BigInt(i * 16)) & 0xffffn).toString(16));
  // the canonical text, unless that would be the IPv4-mapped form of another family
  const n = normaliseIp(groups.join(':'));
  return `${n !== null && n.family === 6 ? n.ip : groups.join(':')}/${r.prefix}`;
}

function octetsToInt(o: number[]): number {
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}

export function ipv4ToInt(ip: string): number {
  // the daemon's case, once or twice a request: four decimal parts, read without allocating
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39 && digits < 3) {
      part = part * 10 + (c - 0x30);
      digits++;
    } else if (c === 0x2e && digits > 0 && part <= 255 && dots < 3) {
      n = (n << 8) | part;
      part = 0;
      digits = 0;
      dots++;
    } else {
      return octetsToInt(ip.split('.').map(Number));
    }
  }
  if (dots !== 3 || digits === 0 || part > 255) return octetsToInt(ip.split('.').map(Number));
  return ((n << 8) | part) >>> 0;
}

function maskV4(addr: number, prefix: number): number {
  if (prefix === 0) return 0;
  return (addr & (0xffffffff << (32 - prefix))) >>> 0;
}

export function ipv6ToBigInt(ip: string): bigint {
  let n = 0n;
  for (const g of ipv6Groups(ip)) n = (n << 16n) | BigInt(g);
  return n;
}

const ALL128 = (1n << 128n) - 1n;
function maskV6(addr: bigint, prefix: number): bigint {
  if (prefix === 0) return 0n;
  return addr & (ALL128 ^ ((1n << BigInt(128 - prefix)) - 1n));
}

/** The files -w names: each path that is a file, and the files of each path that is a
 *  directory, in name order. */
export function whitelistFiles(paths: readonly string[]): string[] {
  const out: string[] = [];
  for (const path of paths) {
    let isDir: boolean;
    try {
      isDir = statSync(path).isDirectory();
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new WhitelistError(`whitelist ${path}: cannot read it (${err.code ?? err.message}); give a readable file or directory with -w`);
    }
    if (!isDir) {
      out.push(path);
      continue;
    }
    let names: string[];
    try {
      names = readdirSync(path).sort();
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new WhitelistError(`whitelist ${path}: cannot list the directory (${err.code ?? err.message}); make it readable by qgreyd's user`);
    }
    for (const name of names) {
      if (name.startsWith('.') || name.endsWith('~')) continue;
      const file = join(path, name);
      let st;
      try {
        st = statSync(file);
      } catch {
        continue; // removed while we listed it
      }
      if (st.isFile()) out.push(file);
    }
  }
  return out;
}
