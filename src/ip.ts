// IP address text: parse, canonical form (RFC 5952), IPv4-mapped IPv6 as the IPv4 host.
// One place, so the daemon, the whitelist, qgreyctl and the report agree on what an address is.
import { isIP } from 'node:net';

/** Canonical text of an IP address, or null. IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4
 *  host it names, so it greylists and whitelists as that host. */
export function normaliseIp(text: string): { ip: string; family: 4 | 6 } | null {
  const kind = isIP(text);
  if (kind === 4) return { ip: text, family: 4 };
  if (kind !== 6) return null;
  const canon = canonicalIpv6(text);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(canon);
  if (mapped) return { ip: mapped[1], family: 4 };
  return { ip: canon, family: 6 };
}

/** RFC 5952 text for an IPv6 address that isIP() already accepted. */
export function canonicalIpv6(text: string): string {
  const groups = ipv6Groups(text);
  // an embedded IPv4 tail is kept for the mapped form only
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return `::ffff:${groups[6] >> 8}.${groups[6] & 255}.${groups[7] >> 8}.${groups[7] & 255}`;
  }
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The eight 16-bit groups of an IPv6 address that isIP() already accepted. */
export function ipv6Groups(text: string): number[] {
  let s = text.toLowerCase();
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    s = s.slice(0, v4.index) + ((a << 8) | b).toString(16) + ':' + ((c << 8) | d).toString(16);
  }
  const halves = s.split('::');
  const head = halves[0] === '' ? [] : halves[0].split(':');
  const tail = halves.length > 1 ? (halves[1] === '' ? [] : halves[1].split(':')) : [];
  const zeros = new Array<string>(8 - head.length - tail.length).fill('0');
  return [...head, ...(halves.length > 1 ? zeros : []), ...tail].map((g) => parseInt(g, 16));
}

/** "host:port", with an IPv6 host in brackets ([::1]:1999) so the port cannot be misread. */
export function hostPort(host: string, port: number | string): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
