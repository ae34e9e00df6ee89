// A test client that behaves like the two real qmail-smtpd families at the DATA stage
// (PROTOCOL.md, "The two client families"): how each reads GREYIP, builds its datagram, waits
// for the reply, and what it answers the SMTP client on a reply, on silence and on an error.
// Used by the integration tests against the spawned daemon; another test (a network namespace
// one) may drive it too, so it depends on nothing but Node and the protocol's encoding.
//
// Sources followed: IndiMail's greylist.c (connect()ed UDP socket, the whole recipient list in
// one datagram, GREYTIMEOUT 3 s, err_greytimeout: "451 greylist temporary failure - Timeout"
// and _exit, err_grey_tmpfail: 451 and _exit on any socket error) and PROTOCOL.md's table for
// the rest (GREYIP quirks of the current IndiMail, the netqmail patch's accept-on-silence and
// its 2000-byte buffer).
import dgram from 'node:dgram';
import { isIP } from 'node:net';

export type Family = 'netqmail' | 'indimail';

export const DEFAULT_GREY_HOST = '127.0.0.1';
export const DEFAULT_GREY_PORT = 1999;
/** GREYTIMEOUT of both clients */
export const GREY_TIMEOUT_MS = 3000;
/** MAXGREYDATASIZE: the netqmail patch's request buffer */
export const NETQMAIL_MAX_REQUEST = 2000;

export type Greyip =
  | { kind: 'off' }
  | { kind: 'error'; why: string }
  | { kind: 'server'; host: string; port: number };

/** How the family reads the GREYIP variable (undefined: not set). */
export function parseGreyip(family: Family, value: string | undefined): Greyip {
  if (value === undefined || value === '') return { kind: 'off' };
  return family === 'netqmail' ? parseNetqmail(value) : parseIndimail(value);
}

/** `ip:port`, as qmail's ip_scan + scan_ulong read it: an IPv4 prefix (else the default IP),
 *  then `:digits` (else the default port). Nothing is an error: `":"` is both defaults. */
function parseNetqmail(s: string): Greyip {
  const ip = /^(\d+)\.(\d+)\.(\d+)\.(\d+)/.exec(s);
  const host = ip ? ip.slice(1, 5).map((o) => Number(o) & 255).join('.') : DEFAULT_GREY_HOST;
  const rest = s.slice(ip ? ip[0].length : 0);
  const port = /^:(\d+)/.exec(rest);
  return { kind: 'server', host, port: port ? Number(port[1]) & 0xffff : DEFAULT_GREY_PORT };
}

/** `ip@port`, with the current IndiMail's quirks: `"@"` or a bare IP mean the defaults for
 *  what is missing; `::1` becomes 127.0.0.1; in `ip:port` the port is ignored (1999); `":"`
 *  and `[::1]:port` are parse errors (451 on every message). */
function parseIndimail(s: string): Greyip {
  const at = s.lastIndexOf('@');
  let ipText = at >= 0 ? s.slice(0, at) : s;
  const portText = at >= 0 ? s.slice(at + 1) : '';
  let port = DEFAULT_GREY_PORT;
  if (portText !== '') {
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) return { kind: 'error', why: `bad port ${JSON.stringify(portText)}` };
    port = Number(portText);
  }
  if (ipText === '') return { kind: 'server', host: DEFAULT_GREY_HOST, port };
  if (ipText.startsWith('[')) return { kind: 'error', why: `cannot parse ${JSON.stringify(ipText)}` };
  if (ipText === '::1') return { kind: 'server', host: '127.0.0.1', port };
  const v4port = /^(\d+\.\d+\.\d+\.\d+):\d*$/.exec(ipText);
  if (v4port && isIP(v4port[1]) === 4) return { kind: 'server', host: v4port[1], port: DEFAULT_GREY_PORT };
  ipText = ipText.toLowerCase();
  if (isIP(ipText) === 0) return { kind: 'error', why: `cannot parse ${JSON.stringify(ipText)}` };
  return { kind: 'server', host: ipText, port };
}

/** The environment tcpserver gives qmail-smtpd, as far as greylisting reads it. */
export interface TcpEnv {
  TCPREMOTEIP?: string;
  TCP6REMOTEIP?: string;
}

/** The client-ip field each family sends. IndiMail: TCP6REMOTEIP, else TCPREMOTEIP, else
 *  `unknown` (under an IPv6 tcpserver an IPv4 client arrives as TCP6REMOTEIP=::ffff:a.b.c.d).
 *  netqmail: TCPREMOTEIP as it is (empty when unset). */
export function clientIpField(family: Family, env: TcpEnv): string {
  if (family === 'netqmail') return env.TCPREMOTEIP ?? '';
  return env.TCP6REMOTEIP || env.TCPREMOTEIP || 'unknown';
}

/** The datagram: `I ip \0 F sender \0 (T rcpt \0)*` as qmail-smtpd builds it from its rcptto
 *  list (no extra final NUL). IndiMail lower-cases the addresses and sends all of them;
 *  netqmail sends them as given, cut to its 2000-byte buffer. */
