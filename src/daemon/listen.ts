// Which local addresses the daemon binds. Node's dgram cannot tell which local address a
// datagram was sent to (no IP_PKTINFO), so a socket bound to a wildcard address would answer
// from whatever address the kernel's route picks: a client with a connect()ed socket (IndiMail's
// qmail-smtpd) that asked through a secondary address drops that answer. So a wildcard is
// never bound as such: it stands for every address configured on the host's interfaces, one
// socket each, and each reply leaves through the socket its request came in on.
import { isIP } from 'node:net';
import type { NetworkInterfaceInfo } from 'node:os';
import { hostPort } from '../ip.js';

/** One listen address as given: an address (possibly a wildcard) and a port (0 = any free). */
export interface ListenSpec {
  host: string;
  port: number;
}

/** One socket to bind: `address` is what dgram's bind takes (a link-local IPv6 address carries
 *  its %interface), `family` picks udp4 or udp6. */
export interface BindTarget {
  address: string;
  family: 4 | 6;
  port: number;
  /** came from a wildcard: an address that cannot be bound is skipped, not fatal */
  fromWildcard: boolean;
}

export type Interfaces = NodeJS.Dict<NetworkInterfaceInfo[]>;

export function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || (isIP(host) === 6 && /^[0:]+$/.test(host));
}

/** The sockets `specs` stand for on a host with `interfaces` (os.networkInterfaces()):
 *  0.0.0.0 is every IPv4 address, :: every IPv4 and IPv6 address (dual-stack, as IndiMail's
 *  own daemon listens), anything else itself. An IPv4 address always gets an IPv4 socket, so no
 *  IPv4-mapped address ever appears as a source or a reply destination. Duplicates are bound once. */
export function bindTargets(specs: readonly ListenSpec[], interfaces: Interfaces): BindTarget[] {
  const out: BindTarget[] = [];
  const seen = new Set<string>();
  const add = (t: BindTarget) => {
    const key = `${t.address} ${t.port}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push(t);
  };
  for (const spec of specs) {
    if (!isWildcard(spec.host)) {
      add({ address: spec.host, family: isIP(spec.host) === 6 ? 6 : 4, port: spec.port, fromWildcard: false });
      continue;
    }
    const withV6 = spec.host !== '0.0.0.0';
    for (const [name, infos] of Object.entries(interfaces)) {
      for (const info of infos ?? []) {
        // Node 18.0-18.3 reported family as a number; 20 gives the string
        const family = info.family === 'IPv4' || (info.family as unknown) === 4 ? 4 : 6;
        if (family === 6 && !withV6) continue;
        // a link-local address exists once per link: bind needs to know which
        const address = family === 6 && /^fe[89ab]/i.test(info.address) && !info.address.includes('%') ? `${info.address}%${name}` : info.address;
        add({ address, family, port: spec.port, fromWildcard: true });
      }
    }
  }
  return out;
}

/** address:port, IPv6 in brackets, as the log shows it. */
export function formatAddress(address: string, port: number): string {
  return hostPort(address, port);
}
