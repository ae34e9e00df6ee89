// The wire format of PROTOCOL.md: request bytes -> fields, verdict -> two reply bytes.
// No I/O here. Bytes are decoded as latin1 so that every byte survives as one char:
// the reference (Perl) treats addresses as bytes, and so do we.
import { normaliseIp } from './ip.js';

/** The largest UDP payload over IPv4; anything we are handed is at most this. */
export const MAX_DATAGRAM = 65507;
/** The longest sender or recipient, in bytes. RFC 5321 allows a path of 256 octets (254 for
 *  the address without its angle brackets); twice that leaves room for forwarders' rewritten
 *  addresses (SRS, BATV, VERP of an already long address) while keeping one request's stored
 *  keys bounded: a longer address is not mail but an attack on the store, so the request is
 *  malformed. */
export const MAX_ADDRESS = 512;
/** The longest client-ip field: an IPv6 address with an IPv4 tail and a zone fits easily. */
export const MAX_CLIENT_IP = 64;
/** The most bytes of triplet records one request may store (and so read, build and write):
 *  see tripletBytes(). Every recipient stores a key holding the IP and the whole sender, so a
 *  64 KB datagram of tiny recipients behind a long sender would store about 9.5 MB; real mail
 *  stays under 1 MB even with a 254-byte sender and a datagram full of 20-byte recipients. A
 *  request over this is not mail but an attack on the store: malformed. */
export const MAX_REQUEST_BYTES = 2 * 1024 * 1024;

/** What one recipient's triplet record may take in the store: the key (ip, sender, recipient
 *  and separators) and the value, rounded up. */
export function tripletBytes(ipLength: number, senderLength: number, rcptLength: number): number {
  return ipLength + senderLength + rcptLength + 16;
}

/** A request whose first field was a client IP. `tail` is either the sender and recipients
 *  or, when they do not follow the format, why not. Whether a bad tail makes the whole request
 *  malformed depends on the IP (whitelisted and known-good IPs never look at it), which is a
 *  policy question, so the decoder reports it rather than deciding it. */
export interface Request {
  /** normalised client IP: IPv4 dotted quad, IPv6 in canonical lower-case form, or (family 0)
   *  the text a client sent when it did not know the address, e.g. `unknown` */
  ip: string;
  /** 0: not an address; greylisted as text, never whitelisted */
  family: 0 | 4 | 6;
  tail: Envelope | { error: string };
}

export interface Envelope {
  /** envelope sender without the leading 'F', as received (may be empty) */
  sender: string;
  /** recipients without the leading 'T', as received */
  recipients: string[];
}

export type Decoded = { ok: true; request: Request } | { ok: false; error: string };

const NUL = 0;

/** One pass over the bytes: the work is proportional to the datagram's length whatever it
 *  holds (the fuzz test once found a quadratic case in NUL padding). */
export function decodeRequest(buf: Uint8Array): Decoded {
  if (buf.length === 0) return { ok: false, error: 'empty datagram' };
  if (buf.length > MAX_DATAGRAM) return { ok: false, error: `datagram of ${buf.length} bytes is too long` };
  // trailing empty fields are ignored: stop at the last non-NUL byte
  let end = buf.length;
  while (end > 0 && buf[end - 1] === NUL) end--;
  if (end === 0) return { ok: false, error: 'no fields' };
  const fields: string[] = [];
  let start = 0;
  for (let i = 0; i < end; i++) {
    if (buf[i] === NUL) {
      fields.push(latin1(buf, start, i));
      start = i + 1;
    }
  }
  // A last field without its NUL (a truncated datagram) still counts, as with Perl's split.
  fields.push(latin1(buf, start, end));

  const first = fields[0];
  if (first.charCodeAt(0) !== 0x49 /* I */) return { ok: false, error: 'first field does not start with I' };
  const ip = clientIp(first.slice(1));
  if (typeof ip === 'string') return { ok: false, error: ip };
  return { ok: true, request: { ip: ip.ip, family: ip.family, tail: decodeTail(fields, ip.ip.length) } };
}

/** The client-ip field: an address, normalised, or a printable token such as `unknown` (what
 *  IndiMail's qmail-smtpd sends without TCPREMOTEIP), kept as text like the reference does.
 *  Spaces would blur the triplet key's fields, so they are not allowed. */
function clientIp(text: string): { ip: string; family: 0 | 4 | 6 } | string {
  const n = normaliseIp(text);
  if (n !== null) return n;
  if (text === '') return 'the client IP field is empty';
  if (text.length > MAX_CLIENT_IP) return `client IP field of length ${text.length} is longer than ${MAX_CLIENT_IP}`;
  if (!/^[\x21-\x7e]+$/.test(text)) return 'client IP is neither an address nor printable text without spaces';
  return { ip: text, family: 0 };
}

