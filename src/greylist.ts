// The decision queue. Requests are decided in batches: the requests taken for one batch are
// decided against the store (plus the batch's own earlier changes), the batch's changes are
// written to LevelDB in one atomic write (a group commit), and only then are the replies
// released. Other work that touches the store (the expiry sweep, admin changes) runs between
// batches, never inside one.
//
// Fairness: requests wait in one queue per source address (the qmail-smtpd host), and a batch
// takes them round-robin across sources until its budget of key bytes is spent, so one client
// sending worst-case requests in a loop delays another's by at most the batch in progress:
// the other's request is in the next one. Within one source, requests are decided in arrival
// order.
import type { OpsContext } from './admin/ops.js';
import type { PendingCounts } from './pending.js';
import { clientKey, decide, GREYDAEMON, isDeadIp, isDeadTriplet, isFuture, tripletKeys, type Decision, type Grouping, type RecordView, type Settings } from './policy.js';
import { tripletBytes, type Request } from './protocol.js';
import { IP_PREFIX, ipKey, Store, TRIPLET_PREFIX, tripletDbKey } from './store.js';
import type { Whitelist, WhitelistEntry } from './whitelist.js';

/** Why a well-formed request could not be decided. */
export type UndecidedReason = 'store-error' | 'shutdown';

export type Result =
  | { kind: 'decision'; decision: Decision; whitelistEntry?: WhitelistEntry | undefined }
  | { kind: 'malformed'; error: string }
  | { kind: 'undecided'; reason: UndecidedReason; error?: string };

type Done = (r: Result) => void;
interface PendingRequest {
  req: Request;
  done: Done;
  cost: number;
}
interface PendingTask {
  task: () => Promise<void>;
}

/** A batch stops taking requests once their costs reach this many bytes (it always takes at
 *  least one). About 4,000 ordinary requests: large enough that group commit keeps its
 *  throughput, small enough that a batch takes milliseconds. */
export const BATCH_BUDGET = 512 * 1024;

/** What a request may cost the store: the bytes of every triplet record it can read and
 *  write (at most MAX_REQUEST_BYTES: the decoder refuses more), with a floor for the IP record.
 *  Proportional to the work and memory the batch spends on it. */
export function requestCost(req: Request): number {
  let cost = 64 + req.ip.length;
  if (!('error' in req.tail)) {
    const s = req.tail.sender.length;
    for (const r of req.tail.recipients) cost += tripletBytes(req.ip.length, s, r.length);
  }
  return cost;
}

/** A FIFO with O(1) take, for one source's waiting requests. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(x: T): void {
    this.items.push(x);
  }
  peek(): T | undefined {
    return this.items[this.head];
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    this.items[this.head++] = undefined as T;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }
  drain(): T[] {
    const out = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return out;
  }
}

export interface SweepReport {
  scanned: number;
  deleted: number;
  /** records dated ahead of now, set to now */
  normalised: number;
  ms: number;
  /** the first corruption the sweep met and stepped over, if any */
  corrupt?: string;
  /** how long the compaction after the sweep took, when there was one */
  compactMs?: number;
}

interface SweepMade {
  deleted: number;
  normalised: number;
}

/** A write to the store: a time sets a record, null deletes it. */
export type StoreOp = readonly [key: string, time: number | null];

export class Greylist {
  /** waiting requests by source; the Map's order is the round-robin ring */
  private sources = new Map<string, Fifo<PendingRequest>>();
  private waiting = 0;
  private tasks: PendingTask[] = [];
  private running = false;
  private idleWaiters: Array<() => void> = [];
  private sweeping: Promise<SweepReport> | null = null;
  private stopping = false;
  /** keys written (by batches and through write()) since the running sweep's snapshot */
  private sweepWatch: Set<string> | null = null;
  /** request batches decided since the sweep's last chunk */
  private requestBatches = 0;
  /** the sweep's changes (dead keys to delete, future-dated ones to set to now); the next
   *  batch makes them in its own write */
  private sweepOps: Array<{ ops: StoreOp[]; done: (made: SweepMade | Error) => void }> = [];
  /** The clock the sweep judges deadness by, in Unix seconds. It may run behind `clock`
   *  (after a forward jump of the wall clock) but never ahead of it. */
  expiryClock: () => number;
  /** A test seam: awaited after the sweep chose a chunk's changes from its snapshot and
   *  before it hands them over. */
  onSweepChunk: ((ops: readonly StoreOp[]) => Promise<void>) | null = null;
  /** the budget of one batch, in cost bytes (a knob for tests) */
  batchBudget = BATCH_BUDGET;
  /** the opt-in grouping rules (network keys, sender tags, exceptions, pending cap) */
  grouping: Grouping = GREYDAEMON;
  /** triplets stored per client key, kept when --max-pending is on */
  pending: PendingCounts | null = null;

