// Live metrics in the Prometheus text format, served over HTTP at /metrics (--metrics).
// The request path pays one plain increment (replies by reply and reason, handed to
// prom-client's counter at scrape time: its own inc() costs more than the rest of the hook)
// and one histogram observation per reply; everything else is read from the daemon's own
// counters when a scrape asks for it. bench/metrics.ts measures it.
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the daemon knows that a scrape reads: functions, called at scrape time only. */
export interface MetricsSources {
  inFlight(): number;
  refused(): number;
  overload(): number;
  malformed(): number;
  /** true while the store answers reads and writes */
  storeHealthy(): boolean;
  /** records left by the last sweep (scanned less deleted; the store keeps no live count),
   *  or null before the first sweep */
  storeRecords(): number | null;
  lastSweep(): { at: number; scanned: number; deleted: number; ms: number } | null;
  /** every whitelist entry with the number of requests it matched since start */
  whitelistHits(): Iterable<{ file: string; line: number; entry: string; hits: number }>;
  /** every exceptions entry (--exceptions) with the recipients it matched since start */
  exceptionHits?(): Iterable<{ file: string; line: number; entry: string; hits: number }>;
}

/** What a reply's decision matched: the whitelist entry of its client, and the exceptions
 *  entry of each recipient (structural, so that this module needs no decision types). */
export interface Matched {
  whitelistEntry?: object | undefined;
  decision: { detail: ReadonlyArray<{ exception?: object }> };
}

/** The daemon's live counters as qgreyctl stats shows them (through the admin socket). The
 *  replies by reason and the whitelist hits are counted only with --metrics. */
export interface LiveCounters {
  /** when the daemon started, Unix seconds */
  started: number;
  received: number;
  replied: number;
  malformed: number;
  storeErrors: number;
  shutdown: number;
  refused: number;
  overload: number;
  inFlight: number;
  storeHealthy: boolean;
  lastSweep: { at: number; scanned: number; deleted: number; ms: number } | null;
  whitelistEntries: number;
  /** null without --metrics */
  replies: Array<{ reply: string; reason: string; count: number }> | null;
  whitelistHits: Array<{ file: string; line: number; entry: string; hits: number }> | null;
  exceptionEntries?: number;
  /** null without --metrics; absent without --exceptions */
  exceptionHits?: Array<{ file: string; line: number; entry: string; hits: number }> | null;
}

