// The costliest requests, for tests and benchmarks of the per-request bounds.
import { MAX_ADDRESS, MAX_DATAGRAM, MAX_REQUEST_BYTES, tripletBytes } from '../src/protocol.js';

/** A longest allowed sender and distinct two-byte recipients, so that each stores a key
 *  carrying the whole sender: as many as the per-request bound allows (the costliest
 *  well-formed request), or (`overBound`) as many as fit in the datagram (an attack: 9.5 MB of
 *  keys, which the decoder refuses). `tag` makes the sender, and so every triplet, unique. */
export function worstCaseRequest(ip: string, tag: string, overBound = false): Buffer {
  const sender = (tag + '-').padEnd(MAX_ADDRESS - 10, 's') + '@x.example';
  const head = `I${ip}\0F${sender}\0`;
  const fit = Math.floor((MAX_DATAGRAM - head.length) / 4);
  const allowed = Math.floor(MAX_REQUEST_BYTES / tripletBytes(ip.length, sender.length, 2));
  const n = overBound ? fit : Math.min(fit, allowed);
  // any byte but NUL, space and upper case (spaces are removed, case is folded): every
  // recipient a distinct triplet
  let chars = '';
  for (let c = 1; c < 256; c++) if (c !== 0x20 && !(c >= 0x41 && c <= 0x5a)) chars += String.fromCharCode(c);
  const rc: string[] = [];
  for (let i = 0; i < n; i++) rc.push(`T${chars[i % chars.length]}${chars[Math.floor(i / chars.length) % chars.length]}\0`);
  const buf = Buffer.from(head + rc.join(''), 'latin1');
  if (buf.length > MAX_DATAGRAM) throw new Error(`worst case of ${buf.length} bytes`);
  return buf;
}
