// An independent reading of PROTOCOL.md for the fuzz test: which datagrams are well-formed,
// which triplets they create and what the reply is, written without the daemon's decoder or
// policy so that a bug there cannot hide behind the same bug in the expectation.
// It covers the fuzz test's settings only: no whitelist, and no retry ever passes (every
// stored triplet is retried "too soon"), so no IP becomes known good.
import { isIP } from 'node:net';

/** RFC 5321's 256-octet path, doubled (PROTOCOL.md, Request) */
const MAX_ADDRESS = 512;
const MAX_CLIENT_IP = 64;

export class Oracle {
  readonly triplets = new Set<string>();

  /** The reply as hex ("0001"), or null when the datagram is malformed (no reply, no change). */
  apply(buf: Buffer): string | null {
    const text = buf.toString('latin1');
    const fields = text.split('\0');
    while (fields.length > 0 && fields[fields.length - 1] === '') fields.pop();
    if (fields.length < 1 || !fields[0].startsWith('I')) return null;
    const ipText = fields[0].slice(1);
    // not an address: printable ASCII without spaces is greylisted as text
    const ip = canonicalIp(ipText) ?? (/^[!-~]{1,64}$/.test(ipText) && ipText.length <= MAX_CLIENT_IP ? ipText : null);
    if (ip === null) return null;
    if (fields.length < 2 || !fields[1].startsWith('F')) return null;
    const rcpts = fields.slice(2);
    if (rcpts.some((f) => !f.startsWith('T'))) return null;
    if ([fields[1], ...rcpts].some((f) => f.length - 1 > MAX_ADDRESS)) return null;

    const sender = fields[1].slice(1).replace(/ /g, '') || '.';
    let reply = '0103';
    const fresh = new Set<string>();
    for (const raw of rcpts) {
      const rcpt = raw.slice(1).replace(/ /g, '');
      const dash = rcpt.indexOf('-');
      if (sender === '.' && dash >= 0 && rcpt.indexOf('=', dash + 1) > dash) {
        reply = '0104';
        break;
      }
      const key = `${ip} ${sender} ${rcpt}`.replace(/[A-Z]/g, (c) => c.toLowerCase());
      if (this.triplets.has(key) || fresh.has(key)) reply = '0002';
      else {
        fresh.add(key);
        reply = '0001';
      }
    }
    for (const k of fresh) this.triplets.add(k);
    return reply;
  }
}

/** IPv4 as is; IPv6 in RFC 5952 form (via the WHATWG URL serialiser), zone dropped, and an
 *  IPv4-mapped address as the IPv4 address it names. */
function canonicalIp(text: string): string | null {
  const kind = isIP(text);
  if (kind === 4) return text;
  if (kind !== 6) return null;
  const host = new URL(`http://[${text.replace(/%.*$/, '')}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (mapped) {
    const hi = parseInt(mapped[1], 16);
    const lo = parseInt(mapped[2], 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return host;
}
