// The decision queue. Requests are decided in batches, one batch per event-loop turn: the
// requests taken for a batch are decided against the store plus the batch's own earlier
// changes, the batch's changes are committed (durable), and only then are the replies
// released. Other work that touches the store (the sweep's chunks, admin changes) runs between
// batches, never inside one.
//
// Two paths, chosen by what the store declares:
// - a store with an authoritative in-memory index and a synchronous commit (the local store):
//   the whole batch is decided, committed and answered inside one turn, without a promise or
//   a closure per request or per batch;
// - any other store (Redis): the records a batch needs are looked up in one call, each request's
//   changes are committed as a group conditional on the values its decision read, and a request
//   whose group met another daemon's change is decided again in the next batch.
//
// Fairness: requests wait in one queue per source address (the qmail-smtpd host), and a batch
// takes them round-robin across sources until its budget of key bytes is spent, so one client
// sending worst-case requests in a loop delays another's by at most the batch in progress:
// the other's request is in the next one. Within one source, requests are decided in arrival
// order.
import type { OpsContext } from '../admin/ops.js';
import type { PendingCounts } from '../pending.js';
import { clientKey, decide, GREYDAEMON, isKnownGood, tripletKeys, type Decision, type Grouping, type RecordView, type Settings } from '../policy.js';
import { tripletBytes, type Request } from '../protocol.js';
import { IP_PREFIX, ipKey, TRIPLET_PREFIX, tripletDbKey } from '../store/keys.js';
import type { Change, CommitGroup, GreylistStore, Value } from '../store/types.js';
import type { Whitelist, WhitelistEntry } from '../whitelist.js';
import { Sweeper, type SweepReport } from './sweep.js';

export type { SweepReport } from './sweep.js';
export { COMPACT_FRACTION, COMPACT_MIN, shouldCompact } from './sweep.js';

/** Why a well-formed request could not be decided. */
export type UndecidedReason = 'store-error' | 'store-slow' | 'shutdown';

export type Result =
  | { kind: 'decision'; decision: Decision; whitelistEntry?: WhitelistEntry | undefined }
  | { kind: 'malformed'; error: string }
  | { kind: 'undecided'; reason: UndecidedReason; error?: string };

/** Told a request's result; `tag` is what was given to submit() (so one function serves every
 *  request: no closure per request). */
export type Done<T = unknown> = (r: Result, tag: T) => void;

interface PendingRequest {
  req: Request;
  done: Done<never>;
  tag: unknown;
  cost: number;
  source: string;
}
interface PendingTask {
  task: () => Promise<void>;
}

/** On a store without a synchronous commit (Redis), the longest a batch may take before its
 *  requests are answered "not decided" (store-slow). The client waits 3 s and a request may
 *  first wait for the batch before its own, so two of these must stay well under that; the
 *  batch's conditional commit may still land afterwards, which is as harmless as a timeout. */