export function buildRequest(family: Family, env: TcpEnv, sender: string, recipients: readonly string[]): Buffer {
  const lc = (a: string) => (family === 'indimail' ? a.toLowerCase() : a);
  const text = `I${clientIpField(family, env)}\0F${lc(sender)}\0` + recipients.map((r) => `T${lc(r)}\0`).join('');
  const buf = Buffer.from(text, 'latin1');
  return family === 'netqmail' && buf.length > NETQMAIL_MAX_REQUEST ? buf.subarray(0, NETQMAIL_MAX_REQUEST) : buf;
}

export type Cause = 'reply' | 'timeout' | 'refused' | 'send-error' | 'parse-error' | 'off';

/** What qmail-smtpd does with the message at DATA. */
export interface Outcome {
  /** accept: DATA goes on (354); defer: a 451 to the SMTP client */
  smtp: 'accept' | 'defer';
  /** the SMTP line qmail-smtpd writes (for a defer) or 354 */
  response: string;
  cause: Cause;
  /** the reply bytes as hex, when one came */
  reply?: string;
  /** IndiMail ends the SMTP session after a greylisting failure (_exit) */
  hangup: boolean;
  /** the datagram sent, if any */
  sent?: Buffer | undefined;
}

export interface ClientOptions {
  family: Family;
  /** the GREYIP value (undefined: unset: no greylisting) */
  greyip: string | undefined;
  /** how long silence lasts before the client gives up; the real clients wait 3 s */
  silenceMs?: number | undefined;
  /** the local address to send from (the daemon sees it as the source; default: any) */
  localAddress?: string;
}

const ACCEPT = '354 go ahead';
// the wording is nominal; only the 4xx class reaches the sender's MTA
const GREYLISTED = '451 greylisted';

/** One qmail-smtpd process's greylisting: check() is its DATA stage for one message. */
export class QmailSmtpd {
  readonly family: Family;
  readonly greyip: Greyip;
  private readonly silenceMs: number;
  private readonly localAddress?: string | undefined;

  constructor(opts: ClientOptions) {
    this.family = opts.family;
    this.greyip = parseGreyip(opts.family, opts.greyip);
    this.silenceMs = opts.silenceMs ?? GREY_TIMEOUT_MS;
    this.localAddress = opts.localAddress;
  }

  async check(env: TcpEnv, sender: string, recipients: readonly string[]): Promise<Outcome> {
    const g = this.greyip;
    if (g.kind === 'off') return { smtp: 'accept', response: ACCEPT, cause: 'off', hangup: false };
    if (g.kind === 'error') return this.failed('parse-error', undefined);
    const msg = buildRequest(this.family, env, sender, recipients);
    const r = await exchange(g.host, g.port, msg, this.family === 'indimail', this.silenceMs, this.localAddress);
    if (r.kind === 'reply') {
      const hex = r.bytes.toString('hex');
      // only the first byte decides; a short reply still has one
      const defer = r.bytes.length > 0 && r.bytes[0] === 0;
      return { smtp: defer ? 'defer' : 'accept', response: defer ? GREYLISTED : ACCEPT, cause: 'reply', reply: hex, hangup: false, sent: msg };
    }
    return this.failed(r.kind, msg);
  }

  /** No usable reply. netqmail: the mail goes through (a dead daemon never blocks mail).
   *  IndiMail: 451 and the session ends. */
  private failed(cause: Exclude<Cause, 'reply' | 'off'>, sent: Buffer | undefined): Outcome {
    if (this.family === 'netqmail') return { smtp: 'accept', response: ACCEPT, cause, hangup: false, sent };
    const response = cause === 'timeout' ? '451 greylist temporary failure - Timeout (#4.3.0)' : '451 greylist temporary failure (#4.3.0)';
    return { smtp: 'defer', response, cause, hangup: true, sent };
  }
}

type Exchange = { kind: 'reply'; bytes: Buffer } | { kind: 'timeout' | 'refused' | 'send-error' };

/** One datagram out, one reply back. `connected`: a connect()ed socket, as IndiMail's: the
 *  kernel drops replies from any other source address and reports ICMP port unreachable. */
function exchange(host: string, port: number, msg: Buffer, connected: boolean, silenceMs: number, localAddress?: string): Promise<Exchange> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
    let settled = false;
    const finish = (r: Exchange) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ kind: 'timeout' }), silenceMs);
    sock.on('message', (m, rinfo) => {
      // an unconnected socket takes the first datagram from anywhere, as recvfrom does
      if (!connected || (rinfo.address === host && rinfo.port === port)) finish({ kind: 'reply', bytes: m });
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish({ kind: e.code === 'ECONNREFUSED' ? 'refused' : 'send-error' }));
    const send = () => {
      const cb = (e: Error | null) => {
        if (e) finish({ kind: 'send-error' });
      };
      if (connected) sock.send(msg, cb);
      else sock.send(msg, port, host, cb);
    };
    const afterBind = () => (connected ? sock.connect(port, host, send) : send());
    if (localAddress !== undefined) sock.bind(0, localAddress, afterBind);
    else afterBind();
  });
}