/** Request latency buckets, seconds: the client waits about 3 s, so everything that matters
 *  to it is well below that. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3];

export class Metrics {
  readonly registry = new Registry();
  private readonly latency: Histogram;
  /** replies by reply text + reason */
  private readonly replyCount = new Map<string, { reply: string; reason: string; n: number }>();
  /** requests each whitelist entry matched; keyed by the entry object, so a reloaded list
   *  starts its entries at 0 and the old ones are collected with the old list */
  private readonly hits = new WeakMap<object, number>();

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    const replyCount = this.replyCount;
    // registered for the scrape; the counts live in replyCount until then
    new Counter({
      name: 'qgreyd_replies_total',
      help: 'Replies sent, by the two reply bytes and the reason logged with them.',
      labelNames: ['reply', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const r of replyCount.values()) this.inc({ reply: r.reply, reason: r.reason }, r.n);
      },
    });
    this.latency = new Histogram({
      name: 'qgreyd_request_duration_seconds',
      help: 'Time from reading a request to sending its reply (the decision, and the store write before the reply).',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    // counters the daemon already keeps: read at scrape time, never touched per request
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    gauge('qgreyd_in_flight', 'Requests read and not yet answered.', () => sources.inFlight());
    counter('qgreyd_refused_total', 'Datagrams from sources outside --allow (not answered).', () => sources.refused());
    counter('qgreyd_overload_total', 'Requests over the in-flight bound.', () => sources.overload());
    counter('qgreyd_malformed_total', 'Datagrams that are not requests (not answered).', () => sources.malformed());
    gauge('qgreyd_store_healthy', '1 while the store answers, 0 while it is failing.', () => (sources.storeHealthy() ? 1 : 0));
    new Gauge({
      name: 'qgreyd_store_records',
      help: 'Records (known-good IPs and triplets) the last sweep left in the store: it scanned them all and deleted the dead. The store keeps no live count, so records written since are not included; absent until the first sweep.',
      // labelled so that before the first sweep there is no sample at all (a bare gauge
      // always shows one, and 0 would read as an empty store)
      labelNames: ['counted_by'],
      registers,
      collect() {
        const r = sources.storeRecords();
        this.reset();
        if (r !== null) this.set({ counted_by: 'last_sweep' }, r);
      },
    });
    new Gauge({
      name: 'qgreyd_sweep_last',
      help: 'The last sweep: when it ended (Unix seconds), records scanned and deleted, and how long it took (ms).',
      labelNames: ['field'],
      registers,
      collect() {
        const s = sources.lastSweep();
        this.reset();
        if (s === null) return;
        this.set({ field: 'end_time' }, s.at);
        this.set({ field: 'scanned' }, s.scanned);
        this.set({ field: 'deleted' }, s.deleted);
        this.set({ field: 'duration_ms' }, s.ms);
      },
    });
    new Gauge({
      name: 'qgreyd_whitelist_entries',
      help: 'Whitelist entries loaded.',
      registers,
      collect() {
        let n = 0;
        for (const _ of sources.whitelistHits()) n++;
        this.set(n);
      },
    });
    new Gauge({
      name: 'qgreyd_whitelist_hits',
      help: 'Requests each whitelist entry matched since the daemon started (an entry at 0 for months may be dead).',
      labelNames: ['file', 'line', 'entry'],
      registers,
      collect() {
        this.reset();
        for (const h of sources.whitelistHits()) this.set({ file: h.file, line: String(h.line), entry: h.entry }, h.hits);
      },
    });
    const exceptionHits = sources.exceptionHits?.bind(sources);
    if (exceptionHits !== undefined) {
      new Gauge({
        name: 'qgreyd_exception_entries',
        help: 'Exceptions entries (--exceptions) loaded.',
        registers,
        collect() {
          let n = 0;
          for (const _ of exceptionHits()) n++;
          this.set(n);
        },
      });
      new Gauge({
        name: 'qgreyd_exception_hits',
        help: 'Recipients each exceptions entry matched since it was loaded (an entry at 0 for months may be dead).',
        labelNames: ['file', 'line', 'entry'],
        registers,
        collect() {
          this.reset();
          for (const h of exceptionHits()) this.set({ file: h.file, line: String(h.line), entry: h.entry }, h.hits);
        },
      });
    }
  }

  /** One reply sent, `seconds` after its request was read; `matched`, for a decision, says
   *  which whitelist and exceptions entries it matched. */
  reply(replyText: string, reason: string, seconds: number, matched?: Matched): void {
    if (matched !== undefined) {
      const w = matched.whitelistEntry;
      if (w !== undefined) this.hits.set(w, (this.hits.get(w) ?? 0) + 1);
      for (const d of matched.decision.detail) {
        if (d.exception !== undefined) this.hits.set(d.exception, (this.hits.get(d.exception) ?? 0) + 1);
      }
    }
    const key = replyText + reason;
    const c = this.replyCount.get(key);
    if (c === undefined) this.replyCount.set(key, { reply: replyText, reason, n: 1 });
    else c.n++;
    this.latency.observe(seconds);
  }

  /** Requests the whitelist entry (or recipients the exceptions entry) matched since it was
   *  loaded (with --metrics only). */
  whitelistHits(entry: object): number {
    return this.hits.get(entry) ?? 0;
  }

  /** Replies by reply and reason, for qgreyctl stats: the counter's own values. */
  replyCounts(): Promise<Array<{ reply: string; reason: string; count: number }>> {
    return Promise.resolve([...this.replyCount.values()].map((r) => ({ reply: r.reply, reason: r.reason, count: r.n })));
  }

  /** The exposition text, as served at /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Serve GET /metrics on host:port; resolves with the bound address. */
  listen(host: string, port: number): Promise<MetricsServer> {
    const server = http.createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics\n');
        return;
      }
      this.text().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(req.method === 'HEAD' ? undefined : body),
        (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`),
      );
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        const a = server.address() as { address: string; port: number };
        resolve({ address: a.address, port: a.port, close: () => new Promise<void>((r) => server.close(() => r())) });
      });
    });
  }
}

export interface MetricsServer {
  address: string;
  port: number;
  close(): Promise<void>;
}
