// The UDP side: the dgram socket, decoding, handing requests to the decision queue, replies
// and the decision log.
import dgram from 'node:dgram';
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import { AllowList, RateLimitedCounter } from './access.js';
import type { ExceptionEntry } from '../exceptions.js';
import type { Greylist, Result } from './queue.js';
import type { Decision } from '../policy.js';
import { formatDecisionLine, formatMalformedLine } from '../decision-log.js';
import { escapeField, LineWriter, quoted, RateLimitedLines } from '../log/log.js';
import { bindTargets, formatAddress, type BindTarget, type Interfaces, type ListenSpec } from './listen.js';
import type { Metrics } from '../metrics.js';
import { decodeRequest, encodeReply, replyText, type Request, Verdict } from '../protocol.js';

/** Recipients shown in one log line; the rest are counted. */
/** Requests read but not yet answered, at most (by count and by datagram bytes). Past this the
 *  daemon is not keeping up; further requests are answered "not decided" at once without
 *  being held, so memory stays bounded and no client waits for a reply that will not come
 *  (IndiMail's qmail-smtpd defers and hangs up on silence). */
export const MAX_IN_FLIGHT = 20_000;
export const MAX_IN_FLIGHT_BYTES = 32 * 1024 * 1024;

export interface ServerOptions {
  /** wildcards stand for every address on the host's interfaces (see listen.ts) */
  listen?: readonly ListenSpec[];
  /** one address: the same as listen: [{ host, port }] */
  host?: string;
  port?: number;
  debug: boolean;
  log: LineWriter;
  /** who may ask; default: everyone */
  allow?: AllowList;
  /** the host's interfaces, read again at each rescan(); default os.networkInterfaces */
  interfaces?: () => Interfaces;
  /** answer "not decided" with a defer (00 04) instead of an accept (01 05) */
  failClosed?: boolean;
  /** the in-flight bounds; default MAX_IN_FLIGHT and MAX_IN_FLIGHT_BYTES */
  maxInFlight?: number | undefined;
  maxInFlightBytes?: number;
  /** at close, how long requests still waiting for a batch may wait before they are answered
   *  "not decided" (reason=shutdown); default SHUTDOWN_GRACE_MS */
  shutdownGraceMs?: number;
  /** --metrics: told of every reply */
  metrics?: Pick<Metrics, 'reply'> | undefined;
}

/** One bound socket. A reply is sent through the socket its request came in on, so that it
 *  leaves from the address the client sent to. */
interface Listener {
  target: BindTarget;
  socket: dgram.Socket;
  /** the bound port (the socket cannot be asked once closed) */
  port: number;
  /** false once closed (its address left the host): replies still due are dropped */
  open: boolean;
}

/** The sender of a datagram, and the socket that received it. */
type Peer = dgram.RemoteInfo & { via: Listener };

/** what the server keeps with a request while it waits for its decision */
interface Submitted {
  client: string;
  rinfo: Peer;
  msg: Buffer;
  req: Request;
  /** when it was read (performance.now()), with --metrics; else 0 */
  t0: number;
}