export const ASYNC_BATCH_DEADLINE_MS = 1000;

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
  unshift(x: T): void {
    if (this.head > 0) this.items[--this.head] = x;
    else this.items.unshift(x);
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

/** A write to the store: a time sets a record, null deletes it. */
export type StoreOp = Change;

function resolveWith(r: Result, resolve: (r: Result) => void): void {
  resolve(r);
}

export class Greylist {
  /** waiting requests by source; the Map's order is the round-robin ring */
  private sources = new Map<string, Fifo<PendingRequest>>();
  private waiting = 0;
  private tasks: PendingTask[] = [];
  private lateTasks: PendingTask[] = [];
  /** the last thing run was a batch: work waiting in lateTasks goes next */
  private batchRan = false;
  /** a task or an asynchronous batch is running: nothing else starts */
  private busy = false;
  private scheduled = false;
  private idleWaiters: Array<() => void> = [];
  private readonly sweeper: Sweeper;
  private readonly syncPath: boolean;
  /** request batches decided since the sweep last looked */
  requestBatches = 0;
  /** The clock the sweep judges deadness by, in Unix seconds. It may run behind `clock`
   *  (after a forward jump of the wall clock) but never ahead of it. */
  expiryClock: () => number;
  /** A test seam: awaited after the sweep chose a chunk's changes and before it commits them. */
  onSweepChunk: ((ops: readonly StoreOp[]) => Promise<void>) | null = null;
  /** A test seam: awaited before each slice of a sweep from the index. */
  onSweepSlice: (() => Promise<void>) | null = null;
  /** Sweep from the store's index when it has one (indexExpiry); false makes it scan, as it
   *  does while pending counts are kept (a knob for tests of the scanning sweep). */
  sweepFromIndex = true;
  /** index slots per slice of a sweep from the index (undefined: the store's own size) */
  sweepSliceSlots: number | undefined = undefined;
  /** the budget of one batch, in cost bytes (a knob for tests) */
  batchBudget = BATCH_BUDGET;
  /** ASYNC_BATCH_DEADLINE_MS (a knob for tests) */
  asyncDeadlineMs = ASYNC_BATCH_DEADLINE_MS;
  /** the asynchronous batch that holds `busy`; a batch past its deadline gives it up */
  private asyncBatch = 0;
  /** the opt-in grouping rules (network keys, sender tags, exceptions, pending cap) */
  grouping: Grouping = GREYDAEMON;
  /** triplets stored per client key, kept when --max-pending is on */
  pending: PendingCounts | null = null;
  /** triplets the batch being decided creates: counted as they are decided (later requests
   *  of the batch see them), taken back when their commit fails or conflicts */
  private readonly created: string[] = [];

  // the batch being decided: the changes so far, by store key (what later requests see)
  private readonly writes = new Map<string, number>();
  private readonly view: RecordView;
  private now = 0;

  constructor(
    readonly store: GreylistStore,
    public settings: Settings,
    public whitelist: Whitelist,
    readonly clock: () => number = unixNow,
  ) {
    this.expiryClock = clock;
    this.syncPath = store.capabilities.syncLookup && store.capabilities.syncCommit && store.lookupSync !== undefined && store.commitSync !== undefined;
    this.sweeper = new Sweeper(this);
    const lookupSync = store.lookupSync?.bind(store);
    const writes = this.writes;
    // on the synchronous path the index answers; on the other, prefetched values sit in
    // `writes`'s sibling map filled before deciding (see runBatchAsync)
    this.view = {
      lastGood: (client) => {
        const k = ipKey(client);
        return writes.get(k) ?? (lookupSync !== undefined ? lookupSync(k) : undefined);
      },
      firstSeen: (key) => {
        const k = tripletDbKey(key);
        return writes.get(k) ?? (lookupSync !== undefined ? lookupSync(k) : undefined);
      },
      pending: (client) => this.pending?.get(client) ?? 0,
    };
  }

  /** Writes outside a request batch (admin changes): run it inside exclusive(). */
  async write(ops: readonly StoreOp[]): Promise<void> {
    if (ops.length === 0) return;
    const pending = this.pending;
    if (pending === null) {
      await this.store.commit([{ expect: [], changes: ops }]);
      return;
    }
    // admin changes are rare: which triplets they create or delete is read, not guessed
    const triplets = ops.filter((o) => o[0].startsWith(TRIPLET_PREFIX));
    const before = triplets.length > 0 ? await this.store.lookup(triplets.map((o) => o[0])) : [];
    await this.store.commit([{ expect: [], changes: ops }]);
    triplets.forEach(([key, time], i) => {
      if (before[i] === undefined && time !== null) pending.addKey(key.slice(TRIPLET_PREFIX.length), 1);
      else if (before[i] !== undefined && time === null) pending.addKey(key.slice(TRIPLET_PREFIX.length), -1);
    });
  }

  /** The sweep deleted these records: the pending counts follow. */
  noteDeleted(changes: readonly Change[]): void {
    const pending = this.pending;
    if (pending === null) return;
    for (const [key, time] of changes) if (time === null && key.startsWith(TRIPLET_PREFIX)) pending.addKey(key.slice(TRIPLET_PREFIX.length), -1);
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

  /** Queue a request from `source` (the client's address); `done(result, tag)` is called once
   *  its decision is stored (or could not be). */
  submit<T>(req: Request, done: Done<T>, source = '', tag?: T): void {
    this.enqueue({ req, done: done as Done<never>, tag, cost: requestCost(req), source }, false);
    this.kick();
  }

  private enqueue(p: PendingRequest, front: boolean): void {
    let q = this.sources.get(p.source);
    if (q === undefined) {
      q = new Fifo();
      // a source with nothing waiting goes to the front of the ring, ahead of sources served
      // in the batch now running: its request is in the next batch, whatever floods the queue
      // (sources are mail servers on --allow: few, so rebuilding the ring costs little)
      this.sources = this.sources.size === 0 ? this.sources.set(p.source, q) : new Map([[p.source, q], ...this.sources]);
    }
    if (front) q.unshift(p);
    else q.push(p);
    this.waiting++;
  }

  decideAsync(req: Request, source = ''): Promise<Result> {
    return new Promise((resolve) => this.submit(req, resolveWith, source, resolve));
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
    for (const p of all) (p.done as Done)({ kind: 'undecided', reason }, p.tag);
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

  /** Like exclusive(), but it runs after the next batch, when requests wait: what the sweep
   *  commits, so that a request that came while the sweep read a record is decided first
   *  (and its change makes the sweep's conditional change to that record void). */
  afterNextBatch<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.lateTasks.push({ task: () => fn().then(resolve, reject) });
      this.kick();
    });
  }

  /** Resolves when everything queued so far has been handled. */
  idle(): Promise<void> {
    if (!this.busy && !this.scheduled && this.waiting === 0 && this.tasks.length === 0 && this.lateTasks.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  kick(): void {
    if (this.scheduled || this.busy) return;
    this.scheduled = true;
    // let the rest of this turn's datagrams join the batch
    setImmediate(this.onTurn);
  }

  private readonly onTurn = (): void => {
    this.scheduled = false;
    this.run();
  };

  private readonly afterAsync = (): void => {
    this.busy = false;
    this.run();
  };

  /** Runs tasks and batches until nothing waits, or until something asynchronous runs (its
   *  end calls run() again). */
  private run(): void {
    for (;;) {
      if (this.busy) return;
      const task = this.tasks.shift();
      if (task !== undefined) {
        this.runAsync(task);
        return;
      }
      // a batch, then one of the work that follows batches, and so on
      if (this.waiting > 0 && !(this.batchRan && this.lateTasks.length > 0)) {
        const batch = this.takeBatch();
        this.requestBatches++;
        this.batchRan = true;
        if (this.syncPath) {
          this.runBatchSync(batch);
          // one batch a turn: datagrams that came meanwhile (a new source's first among
          // them) are read before the next batch is taken
          if (this.waiting > 0 || this.lateTasks.length > 0 || this.tasks.length > 0) {
            this.kick();
            return;
          }
          continue;
        }
        this.busy = true;
        this.startBatchAsync(batch);
        return;
      }
      const late = this.lateTasks.shift();
      if (late === undefined) break;
      this.batchRan = false;
      this.runAsync(late);
      return;
    }
    const waiters = this.idleWaiters;
    if (waiters.length === 0) return;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private runAsync(task: PendingTask): void {
    this.busy = true;
    task.task().catch(() => undefined).then(this.afterAsync, this.afterAsync);
  }

  /** The next batch: round-robin across sources until the budget is spent. A source that
   *  still has requests goes to the back of the ring. */
  private takeBatch(): PendingRequest[] {
    const batch: PendingRequest[] = [];
    let spent = 0;
    if (this.sources.size === 1) {
      // one source (the usual case: qmail-smtpd on this host): the same batch as the ring
      // below would take, without moving the source round the ring (a Map delete and set,
      // which reallocates its table) for every request
      const entry = this.sources.entries().next().value!;
      const q = entry[1];
      while (q.length > 0 && (batch.length === 0 || spent + q.peek()!.cost <= this.batchBudget)) {
        const p = q.shift()!;
        this.waiting--;
        batch.push(p);
        spent += p.cost;
        if (spent >= this.batchBudget) break;
      }
      if (q.length === 0) this.sources.delete(entry[0]);
      return batch;
    }
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

  /** Decides one request against the view, noting its changes in `writes`. */
  private decideOne(p: PendingRequest): Result {
    const req = p.req;
    // a client IP sent as text (`unknown`) never matches a range
    const listed = req.family === 0 ? undefined : this.whitelist.matchNormalised(req.ip, req.family);
    const out = decide(req, listed !== undefined, this.view, this.now, this.settings, this.grouping);
    if ('malformed' in out) return { kind: 'malformed', error: out.malformed };
    if (out.knownGood !== undefined) this.writes.set(ipKey(out.client), out.knownGood);
    const pending = this.pending;
    for (let i = 0; i < out.triplets.length; i++) {
      // indexes, not destructuring: V8 reads a destructured pair through the generic
      // iterator protocol, a costly call per pair on this path
      const e = out.triplets[i];
      const key = e[0];
      const t = e[1];
      if (pending !== null && this.view.firstSeen(key) === undefined) {
        pending.addKey(key, 1);
        this.created.push(key);
      }
      this.writes.set(tripletDbKey(key), t);
    }
    return { kind: 'decision', decision: out, whitelistEntry: listed };
  }

  /** The lean path: decide, commit once (one log append), answer, all in this turn. */
  private runBatchSync(batch: PendingRequest[]): void {
    this.now = this.clock();
    const results = new Array<Result>(batch.length);
    for (let i = 0; i < batch.length; i++) results[i] = this.decideOne(batch[i]);
    const changes: Change[] = [];
    const lookupSync = this.store.lookupSync!;
    for (const e of this.writes) {
      const k = e[0];
      const t = e[1];
      // refreshing a known-good IP within the same second changes nothing on disk; a triplet
      // is written only when its time changes (new, too late, dated ahead), so its record
      // need not be looked up again
      if (!k.startsWith(IP_PREFIX) || lookupSync.call(this.store, k) !== t) changes.push([k, t]);
    }
    this.writes.clear();
    try {
      if (changes.length > 0) this.store.commitSync!([{ expect: [], changes }]);
    } catch (e) {
      this.uncount(this.created);
      this.failBatch(results, e);
    }
    this.created.length = 0;
    // (the place for per-reply work such as metrics is the done callback: one call per reply)
    for (let i = 0; i < batch.length; i++) (batch[i].done as Done)(results[i], batch[i].tag);
  }

  /** The general path: one lookup for the batch, one conditional group per request. */
  /** Runs a batch on the general path under its deadline: past it, the batch's requests are
   *  answered "not decided" and the queue goes on; the late batch finishes on its own and
   *  answers nothing more. */
  private startBatchAsync(batch: PendingRequest[]): void {
    const id = ++this.asyncBatch;
    let late = false;
    const timer = setTimeout(() => {
      if (this.asyncBatch !== id) return;
      late = true;
      this.asyncBatch++;
      for (const p of batch) (p.done as Done)({ kind: 'undecided', reason: 'store-slow', error: `no answer from the store within ${this.asyncDeadlineMs} ms` }, p.tag);
      this.afterAsync();
    }, this.asyncDeadlineMs);
    const finished = (): void => {
      clearTimeout(timer);
      if (this.asyncBatch === id) this.afterAsync();
    };
    this.runBatchAsync(batch, () => late).then(finished, finished);
  }

  private async runBatchAsync(batch: PendingRequest[], isLate: () => boolean): Promise<void> {
    // its own state, not the instance's: a batch past its deadline may still be running when
    // the next one starts
    const now = this.clock();
    const writes = new Map<string, number>();
    const created: string[] = [];
    const results = new Array<Result>(batch.length);
    const redo: boolean[] = new Array<boolean>(batch.length).fill(false);
    try {
      // every record the batch may read, in one call: each IP's and, unless the IP is known
      // good, its triplets (the rule is the policy's); IPs first, then the triplets of those
      // not known good
      const g = this.grouping;
      const ipKeys: string[] = [];
      for (const p of batch) ipKeys.push(ipKey(clientKey(p.req, g)));
      const ipVals = await this.store.lookup(ipKeys);
      const fetched = new Map<string, Value>();
      ipKeys.forEach((k, i) => fetched.set(k, ipVals[i]));
      const tKeys: string[] = [];
      for (let i = 0; i < batch.length; i++) {
        const req = batch[i].req;
        if (isKnownGood(ipVals[i], now, this.settings) || 'error' in req.tail) continue;
        for (const k of tripletKeys(clientKey(req, g), req.tail, g)) {
          const dk = tripletDbKey(k);
          if (!fetched.has(dk)) {
            fetched.set(dk, undefined);
            tKeys.push(dk);
          }
        }
      }
      const tVals = tKeys.length > 0 ? await this.store.lookup(tKeys) : [];
      tKeys.forEach((k, i) => fetched.set(k, tVals[i]));

      // decide in order; each request's group expects what it read
      const groups: CommitGroup[] = [];
      const groupOf: number[] = [];
      const seen = new Map<string, Value>();
      const read = (k: string): Value => {
        const w = writes.get(k);
        const v = w !== undefined ? w : fetched.get(k);
        seen.set(k, v);
        return v;
      };
      const view: RecordView = {
        lastGood: (client) => read(ipKey(client)),
        firstSeen: (key) => read(tripletDbKey(key)),
        pending: (client) => this.pending?.get(client) ?? 0,
      };
      const pending = this.pending;
      // the triplets each request created, by batch index: taken back if its group conflicts
      const createdBy: string[][] = [];
      for (let i = 0; i < batch.length; i++) {
        const p = batch[i];
        seen.clear();
        const listed = p.req.family === 0 ? undefined : this.whitelist.matchNormalised(p.req.ip, p.req.family);
        const out = decide(p.req, listed !== undefined, view, now, this.settings, g);
        if ('malformed' in out) {
          results[i] = { kind: 'malformed', error: out.malformed };
          continue;
        }
        const changes: Array<[string, number]> = [];
        if (out.knownGood !== undefined && seen.get(ipKey(out.client)) !== out.knownGood) changes.push([ipKey(out.client), out.knownGood]);
        for (const [key, t] of out.triplets) {
          const dk = tripletDbKey(key);
          if (pending !== null && read(dk) === undefined) {
            pending.addKey(key, 1);
            (createdBy[i] ??= []).push(key);
            created.push(key);
          }
          changes.push([dk, t]);
        }
        for (const [k, t] of changes) writes.set(k, t);
        results[i] = { kind: 'decision', decision: out, whitelistEntry: listed };
        if (changes.length > 0) {
          groupOf.push(i);
          groups.push({ expect: [...seen], changes });
        }
      }
      const conflicts = groups.length > 0 ? await this.store.commit(groups) : null;
      if (conflicts !== null) {
        for (const c of conflicts.keys()) {
          redo[groupOf[c]] = true;
          this.uncount(createdBy[groupOf[c]] ?? []);
        }
      }
    } catch (e) {
      this.uncount(created);
      this.failBatch(results, e);
    }
    // past its deadline its requests were answered already
    if (isLate()) return;
    // a request that met another daemon's change is decided again, first in its source's queue
    for (let i = batch.length - 1; i >= 0; i--) if (redo[i]) this.enqueue(batch[i], true);
    for (let i = 0; i < batch.length; i++) if (!redo[i]) (batch[i].done as Done)(results[i], batch[i].tag);
  }

  /** Takes back the counts of triplets whose records were not stored after all. */
  private uncount(keys: readonly string[]): void {
    const pending = this.pending;
    if (pending === null) return;
    for (const key of keys) pending.addKey(key, -1);
  }

  private failBatch(results: Result[], e: unknown): void {
    const error = (e as Error).message ?? String(e);
    for (let i = 0; i < results.length; i++) {
      if (results[i]?.kind !== 'malformed') results[i] = { kind: 'undecided', reason: 'store-error', error };
    }
  }

  /** Delete dead records (PROTOCOL.md, Expiry); see sweep.ts. */
  sweep(chunk = 250): Promise<SweepReport> {
    return this.sweeper.sweep(chunk);
  }

  /** Finish what is queued, abandon a running sweep; the store stays open. */
  async stop(): Promise<void> {
    await this.sweeper.stop();
    await this.idle();
  }
}

export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}
