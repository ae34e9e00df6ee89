// The --store URL: which Redis (or Redis Cluster) holds the greylist. Parsed once, checked
// fully, so a typo is refused at start with a message naming the value, never discovered as
// an outage at the first request.
//   redis://[user:password@]host:port[/db]      one server (or a Sentinel-managed primary's address)
//   rediss://[user:password@]host:port[/db]     the same over TLS
//   redis-cluster://[user:password@]host:port[,host:port...]   seed nodes of a Redis Cluster
//   rediss-cluster://...                        a Cluster over TLS
// The password never reaches a log line or an error message: describe() prints the URL with
// it masked.

export interface RedisAddress {
  host: string;
  port: number;
}

export interface RedisTarget {
  cluster: boolean;
  tls: boolean;
  nodes: RedisAddress[];
  username?: string;
  password?: string;
  /** database number (standalone only; a Cluster has only database 0) */
  db: number;
}

export class StoreUrlError extends Error {}

const DEFAULT_PORT = 6379;

function fail(url: string, why: string): never {
  throw new StoreUrlError(`--store ${describeRaw(url)}: ${why}; give redis://[user:password@]host:port[/db], rediss://... (TLS) or redis-cluster://host:port[,host:port...]`);
}

/** The URL with any password replaced by ***, for messages about a URL that did not parse. */
function describeRaw(url: string): string {
  return JSON.stringify(url.replace(/^([a-z-]+:\/\/)([^@/]*):([^@/]*)@/i, '$1$2:***@'));
}

function parseHostPort(url: string, text: string): RedisAddress {
  let host: string;
  let portText: string | undefined;
  const bracket = /^\[([0-9a-fA-F:.]+)\](?::(.*))?$/.exec(text);
  if (bracket !== null) {
    host = bracket[1];
    portText = bracket[2];
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0 && text.indexOf(':') !== colon) fail(url, `${JSON.stringify(text)}: write an IPv6 address in brackets, [::1]:6379`);
    host = colon >= 0 ? text.slice(0, colon) : text;
    portText = colon >= 0 ? text.slice(colon + 1) : undefined;
  }
  if (host === '' || !/^[A-Za-z0-9._:-]+$/.test(host)) fail(url, `${JSON.stringify(text)} has no host name or address`);
  let port = DEFAULT_PORT;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) fail(url, `port ${JSON.stringify(portText)} is not a number from 1 to 65535`);
    port = Number(portText);
  }
  return { host, port };
}

export function parseStoreUrl(url: string): RedisTarget {
  const m = /^([a-z-]+):\/\/(.*)$/i.exec(url);
  if (m === null) fail(url, 'not a URL');
  const scheme = m[1].toLowerCase();
  const schemes: Record<string, { cluster: boolean; tls: boolean }> = {
    redis: { cluster: false, tls: false },
    rediss: { cluster: false, tls: true },
    'redis-cluster': { cluster: true, tls: false },
    'rediss-cluster': { cluster: true, tls: true },
  };
  const kind = schemes[scheme];
  if (kind === undefined) fail(url, `unknown scheme ${JSON.stringify(scheme)}`);
  let rest = m[2];
  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const cred = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = cred.indexOf(':');
    const user = decode(url, colon >= 0 ? cred.slice(0, colon) : cred);
    if (colon >= 0) password = decode(url, cred.slice(colon + 1));
    else if (user !== '') {
      // redis://secret@host is how many tools write a password without a user name
      password = user;
    }
    if (colon >= 0 && user !== '') username = user;
  }
  let db = 0;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const dbText = rest.slice(slash + 1);
    rest = rest.slice(0, slash);
    if (dbText !== '') {
      if (!/^\d{1,2}$/.test(dbText)) fail(url, `database ${JSON.stringify(dbText)} is not a number`);
      db = Number(dbText);
    }
    if (kind.cluster && db !== 0) fail(url, 'a Redis Cluster has only database 0');
  }
  if (rest === '') fail(url, 'no host');
  const parts = rest.split(',');
  if (!kind.cluster && parts.length > 1) fail(url, 'several hosts are for redis-cluster://');
  const nodes = parts.map((p) => parseHostPort(url, p));
  return { ...kind, nodes, db, ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}) };
}

function decode(url: string, s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    fail(url, 'the user name or password has a bad %-escape');
  }
}

/** The target as logs and messages show it: the password as ***. */
export function describeTarget(t: RedisTarget): string {
  const scheme = (t.tls ? 'rediss' : 'redis') + (t.cluster ? '-cluster' : '');
  const cred = t.username !== undefined || t.password !== undefined ? `${t.username ?? ''}${t.password !== undefined ? ':***' : ''}@` : '';
  const hosts = t.nodes.map((n) => `${n.host.includes(':') ? `[${n.host}]` : n.host}:${n.port}`).join(',');
  return `${scheme}://${cred}${hosts}${t.db !== 0 ? `/${t.db}` : ''}`;
}