function decodeTail(fields: string[], ipLength: number): Envelope | { error: string } {
  if (fields.length < 2) return { error: 'no sender field' };
  const f = fields[1];
  if (f.charCodeAt(0) !== 0x46 /* F */) return { error: 'second field does not start with F' };
  if (f.length - 1 > MAX_ADDRESS) return { error: `sender of length ${f.length - 1} is longer than ${MAX_ADDRESS}` };
  const recipients = new Array<string>(fields.length - 2);
  let bytes = 0;
  for (let i = 2; i < fields.length; i++) {
    const t = fields[i];
    if (t.charCodeAt(0) !== 0x54 /* T */) {
      return { error: t === '' ? `field ${i + 1} is empty` : `field ${i + 1} does not start with T` };
    }
    if (t.length - 1 > MAX_ADDRESS) return { error: `recipient ${i - 1} of length ${t.length - 1} is longer than ${MAX_ADDRESS}` };
    bytes += tripletBytes(ipLength, f.length - 1, t.length - 1);
    if (bytes > MAX_REQUEST_BYTES) {
      return { error: `${fields.length - 2} recipients of a ${f.length - 1}-byte sender would store more than ${MAX_REQUEST_BYTES} bytes` };
    }
    recipients[i - 2] = t.slice(1);
  }
  return { sender: f.slice(1), recipients };
}

function latin1(buf: Uint8Array, from: number, to: number): string {
  // a datagram is a Buffer already: no view per field
  if (Buffer.isBuffer(buf)) return buf.toString('latin1', from, to);
  return Buffer.from(buf.buffer, buf.byteOffset + from, to - from).toString('latin1');
}

/** The verdicts of PROTOCOL.md, "Reply". */
export const Verdict = {
  Whitelisted: 'whitelisted',
  KnownGood: 'known-good',
  Passed: 'passed',
  VerpBounce: 'verp-bounce',
  New: 'new',
  TooSoon: 'too-soon',
  TooLate: 'too-late',
  /** could not decide (store unavailable, overload, shutdown): accept, the failing-open way */
  NotDecided: 'not-decided',
  /** could not decide, and the administrator chose to fail closed: defer */
  NotDecidedClosed: 'not-decided-closed',
  /** every recipient is in the --exceptions file: accept (this project's extension) */
  Exception: 'exception',
  /** a new triplet from a client network at its --max-pending cap: defer without storing
   *  (this project's extension) */
  PendingCap: 'pending-cap',
} as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

const REPLY_BYTES: Record<Verdict, readonly [number, number]> = {
  'whitelisted': [1, 1],
  'known-good': [1, 2],
  'passed': [1, 3],
  'verp-bounce': [1, 4],
  'new': [0, 1],
  'too-soon': [0, 2],
  'too-late': [0, 3],
  'not-decided': [1, 5],
  'not-decided-closed': [0, 4],
  'exception': [1, 6],
  'pending-cap': [0, 5],
};

const REPLY_BUFFERS = Object.fromEntries(
  Object.entries(REPLY_BYTES).map(([v, b]) => [v, Buffer.from(b)]),
) as Record<Verdict, Buffer>;

/** The two reply bytes. The buffers are shared and must not be modified. */
export function encodeReply(v: Verdict): Buffer {
  return REPLY_BUFFERS[v];
}

const REPLY_TEXTS = Object.fromEntries(
  Object.entries(REPLY_BYTES).map(([v, [a, b]]) => [v, `0${a}:0${b}`]),
) as Record<Verdict, string>;

/** "00:01" as logged. */
export function replyText(v: Verdict): string {
  return REPLY_TEXTS[v];
}

export function isAccept(v: Verdict): boolean {
  return REPLY_BYTES[v][0] !== 0;
}

/** Inverse of encodeReply, for clients (qgreyctl query, tests). */
export function decodeReply(buf: Uint8Array): Verdict | null {
  if (buf.length !== 2) return null;
  for (const [v, b] of Object.entries(REPLY_BYTES) as [Verdict, readonly [number, number]][]) {
    if (b[0] === buf[0] && b[1] === buf[1]) return v;
  }
  return null;
}

/** Build a request datagram (for clients and tests): what qmail-smtpd sends. */
export function encodeRequest(ip: string, sender: string, recipients: readonly string[]): Buffer {
  const parts = ['I' + ip, 'F' + sender, ...recipients.map((r) => 'T' + r)];
  return Buffer.from(parts.join('\0') + '\0\0', 'latin1');
}