  constructor(
    readonly store: Store,
    public settings: Settings,
    public whitelist: Whitelist,
    readonly clock: () => number = unixNow,
  ) {
    this.expiryClock = clock;
  }

  /** Writes outside a request batch (admin changes): run it inside exclusive(). The keys are
   *  noted exactly as a batch's are, so a running sweep does not undo the write. */
  async write(ops: readonly StoreOp[]): Promise<void> {
    this.noteWrites(ops.map((o) => o[0]));
    const pending = this.pending;
    if (pending === null) {
      await this.store.write(ops);
      return;
    }
    // admin changes are rare: which triplets they create or delete is read, not guessed
    const triplets = ops.filter((o) => o[0].startsWith(TRIPLET_PREFIX));
    const before = await this.store.get(triplets.map((o) => o[0]));
    await this.store.write(ops);
    triplets.forEach(([key, time], i) => {
      if (before[i] === undefined && time !== null) pending.addKey(key.slice(TRIPLET_PREFIX.length), 1);
      else if (before[i] !== undefined && time === null) pending.addKey(key.slice(TRIPLET_PREFIX.length), -1);
    });
  }

  /** What qgreyctl's operations run with in the daemon: serialised with the batches, and
   *  every change through write(). */
  opsContext(): OpsContext {
    const settings = () => this.settings;
    const grouping = () => this.grouping;
    return {
      store: this.store,
      get settings() {
        return settings();
      },
      get grouping() {
        return grouping();
      },
      clock: this.clock,
      exclusive: (fn) => this.exclusive(fn),
      write: (ops) => this.write(ops),
    };
  }

  /** From just before its snapshot on, the sweep leaves every key written meanwhile alone. */
  private noteWrites(keys: Iterable<string>): void {
    if (this.sweepWatch === null) return;
    for (const k of keys) this.sweepWatch.add(k);
  }

  /** Queue a request from `source` (the client's address); `done` is called once its
   *  decision is stored (or could not be). */
  submit(req: Request, done: Done, source = ''): void {
    let q = this.sources.get(source);
    if (q === undefined) {
      q = new Fifo();
      // a source with nothing waiting goes to the front of the ring, ahead of sources served
      // in the batch now running: its request is in the next batch, whatever floods the queue
      // (sources are mail servers on --allow: few, so rebuilding the ring costs little)
      this.sources = this.sources.size === 0 ? this.sources.set(source, q) : new Map([[source, q], ...this.sources]);
    }
    q.push({ req, done, cost: requestCost(req) });
    this.waiting++;
    this.kick();
  }

  decideAsync(req: Request, source = ''): Promise<Result> {
    return new Promise((resolve) => this.submit(req, resolve, source));
  }

  /** Requests waiting for a batch (not those being decided). */
  get queued(): number {
    return this.waiting;
  }

  /** Answer every request still waiting for a batch as not decided, at once; the batch
   *  being decided, if any, finishes normally. For shutdown with a stalled store. */
  abandonWaiting(reason: UndecidedReason): number {
    const all: PendingRequest[] = [];
    for (const q of this.sources.values()) all.push(...q.drain());
    this.sources.clear();
    this.waiting = 0;
    for (const p of all) p.done({ kind: 'undecided', reason });
    return all.length;
  }

