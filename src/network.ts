// --ipv4-prefix / --ipv6-prefix: the client network a request is greylisted by. With the
// defaults (32 and 128) it is the address itself, exactly as greydaemon keys its records;
// with /24 and /64 a retry from another host of the same pool is the same client.
// A client-ip that is not an address (`unknown`) is its own network.
import { canonicalIpv6, ipv6Groups } from './ip.js';

export interface Prefixes {
  v4: number;
  v6: number;
}

export const EXACT: Prefixes = { v4: 32, v6: 128 };

/** The key for ip (already normalised, of the given family): the address at full length,
 *  else `network/prefix` in canonical text. */
export function networkOf(ip: string, family: 4 | 6 | 0, p: Prefixes): string {
  if (family === 4) {
    if (p.v4 >= 32) return ip;
    const parts = ip.split('.').map(Number);
    const n = ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
    const masked = p.v4 === 0 ? 0 : (n & (~0 << (32 - p.v4))) >>> 0;
    return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${p.v4}`;
  }
  if (family === 6) {
    if (p.v6 >= 128) return ip;
    const groups = ipv6Groups(ip);
    for (let i = 0; i < 8; i++) {
      const keep = Math.max(0, Math.min(16, p.v6 - i * 16));
      groups[i] = keep === 0 ? 0 : groups[i] & (0xffff << (16 - keep)) & 0xffff;
    }
    return `${canonicalIpv6(groups.map((g) => g.toString(16)).join(':'))}/${p.v6}`;
  }
  return ip;
}

/** A prefix flag's value, or an error message. */
export function parsePrefix(raw: string, family: 4 | 6): number | string {
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(raw.trim())) return `${JSON.stringify(raw)} is not a prefix length; give a whole number from 8 to ${max}`;
  const n = Number(raw.trim());
  if (n < 8 || n > max) return `${n} is out of range; give a prefix length from 8 to ${max}`;
  return n;
}
