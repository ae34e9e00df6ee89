// The UDP side: the dgram socket, decoding, handing requests to the decision queue, replies
// and the decision log.
import dgram from 'node:dgram';
import { isIP } from 'node:net';
import { AllowList, RateLimitedCounter } from './access.js';
import type { Greylist, Result } from './greylist.js';
import { escapeField, LineWriter, quoted } from './log.js';
import { decodeRequest, encodeReply, replyText, type Request, Verdict } from './protocol.js';

/** Recipients shown in one log line; the rest are counted. */
const LOG_RECIPIENTS = 50;
/** Requests read but not yet answered, at most (by count and by datagram bytes). Past this the
 *  daemon is not keeping up; further requests are answered "not decided" at once without
 *  being held, so memory stays bounded and no client waits for a reply that will not come
 *  (IndiMail's qmail-smtpd defers and hangs up on silence). */
export const MAX_IN_FLIGHT = 20_000;
export const MAX_IN_FLIGHT_BYTES = 32 * 1024 * 1024;

export interface ServerOptions {
  host: string;
  port: number;
  debug: boolean;
  log: LineWriter;
  /** who may ask; default: everyone */
  allow?: AllowList;
  /** answer "not decided" with a defer (00 04) instead of an accept (01 05) */
  failClosed?: boolean;
  /** the in-flight bounds; default MAX_IN_FLIGHT and MAX_IN_FLIGHT_BYTES */
  maxInFlight?: number;
  maxInFlightBytes?: number;
  /** at close, how long requests still waiting for a batch may wait before they are answered
   *  "not decided" (reason=shutdown); default SHUTDOWN_GRACE_MS */
  shutdownGraceMs?: number;
}

/** Below the clients' 3-second wait, so that a stalled store cannot turn a restart into
 *  silence for the requests read before it. */
export const SHUTDOWN_GRACE_MS = 1500;

export class Server {
  private socket: dgram.Socket | null = null;
  private inFlight = 0;
  private inFlightBytes = 0;
  private drained: Array<() => void> = [];
  /** replies handed to the socket and not yet sent */
  private sending = 0;
  private sent: Array<() => void> = [];
  counters = { received: 0, malformed: 0, replied: 0, storeErrors: 0, shutdown: 0 };
  readonly refused: RateLimitedCounter;
  readonly overload: RateLimitedCounter;
  private readonly allow: AllowList;
  private greylist: Greylist | null = null;
  /** datagrams that arrived between binding and attach(): start-up opens the store only
   *  after binding and dropping privileges */
  private early: Array<[Buffer, dgram.RemoteInfo]> = [];
  private earlyBytes = 0;
  private readonly maxInFlight: number;
  private readonly maxInFlightBytes: number;
  private readonly notDecided: Verdict;

  constructor(private readonly opts: ServerOptions) {
    this.maxInFlight = opts.maxInFlight ?? MAX_IN_FLIGHT;
    this.maxInFlightBytes = opts.maxInFlightBytes ?? MAX_IN_FLIGHT_BYTES;
    this.notDecided = opts.failClosed ? Verdict.NotDecidedClosed : Verdict.NotDecided;
    this.allow = opts.allow ?? AllowList.everyone();
    this.refused = new RateLimitedCounter((l) => opts.log.line(l), 'refused');
    this.overload = new RateLimitedCounter((l) => opts.log.line(l), 'overload');
  }

  /** Start deciding, beginning with what arrived since listen(). */
  attach(greylist: Greylist): void {
    this.greylist = greylist;
    const early = this.early;
    this.early = [];
    this.earlyBytes = 0;
    for (const [msg, rinfo] of early) this.onMessage(msg, rinfo);
  }