  /** Run work that reads or changes the store between batches, alone. It runs before the
   *  next batch. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.tasks.push({ task: () => fn().then(resolve, reject) });
      this.kick();
    });
  }

  /** Resolves when everything queued so far has been handled. */
  idle(): Promise<void> {
    if (!this.running && this.waiting === 0 && this.tasks.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    // let the rest of this turn's datagrams join the batch
    setImmediate(() => void this.drain());
  }

  /** The next batch: round-robin across sources until the budget is spent. A source that
   *  still has requests goes to the back of the ring. */
  private takeBatch(): PendingRequest[] {
    const batch: PendingRequest[] = [];
    let spent = 0;
    while (this.waiting > 0 && (batch.length === 0 || spent < this.batchBudget)) {
      for (const [source, q] of this.sources) {
        // a request that does not fit waits for the next batch, which it opens: small requests
        // ahead of it are not held up by its work
        if (batch.length > 0 && spent + q.peek()!.cost > this.batchBudget) return batch;
        const p = q.shift()!;
        this.waiting--;
        batch.push(p);
        spent += p.cost;
        this.sources.delete(source);
        if (q.length > 0) this.sources.set(source, q);
        if (spent >= this.batchBudget || this.waiting === 0) break;
      }
    }
    return batch;
  }

  private async drain(): Promise<void> {
    while (this.waiting > 0 || this.tasks.length > 0 || this.sweepOps.length > 0) {
      const task = this.tasks.shift();
      if (task !== undefined) {
        await task.task().catch(() => undefined);
        continue;
      }
      await this.runBatch(this.takeBatch());
      // a batch of deletes alone, when no request came
      if (this.waiting === 0 && this.sweepOps.length > 0) await new Promise<void>((r) => setImmediate(r));
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async runBatch(batch: PendingRequest[]): Promise<void> {
    if (batch.length > 0) this.requestBatches++;
    const now = this.clock();
    const results = new Array<Result>(batch.length);
    const g = this.grouping;
    const pending = this.pending;
    // triplets this batch creates: counted as they are decided (later requests of the batch
    // see them), taken back if the write fails
    const created: string[] = [];
    try {
      // One read for the whole batch: each IP's record, and the triplets of every request
      // whose IP is not known good in the cache (an IP found known good only in LevelDB makes
      // its triplets' read wasted, which is rare and cheaper than a second round trip).
      // a client IP sent as text (`unknown`) never matches a range
      const listed = batch.map((p) => (p.req.family === 0 ? undefined : this.whitelist.matchNormalised(p.req.ip, p.req.family)));
      // store keys to read, and where each value goes: lastGood by IP, firstSeen by triplet
      const keys: string[] = [];
      const into: Array<[Map<string, number | undefined>, string]> = [];
      const lastGood = new Map<string, number | undefined>();
      const firstSeen = new Map<string, number | undefined>();
      for (let i = 0; i < batch.length; i++) {
        if (listed[i]) continue;
        const req = batch[i].req;
        const client = clientKey(req, g);
        const ik = ipKey(client);
        keys.push(ik);
        into.push([lastGood, client]);
        const lg = this.store.peek(ik);
        if (typeof lg === 'number' && lg > now - this.settings.timeout) continue;
        if ('error' in req.tail) continue;
        for (const k of tripletKeys(client, req.tail, g)) {
          // a recipient listed twice is read once
          if (firstSeen.has(k)) continue;
          firstSeen.set(k, undefined);
          keys.push(tripletDbKey(k));
          into.push([firstSeen, k]);
        }
      }
      const vals = await this.store.get(keys);
      into.forEach(([map, k], i) => map.set(k, vals[i]));

      // decide in order; later requests of the batch see earlier ones' changes
      const view: RecordView = {
        lastGood: (client) => lastGood.get(client),
        firstSeen: (key) => firstSeen.get(key),
        pending: (client) => pending?.get(client) ?? 0,
      };
      const writes = new Map<string, number>();
      for (let i = 0; i < batch.length; i++) {
        const out = decide(batch[i].req, listed[i] !== undefined, view, now, this.settings, g);
        if ('malformed' in out) {
          results[i] = { kind: 'malformed', error: out.malformed };
          continue;
        }
        if (out.knownGood !== undefined) {
          const ip = out.client;
          // refreshing a known-good IP within the same second changes nothing on disk
          if (lastGood.get(ip) !== out.knownGood) writes.set(ipKey(ip), out.knownGood);
          lastGood.set(ip, out.knownGood);
        }
        for (const [key, t] of out.triplets) {
          if (pending !== null && firstSeen.get(key) === undefined) {
            pending.addKey(key, 1);
            created.push(key);
          }
          firstSeen.set(key, t);
          writes.set(tripletDbKey(key), t);
        }
        results[i] = { kind: 'decision', decision: out, whitelistEntry: listed[i] };
      }
      this.noteWrites(writes.keys());
      const ops: StoreOp[] = [...writes];
      // the sweep's changes ride along in this write: no round trip of their own between
      // batches. A key written since the sweep's snapshot was read is left alone.
      const sweep = this.sweepOps;
      this.sweepOps = [];
      const counts = sweep.map((group) => {
        const made: SweepMade = { deleted: 0, normalised: 0 };
        for (const op of group.ops) {
          if (writes.has(op[0]) || this.sweepWatch?.has(op[0])) continue;
          ops.push(op);
          if (op[1] === null) made.deleted++;
          else made.normalised++;
        }
        return made;
      });
      try {
        await this.store.write(ops);
      } catch (e) {
        for (const group of sweep) group.done(e as Error);
        throw e;
      }
      created.length = 0;
      if (pending !== null) {
        for (const [key, time] of ops) {
          if (time === null && key.startsWith(TRIPLET_PREFIX)) pending.addKey(key.slice(TRIPLET_PREFIX.length), -1);
        }
      }
      sweep.forEach((group, i) => group.done(counts[i]));
    } catch (e) {
      for (const key of created) pending?.addKey(key, -1);
      const error = (e as Error).message ?? String(e);
      for (let i = 0; i < batch.length; i++) {
        if (results[i]?.kind !== 'malformed') results[i] = { kind: 'undecided', reason: 'store-error', error };
      }
    }
    for (let i = 0; i < batch.length; i++) batch[i].done(results[i]);
  }

  /** Delete dead records (PROTOCOL.md, Expiry), a chunk at a time, without stalling requests.
   *  Records are read from a LevelDB snapshot while batches run, and a chunk's dead keys are
   *  deleted in the next batch's own write (no write of their own between batches). From just
   *  before the snapshot on, every write through this object (batches, and admin changes
   *  through write()) notes its keys, and a noted key is left for the next sweep: every other
   *  record still holds the value read. The note is bounded: past WATCH_LIMIT keys the scan
   *  restarts, with a fresh snapshot, after the last key it read. While requests come, the
   *  sweep pauses after each chunk.
   *  Deadness is judged by expiryClock; a record dated ahead of the request clock is set to
   *  now. A corrupt part of the store is stepped over and reported. After a sweep that
   *  deleted much, the store is compacted. */
  sweep(chunk = 250): Promise<SweepReport> {
    this.sweeping ??= this.runSweep(chunk).finally(() => {
      this.sweepWatch = null;
      this.sweeping = null;
    });
    return this.sweeping;
  }

  private async runSweep(chunk: number): Promise<SweepReport> {
    const started = Date.now();
    const report: SweepReport = { scanned: 0, deleted: 0, normalised: 0, ms: 0 };
    const onCorrupt = (message: string) => (report.corrupt ??= message);
    for (const [prefix, dead] of [
      [TRIPLET_PREFIX, isDeadTriplet],
      [IP_PREFIX, isDeadIp],
    ] as const) {
      let after: string | undefined;
      for (let restart = true; restart && !this.stopping; ) {
        restart = false;
        await this.exclusive(async () => {
          this.sweepWatch = new Set();
        });
        for await (const records of this.store.scan(prefix, { after, chunk, onCorrupt })) {
          if (this.stopping) break;
          report.scanned += records.length;
          after = records[records.length - 1].key;
          const now = this.clock();
          const expiryNow = Math.min(this.expiryClock(), now);
          const ops: StoreOp[] = [];
          for (const r of records) {
            if (isFuture(r.time, now, this.settings)) ops.push([r.key, now]);
            else if (dead(r.time, expiryNow, this.settings)) ops.push([r.key, null]);
          }
          if (ops.length > 0) {
            await this.onSweepChunk?.(ops);
            const made = await new Promise<SweepMade>((resolve, reject) => {
              this.sweepOps.push({ ops, done: (m) => (m instanceof Error ? reject(m) : resolve(m)) });
              this.kick();
            });
            report.deleted += made.deleted;
            report.normalised += made.normalised;
          }
          // paced while requests come: the sweep competes with them for the CPU and LevelDB
          if (this.requestBatches > 0) {
            this.requestBatches = 0;
            await new Promise((r) => setTimeout(r, SWEEP_PAUSE_MS));
          }
          if ((this.sweepWatch?.size ?? 0) > WATCH_LIMIT) {
            restart = true;
            break;
          }
        }
      }
    }
    this.sweepWatch = null;
    // Deleted records leave tombstones and the old values in LevelDB's files until a
    // compaction reaches them, which a store that stopped growing may wait for for ever.
    // Not over a corrupt block: a compaction that reads one fails, and LevelDB then refuses
    // every write until the store is reopened.
    if (!this.stopping && report.corrupt === undefined && shouldCompact(report.deleted, report.scanned)) {
      const t = Date.now();
      await this.store.compact();
      report.compactMs = Date.now() - t;
    }
    report.ms = Date.now() - started;
    return report;
  }

  /** Finish what is queued, abandon a running sweep; the store stays open. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.sweeping?.catch(() => undefined);
    await this.idle();
  }
}

/** A sweep compacts the store when it deleted at least COMPACT_MIN records and at least
 *  1/COMPACT_FRACTION of those it scanned: a mass expiry, not the steady trickle a busy store
 *  sees each sweep (LevelDB's own compactions keep up with that). */
export const COMPACT_MIN = 10_000;
export const COMPACT_FRACTION = 4;
export function shouldCompact(deleted: number, scanned: number): boolean {
  return deleted >= COMPACT_MIN && deleted * COMPACT_FRACTION >= scanned;
}

/** keys the sweep notes before it restarts its scan with a fresh snapshot */
const WATCH_LIMIT = 20_000;
/** the sweep's pause after a chunk when requests were decided meanwhile */
const SWEEP_PAUSE_MS = 10;

export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}
