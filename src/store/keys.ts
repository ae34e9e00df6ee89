// The record key format and the value encoding, once. Keys are chosen so that a dump reads
// like greydaemon's save file:
//   "I <ip>"                      -> last-good time (Unix seconds)
//   "G <ip> <sender> <recipient>" -> first-seen time (Unix seconds)
// Values are msgpack-lite encoded (a uint32 for any time up to 2106). The triplet text itself
// ("<ip> <sender> <recipient>") comes from policy.tripletKey: this module only prefixes it.
import msgpack from 'msgpack-lite';
import { StoreError } from './errors.js';

/** The format version, in the meta record FORMAT_KEY, so a later release can migrate. */
export const FORMAT_VERSION = 1;
export const FORMAT_KEY = '!format';
export const IP_PREFIX = 'I ';
export const TRIPLET_PREFIX = 'G ';

export function ipKey(ip: string): string {
  return IP_PREFIX + ip;
}

export function tripletDbKey(triplet: string): string {
  return TRIPLET_PREFIX + triplet;
}

/** The client IP of a record key: what a shared backend groups a request's keys by. */
export function keyIp(key: string): string {
  const sp = key.indexOf(' ', 2);
  return sp < 0 ? key.slice(2) : key.slice(2, sp);
}

export function isIpKey(key: string): boolean {
  return key.startsWith(IP_PREFIX);
}

export function encodeTime(t: number): Buffer {
  return msgpack.encode(t);
}

export function decodeTime(b: Buffer): number {
  // what msgpack-lite writes for a Unix time up to 2106 (uint32); anything else takes the
  // general decoder
  if (b.length === 5 && b[0] === 0xce) return b.readUInt32BE(1);
  const v: unknown = msgpack.decode(b);
  if (typeof v !== 'number') throw new StoreError('QGREYD_STORE_CORRUPT', `a stored record is not a time (${typeof v})`);
  return v;
}

export function encodeMeta(meta: { format: number; created: number }): Buffer {
  return msgpack.encode(meta);
}

export function decodeMeta(b: Buffer): { format?: unknown } {
  return msgpack.decode(b) as { format?: unknown };
}
