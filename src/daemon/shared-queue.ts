// The decision queue for a shared store (Redis: several daemons, one greylist). The local
// queue (greylist.ts) can trust what it read, since nobody else writes its store; here another
// MX's daemon may change a record between our read and our write. So each request's changes
// are committed on the condition that what its decision read still holds (CommitGroup.expect),
// and a request whose condition failed is decided again from the current values, which the
// commit returned. Across all daemons the verdicts are those of one daemon deciding the
// requests one after another.
//
// Requests are taken in batches as in the local queue (the requests of one event-loop turn, up
// to the batch budget): one read for the batch, one commit for the batch. A batch that cannot
// be decided within DECIDE_DEADLINE_MS (Redis slow or down, or conflicts that keep coming) has
// its undecided requests answered "not decided", so qmail-smtpd gets its answer within its
// 3 s. Records expire by their TTLs: there is no sweep.
import type { OpsContext, OpsStore } from '../admin-ops.js';
import { requestCost, type Result, type StoreOp, type SweepReport, type UndecidedReason } from '../greylist.js';
import { decide, tripletKeys, type Decision, type RecordView, type Settings } from '../policy.js';
import type { Request } from '../protocol.js';
import { ipKey, tripletDbKey } from '../store/keys.js';
import type { CommitGroup, GreylistStore, Value } from '../store/types.js';
import type { Whitelist } from '../whitelist.js';

type Done = (r: Result) => void;
interface Pending {
  req: Request;
  done: Done;
  cost: number;
}

/** A batch's requests not decided by then (counted from the batch's start) are answered "not
 *  decided". With two Redis round trips of at most the command timeout each, plus a retry
 *  after a conflict, a request's answer leaves well before qmail-smtpd's 3 s. */
export const DECIDE_DEADLINE_MS = 1200;
/** Rounds of decide-and-commit per batch: a conflict means another daemon decided the same
 *  IP's records at the same moment; more than a few in a row means a hot spot. */
export const MAX_ROUNDS = 6;
export const SHARED_BATCH_BUDGET = 512 * 1024;

const NO_RECORDS: RecordView = { lastGood: () => undefined, firstSeen: () => undefined };

export class SharedQueue {
  private waiting: Pending[] = [];
  private head = 0;
  private tasks: Array<() => Promise<void>> = [];
  private running = false;
  private idleWaiters: Array<() => void> = [];
  /** decisions made again after a conflict, since start (for the stop line and tests) */
  conflicts = 0;
  /** no sweep here: the store's records expire by themselves */
  expiryClock: () => number;
  batchBudget = SHARED_BATCH_BUDGET;

  constructor(
    readonly store: GreylistStore,
    public settings: Settings,
    public whitelist: Whitelist,
    readonly clock: () => number,
    /** the state directory (admin socket, pid file): what qgreyctl's stats reports on */
    private readonly stateDir: string,
  ) {
    this.expiryClock = clock;
  }

  submit(req: Request, done: Done): void {
    this.waiting.push({ req, done, cost: requestCost(req) });
    this.kick();
  }

  decideAsync(req: Request): Promise<Result> {
    return new Promise((resolve) => this.submit(req, resolve));
  }

  get queued(): number {
    return this.waiting.length - this.head;
  }

