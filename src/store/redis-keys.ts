// How records are named in Redis. Readable in redis-cli, the format version in every name, and
// every key one request touches (its IP record and all its triplets) in one Cluster slot: the
// client IP, lower-cased as the triplet key has it, is the hash tag.
//   qgreyd:1:I:{192.0.2.1}                          -> "1763900000"   (last-good time)
//   qgreyd:1:G:{192.0.2.1} bob@example.com ned@example.org  -> "1763900000"   (first-seen time)
// Values are the Unix time in decimal. The IP text of a client that sent a non-address
// ("UNKNOWN") keeps its case after the tag (qgreyd:1:I:{unknown}UNKNOWN), as the local store
// keeps it. Braces and % in an IP text are %-escaped so the tag always ends at its own brace.

export const REDIS_FORMAT = 1;
export const REDIS_PREFIX = `qgreyd:${REDIS_FORMAT}:`;
/** The store-wide format marker: a later release that changes the layout refuses an older
 *  daemon's store rather than misreading it. */
export const REDIS_FORMAT_KEY = 'qgreyd:format';
const IP_NAME = `${REDIS_PREFIX}I:`;
const TRIPLET_NAME = `${REDIS_PREFIX}G:`;
/** SCAN pattern for every record of this format */
export const REDIS_MATCH = `${REDIS_PREFIX}*`;

function asciiLower(s: string): string {
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : s;
}

function tag(ip: string): string {
  const lower = asciiLower(ip);
  // an empty tag would make Redis hash the whole key, splitting a request over slots
  if (lower === '') return '{%}';
  return `{${/[{}%]/.test(lower) ? lower.replace(/[{}%]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase()) : lower}}`;
}

function untag(t: string): string {
  if (t === '%') return '';
  return t.indexOf('%') < 0 ? t : t.replace(/%([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** The key of an IP's known-good record. */
export function redisIpKey(ip: string): string {
  const t = tag(ip);
  return asciiLower(ip) === ip ? IP_NAME + t : `${IP_NAME}${t}${ip}`;
}

/** The key of a triplet, from the policy's triplet key "ip sender recipient" (already lower-case). */
export function redisTripletKey(triplet: string): string {
  const sp = triplet.indexOf(' ');
  if (sp < 0) return TRIPLET_NAME + tag(triplet);
  return TRIPLET_NAME + tag(triplet.slice(0, sp)) + triplet.slice(sp);
}

export type ParsedRedisKey = { kind: 'ip'; ip: string } | { kind: 'triplet'; triplet: string };

/** The record a Redis key names, or null for a key that is not one of ours. */
export function parseRedisKey(key: string): ParsedRedisKey | null {
  const isIp = key.startsWith(IP_NAME);
  if (!isIp && !key.startsWith(TRIPLET_NAME)) return null;
  const rest = key.slice(IP_NAME.length);
  if (rest[0] !== '{') return null;
  const close = rest.indexOf('}');
  if (close < 0) return null;
  const lowerIp = untag(rest.slice(1, close));
  const after = rest.slice(close + 1);
  if (isIp) return { kind: 'ip', ip: after === '' ? lowerIp : after };
  if (after !== '' && after[0] !== ' ') return null;
  return { kind: 'triplet', triplet: lowerIp + after };
}