  /** Binds the socket; rejects with the socket error (EADDRINUSE, EACCES, ...). */
  listen(): Promise<{ address: string; port: number }> {
    const type = isIP(this.opts.host) === 6 ? 'udp6' : 'udp4';
    const socket = dgram.createSocket({ type, ipv6Only: type === 'udp6' });
    this.socket = socket;
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      socket.once('error', onError);
      socket.bind(this.opts.port, this.opts.host, () => {
        socket.off('error', onError);
        socket.on('error', (err) => this.opts.log.line(`error socket ${quoted(err.message)}`));
        socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
        const a = socket.address();
        resolve({ address: a.address, port: a.port });
      });
    });
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (!this.allow.allows(rinfo.address)) {
      this.refused.note(clientText(rinfo));
      return;
    }
    const greylist = this.greylist;
    if (greylist === null) {
      if (this.early.length < 10_000 && this.earlyBytes + msg.length <= this.maxInFlightBytes) {
        this.early.push([msg, rinfo]);
        this.earlyBytes += msg.length;
      } else {
        this.overloaded(msg, rinfo);
      }
      return;
    }
    if (this.inFlight >= this.maxInFlight || this.inFlightBytes + msg.length > this.maxInFlightBytes) {
      this.overloaded(msg, rinfo);
      return;
    }
    this.counters.received++;
    const client = clientText(rinfo);
    const decoded = decodeRequest(msg);
    if (!decoded.ok) {
      this.malformed(client, msg, decoded.error);
      return;
    }
    const req = decoded.request;
    this.inFlight++;
    this.inFlightBytes += msg.length;
    greylist.submit(
      req,
      (result) => {
        this.answer(client, rinfo, msg, req, result);
        this.inFlightBytes -= msg.length;
        if (--this.inFlight === 0) {
          const d = this.drained;
          this.drained = [];
          for (const f of d) f();
        }
      },
      rinfo.address,
    );
  }

  /** Over the in-flight bound: a request is answered "not decided" at once (one linear decode,
   *  nothing held); what is not a request stays unanswered. Counted and logged at a rate
   *  limit: one line per datagram would make the log the next bottleneck. */
  private overloaded(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.overload.note(clientText(rinfo));
    const decoded = decodeRequest(msg);
    if (!decoded.ok || 'error' in decoded.request.tail) return;
    this.reply(encodeReply(this.notDecided), rinfo);
  }

  /** Sends a reply, counting it until the datagram has left: close() must not cancel it. */
  private reply(bytes: Buffer, rinfo: dgram.RemoteInfo): void {
    const socket = this.socket;
    if (socket === null) return;
    this.sending++;
    socket.send(bytes, rinfo.port, rinfo.address, this.onSent);
  }

  /** one callback for every reply: no closure per request on the hot path */
  private readonly onSent = (): void => {
    if (--this.sending === 0) {
      const w = this.sent;
      this.sent = [];
      for (const f of w) f();
    }
  };

  private answer(client: string, rinfo: dgram.RemoteInfo, msg: Buffer, req: Request, result: Result): void {
    if (result.kind === 'malformed') {
      this.malformed(client, msg, result.error, req.ip);
      return;
    }
    const verdict = result.kind === 'decision' ? result.decision.verdict : this.notDecided;
    this.reply(encodeReply(verdict), rinfo);
    this.counters.replied++;
    // a client IP sent as text is printable without spaces, and escaped like the addresses
    let line = `client=${client} ip=${escapeField(req.ip)}`;
    if (!('error' in req.tail)) {
      const rc = req.tail.recipients;
      const shown = rc.slice(0, LOG_RECIPIENTS).map((r) => `<${escapeField(r)}>`).join(',');
      const more = rc.length > LOG_RECIPIENTS ? `,+${rc.length - LOG_RECIPIENTS}` : '';
      line += ` from=<${escapeField(req.tail.sender)}> to=${shown}${more}`;
    }
    line += ` reply=${replyText(verdict)} reason=${result.kind === 'decision' ? verdict : result.reason}`;
    if (result.kind === 'decision' && result.whitelistEntry) {
      line += ` whitelist=${escapeField(result.whitelistEntry.file)}:${result.whitelistEntry.line}`;
    }
    if (result.kind === 'undecided') {
      if (result.reason === 'store-error') this.counters.storeErrors++;
      else this.counters.shutdown++;
      if (result.error !== undefined) line += ` error=${quoted(result.error)}`;
    }
    this.opts.log.line(line);
    if (this.opts.debug && result.kind === 'decision') {
      for (const d of result.decision.detail) {
        this.opts.log.line(`debug client=${client} triplet=<${escapeField(d.key)}> outcome=${d.outcome} age=${d.age ?? '-'}`);
      }
    }
  }

  private malformed(client: string, msg: Buffer, error: string, ip?: string): void {
    this.counters.malformed++;
    this.opts.log.line(`client=${client}${ip ? ` ip=${escapeField(ip)}` : ''} reply=none reason=malformed bytes=${msg.length} detail=${quoted(error)}`);
    if (this.opts.debug) {
      this.opts.log.line(`debug client=${client} datagram=${msg.subarray(0, 64).toString('hex')}${msg.length > 64 ? '...' : ''}`);
    }
  }

  /** Stop taking datagrams, and resolve once those already taken are answered. */
  async close(): Promise<void> {
    const socket = this.socket;
    if (!socket) return;
    socket.removeAllListeners('message');
    this.refused.flush();
    this.overload.flush();
    if (this.inFlight > 0) {
      const drained = new Promise<void>((r) => this.drained.push(r));
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((r) => (timer = setTimeout(r, this.opts.shutdownGraceMs ?? SHUTDOWN_GRACE_MS)));
      await Promise.race([drained, grace]);
      clearTimeout(timer);
      // what still waits for a batch is answered now; a batch already running finishes
      this.greylist?.abandonWaiting('shutdown');
      await drained;
    }
    if (this.sending > 0) await new Promise<void>((r) => this.sent.push(r));
    this.socket = null;
    await new Promise<void>((r) => socket.close(() => r()));
  }
}

function clientText(rinfo: dgram.RemoteInfo): string {
  return isIP(rinfo.address) === 6 ? `[${rinfo.address}]:${rinfo.port}` : `${rinfo.address}:${rinfo.port}`;
}