  abandonWaiting(reason: UndecidedReason): number {
    const all = this.waiting.slice(this.head);
    this.waiting = [];
    this.head = 0;
    for (const p of all) p.done({ kind: 'undecided', reason });
    return all.length;
  }

  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.tasks.push(() => fn().then(resolve, reject));
      this.kick();
    });
  }

  /** Admin changes (allow, forget, import): unconditional, like an administrator's word. */
  async write(ops: readonly StoreOp[]): Promise<void> {
    if (ops.length === 0) return;
    await this.store.commit([{ expect: [], changes: ops }]);
  }

  opsContext(): OpsContext {
    const settings = () => this.settings;
    const store = this.store;
    const dir = this.stateDir;
    const ops: OpsStore = {
      get: (keys) => store.lookup(keys),
      scan: (prefix, opts) => store.scan(prefix, opts),
      dir,
    };
    return {
      store: ops,
      get settings() {
        return settings();
      },
      clock: this.clock,
      exclusive: (fn) => this.exclusive(fn),
      write: (o) => this.write(o),
    };
  }

  idle(): Promise<void> {
    if (!this.running && this.queued === 0 && this.tasks.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Nothing to sweep: records expire by their TTLs. */
  sweep(): Promise<SweepReport> {
    return Promise.resolve({ scanned: 0, deleted: 0, normalised: 0, ms: 0 });
  }

  async stop(): Promise<void> {
    await this.idle();
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => void this.drain());
  }

  private take(): Pending[] {
    const batch: Pending[] = [];
    let spent = 0;
    while (this.head < this.waiting.length && (batch.length === 0 || spent + this.waiting[this.head].cost <= this.batchBudget)) {
      const p = this.waiting[this.head];
      this.waiting[this.head++] = undefined as unknown as Pending;
      batch.push(p);
      spent += p.cost;
    }
    if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
    return batch;
  }

  private async drain(): Promise<void> {
    while (this.queued > 0 || this.tasks.length > 0) {
      const task = this.tasks.shift();
      if (task !== undefined) {
        await task().catch(() => undefined);
        continue;
      }
      await this.runBatch(this.take());
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async runBatch(batch: Pending[]): Promise<void> {
    const started = performance.now();
    const now = this.clock();
    const results = new Array<Result | undefined>(batch.length);
    // the keys each request's decision reads: its IP's record, and its triplets
    const keysOf: string[][] = [];
    const all: string[] = [];
    let open: number[] = [];
    for (let i = 0; i < batch.length; i++) {
      const req = batch[i].req;
      const listed = req.family === 0 ? undefined : this.whitelist.matchNormalised(req.ip, req.family);
      if (listed !== undefined) {
        // nothing is read or stored for a whitelisted IP
        results[i] = { kind: 'decision', decision: decide(req, true, NO_RECORDS, now, this.settings) as Decision, whitelistEntry: listed };
        keysOf.push([]);
        continue;
      }
      const keys = [ipKey(req.ip)];
      if (!('error' in req.tail)) {
        // a recipient listed twice is one key
        for (const t of new Set(tripletKeys(req.ip, req.tail))) keys.push(tripletDbKey(t));
      }
      keysOf.push(keys);
      for (const k of keys) all.push(k);
      open.push(i);
    }
    try {
      const current = new Map<string, Value>();
      if (all.length > 0) {
        const vals = await this.store.lookup(all);
        for (let j = 0; j < all.length; j++) current.set(all[j], vals[j]);
      }
      for (let round = 0; open.length > 0; round++) {
        if (round >= MAX_ROUNDS || performance.now() - started > DECIDE_DEADLINE_MS) {
          const error = round >= MAX_ROUNDS ? `still conflicting after ${MAX_ROUNDS} rounds` : `not decided within ${DECIDE_DEADLINE_MS} ms`;
          for (const i of open) results[i] = { kind: 'undecided', reason: 'store-error', error };
          break;
        }
        // decide in order; a later request of the batch sees the earlier ones' changes
        const overlay = new Map<string, Value>();
        const read = (k: string): Value => (overlay.has(k) ? overlay.get(k) : current.get(k));
        const groups: CommitGroup[] = [];
        const owners: number[] = [];
        const decided: Decision[] = [];
        for (const i of open) {
          const req = batch[i].req;
          const view: RecordView = {
            lastGood: (ip) => read(ipKey(ip)),
            firstSeen: (t) => read(tripletDbKey(t)),
          };
          const out = decide(req, false, view, now, this.settings);
          if ('malformed' in out) {
            results[i] = { kind: 'malformed', error: out.malformed };
            continue;
          }
          const keys = keysOf[i];
          const changes: Array<readonly [string, number]> = [];
          for (const [t, time] of out.triplets) changes.push([tripletDbKey(t), time]);
          // refreshing a known-good IP within the same second changes nothing
          if (out.knownGood !== undefined && read(keys[0]) !== out.knownGood) changes.push([keys[0], out.knownGood]);
          const expect = keys.map((k) => [k, read(k)] as const);
          for (const [k, t] of changes) overlay.set(k, t);
          groups.push({ expect, changes });
          owners.push(i);
          decided.push(out);
        }
        const conflicts = groups.length > 0 ? await this.store.commit(groups) : null;
        const again: number[] = [];
        for (let g = 0; g < groups.length; g++) {
          const i = owners[g];
          const now = conflicts?.get(g);
          if (now === undefined) {
            results[i] = { kind: 'decision', decision: decided[g], whitelistEntry: undefined };
            for (const [k, t] of groups[g].changes) current.set(k, t ?? undefined);
          } else {
            groups[g].expect.forEach(([k], j) => current.set(k, now[j]));
            again.push(i);
          }
        }
        this.conflicts += again.length;
        open = again;
      }
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      for (let i = 0; i < batch.length; i++) if (results[i] === undefined) results[i] = { kind: 'undecided', reason: 'store-error', error };
    }
    for (let i = 0; i < batch.length; i++) batch[i].done(results[i] ?? { kind: 'undecided', reason: 'store-error', error: 'not decided' });
  }
}