/** A socket that could not be bound, with the error's code (EADDRINUSE, EACCES, ...). */
export class ListenError extends Error {
  constructor(
    readonly address: string,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

export interface RescanResult {
  added: string[];
  removed: string[];
  failed: ListenError[];
}

/** Below the clients' 3-second wait, so that a stalled store cannot turn a restart into
 *  silence for the requests read before it. */
export const SHUTDOWN_GRACE_MS = 1500;

/** At close, the longest to wait for replies still in a socket's send queue, in ms. */
const SEND_DRAIN_MS = 1000;

export class Server {
  /** by bind address and port */
  private listeners = new Map<string, Listener>();
  /** the port a spec with port 0 got at its first bind; every later bind of it uses the same */
  private zeroPort = 0;
  private closed = false;
  private syncing: Promise<void> = Promise.resolve();
  private inFlight = 0;
  private inFlightBytes = 0;
  private drained: Array<() => void> = [];
  counters = { received: 0, malformed: 0, replied: 0, storeErrors: 0, shutdown: 0 };
  readonly refused: RateLimitedCounter;
  readonly overload: RateLimitedCounter;
  readonly malformedLog: RateLimitedLines;
  private readonly allow: AllowList;
  private greylist: Greylist | null = null;
  /** datagrams that arrived between binding and attach(): start-up opens the store only
   *  after binding and dropping privileges */
  private early: Array<[Buffer, Peer]> = [];
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
    this.malformedLog = new RateLimitedLines((l) => opts.log.line(l), 'malformed');
  }

  /** Requests read and not yet answered. */
  get pending(): number {
    return this.inFlight;
  }

  /** Start deciding, beginning with what arrived since listen(). */
  attach(greylist: Greylist): void {
    this.greylist = greylist;
    const early = this.early;
    this.early = [];
    this.earlyBytes = 0;
    for (const [msg, rinfo] of early) this.onMessage(msg, rinfo);
  }

  /** Binds every address the listen specs stand for; rejects with a ListenError for the
   *  first that fails, except an address found behind a wildcard that is not (or not yet)
   *  usable (EADDRNOTAVAIL: say an IPv6 address still in duplicate address detection), which
   *  is only reported in `failed` and tried again at the next rescan(). */
  async listen(): Promise<{ address: string; port: number; bound: string[]; failed: ListenError[] }> {
    const r = await this.sync(true);
    const first = this.listeners.values().next();
    if (first.done) {
      const given = (this.opts.listen ?? []).map((l) => formatAddress(l.host, l.port)).join(',');
      throw new ListenError(given, 'EADDRNOTAVAIL', 'no interface that is up has an address of that family');
    }
    return { address: first.value.target.address, port: first.value.port, bound: this.bound(), failed: r.failed };
  }

  /** Every bound address, as address:port. */
  bound(): string[] {
    return [...this.listeners.values()].map((l) => formatAddress(l.target.address, l.port));
  }

  /** Reads the interfaces again (SIGHUP): binds addresses that appeared behind a wildcard and
   *  closes the sockets of those that went away. Never rejects. */
  rescan(): Promise<RescanResult> {
    // one at a time: two quick SIGHUPs must not bind the same address twice
    const next = this.syncing.then(() => this.sync(false));
    this.syncing = next.then(() => undefined);
    return next;
  }

  private async sync(startup: boolean): Promise<RescanResult> {
    const interfaces = (this.opts.interfaces ?? networkInterfaces)();
    const specs = this.opts.listen ?? [{ host: this.opts.host ?? '127.0.0.1', port: this.opts.port ?? 0 }];
    const targets = bindTargets(specs, interfaces);
    const want = new Map<string, BindTarget>();
    for (const t of targets) want.set(this.key(t), t);
    const result: RescanResult = { added: [], removed: [], failed: [] };
    for (const [key, l] of this.listeners) {
      if (want.has(key)) continue;
      this.listeners.delete(key);
      l.open = false;
      result.removed.push(formatAddress(l.target.address, l.port));
      l.socket.close();
    }
    for (const [key, t] of want) {
      if (this.listeners.has(key) || this.closed) continue;
      try {
        const l = await this.bindOne(t);
        this.listeners.set(key, l);
        result.added.push(formatAddress(t.address, l.port));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const where = formatAddress(t.address, t.port === 0 ? this.zeroPort : t.port);
        const le = new ListenError(where, err.code, err.message);
        if (startup && !(t.fromWildcard && err.code === 'EADDRNOTAVAIL')) {
          for (const l of this.listeners.values()) l.socket.close();
          this.listeners.clear();
          throw le;
        }
        result.failed.push(le);
      }
    }
    return result;
  }

  private key(t: BindTarget): string {
    return `${t.address} ${t.port}`;
  }

  private bindOne(t: BindTarget): Promise<Listener> {
    // no reuseAddr: with SO_REUSEADDR, another local user could bind the same address and
    // port and take the datagrams; without it that bind fails, and so does a wildcard bind
    // of the port by anyone else
    const socket = dgram.createSocket({ type: t.family === 6 ? 'udp6' : 'udp4', ipv6Only: t.family === 6, lookup: t.family === 6 ? literalLookup6 : literalLookup4 });
    const port = t.port === 0 ? this.zeroPort : t.port;
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => {
        try {
          socket.close();
        } catch {
          // already closed by the failed bind
        }
        reject(err);
      };
      socket.once('error', onError);
      socket.bind(port, t.address, () => {
        socket.off('error', onError);
        const listener: Listener = { target: t, socket, port: socket.address().port, open: true };
        if (t.port === 0 && this.zeroPort === 0) this.zeroPort = listener.port;
        socket.on('error', (err) => this.opts.log.line(`error socket listen=${formatAddress(t.address, listener.port)} ${quoted(err.message)}`));
        socket.on('message', (msg, rinfo) => {
          // rinfo is a fresh object per datagram: tagging it costs no allocation
          (rinfo as Peer).via = listener;
          this.onMessage(msg, rinfo as Peer);
        });
        resolve(listener);
      });
    });
  }

  private onMessage(msg: Buffer, rinfo: Peer): void {
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
    // the reply's latency is measured only when metrics are on
    const t0 = this.opts.metrics === undefined ? 0 : performance.now();
    greylist.submit(req, this.onResult, rinfo.address, { client, rinfo, msg, req, t0 });
  }

  /** one callback for every decided request: no closure per request on the hot path */
  private readonly onResult = (result: Result, p: Submitted): void => {
    this.answer(p.client, p.rinfo, p.msg, p.req, result, p.t0);
    this.inFlightBytes -= p.msg.length;
    if (--this.inFlight === 0) {
      const d = this.drained;
      this.drained = [];
      for (const f of d) f();
    }
  };

  /** Over the in-flight bound: a request is answered "not decided" at once (one linear decode,
   *  nothing held); what is not a request stays unanswered. Counted and logged at a rate
   *  limit: one line per datagram would make the log the next bottleneck. */
  private overloaded(msg: Buffer, rinfo: Peer): void {
    this.overload.note(clientText(rinfo));
    const decoded = decodeRequest(msg);
    if (!decoded.ok || 'error' in decoded.request.tail) return;
    this.reply(encodeReply(this.notDecided), rinfo);
  }

  /** Sends a reply. No callback: a datagram the kernel takes at once (nearly always) costs
   *  no callback and no tick; one it could not take waits in the socket's send queue, which
   *  close() lets drain before closing the socket. A failed send is dropped, as a lost
   *  datagram would be: the client asks again. */
  private reply(bytes: Buffer, rinfo: Peer): void {
    // through the socket the request came in on, so that the reply leaves from the address
    // the client sent to; a socket closed since (its address left the host) sends nothing
    if (!rinfo.via.open) return;
    rinfo.via.socket.send(bytes, rinfo.port, rinfo.address);
  }

  private answer(client: string, rinfo: Peer, msg: Buffer, req: Request, result: Result, t0: number): void {
    if (result.kind === 'malformed') {
      this.malformed(client, msg, result.error, req.ip);
      return;
    }
    const verdict = result.kind === 'decision' ? result.decision.verdict : this.notDecided;
    this.reply(encodeReply(verdict), rinfo);
    this.counters.replied++;
    const reason = result.kind === 'decision' ? verdict : result.reason;
    const d = result.kind === 'decision' ? result.decision : undefined;
    if (result.kind === 'undecided') {
      // a store too slow to answer in time counts with the store's errors
      if (result.reason === 'shutdown') this.counters.shutdown++;
      else this.counters.storeErrors++;
    }
    const line = formatDecisionLine({
      client,
      ip: req.ip,
      envelope: 'error' in req.tail ? undefined : req.tail,
      reply: replyText(verdict),
      reason,
      whitelist: result.kind === 'decision' ? result.whitelistEntry ?? undefined : undefined,
      // the keys the decision used, when the grouping options made them differ from the request
      net: d !== undefined && d.client !== req.ip ? d.client : undefined,
      keyFrom: d?.keySender,
      exception: d === undefined ? undefined : exceptionOf(d),
      error: result.kind === 'undecided' ? result.error : undefined,
    });
    this.opts.log.line(line);
    this.opts.metrics?.reply(replyText(verdict), reason, (performance.now() - t0) / 1000, result.kind === 'decision' ? result : undefined);
    if (this.opts.debug && result.kind === 'decision') {
      for (const d of result.decision.detail) {
        this.opts.log.line(`debug client=${client} triplet=<${escapeField(d.key)}> outcome=${d.outcome} age=${d.age ?? '-'}`);
      }
    }
  }

  private malformed(client: string, msg: Buffer, error: string, ip?: string): void {
    this.counters.malformed++;
    if (!this.malformedLog.admit(client)) return;
    this.opts.log.line(formatMalformedLine(client, ip, msg.length, error));
    if (this.opts.debug) {
      this.opts.log.line(`debug client=${client} datagram=${msg.subarray(0, 64).toString('hex')}${msg.length > 64 ? '...' : ''}`);
    }
  }

  /** Stop taking datagrams, and resolve once those already taken are answered. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const listeners = [...this.listeners.values()];
    for (const l of listeners) l.socket.removeAllListeners('message');
    this.refused.flush();
    this.overload.flush();
    this.malformedLog.flush();
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
    // replies the kernel could not take at once wait in a socket's send queue, which closing
    // it would drop; no event says it has drained, so it is looked at every millisecond
    for (let waited = 0; waited < SEND_DRAIN_MS && listeners.some((l) => l.socket.getSendQueueCount() > 0); waited++) {
      await new Promise((r) => setTimeout(r, 1));
    }
    this.listeners.clear();
    await Promise.all(
      listeners.map((l) => {
        l.open = false;
        return new Promise<void>((r) => l.socket.close(() => r()));
      }),
    );
  }
}

/** The exceptions entry of the first recipient that matched one, if any. */
function exceptionOf(d: Decision): ExceptionEntry | undefined {
  const detail = d.detail;
  for (let i = 0; i < detail.length; i++) if (detail[i].exception !== undefined) return detail[i].exception;
  return undefined;
}

function clientText(rinfo: dgram.RemoteInfo): string {
  return rinfo.family === 'IPv6' ? `[${rinfo.address}]:${rinfo.port}` : `${rinfo.address}:${rinfo.port}`;
}

/** The sockets' address lookup: every address they bind or send to is an IP literal (a bind
 *  target, or the address a request came from), so it is handed back at once. dgram's default,
 *  dns.lookup, defers every send to the next tick to say the same. */
function literalLookup4(address: string, _options: unknown, callback: (err: null, address: string, family: number) => void): void {
  callback(null, address, 4);
}
function literalLookup6(address: string, _options: unknown, callback: (err: null, address: string, family: number) => void): void {
  callback(null, address, 6);
}
