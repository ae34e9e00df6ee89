// The sweep: deletes dead records (PROTOCOL.md, Expiry) without stalling requests, and sets
// records dated ahead of now to now. Deadness is the policy's rule (isDeadIp, isDeadTriplet),
// judged by the queue's expiryClock.
//
// Two ways, chosen by the store's capabilities:
// - From the index (indexExpiry, the local store): the store judges every record in its
//   in-memory index, a slice of slots at a time; each slice runs as exclusive work between
//   request batches, so a judgement and its change are one step no request can come between.
//   The store then cleans LevelDB behind the index, paced here. Nothing is read from LevelDB
//   to decide. Not while --max-pending keeps counts per client: the index holds no keys, so
//   a deleted triplet could not be taken off its client's count; that case scans.
// - By scanning (every other store without TTLs, and the case above): records are read a
//   chunk at a time (scan), and a chunk's changes are committed between request batches as
//   groups conditional on the value read: a record that a request or an admin change wrote
//   after it was read no longer holds that value, so its group is refused and the record
//   stays for the next sweep.
// A store whose records expire by themselves (ttlExpiry) is not swept.
//
// While requests come, the sweep pauses after each slice or chunk. A corrupt part of the store
// is stepped over and reported. After a sweep that deleted much, the store is compacted.
import { isDeadIp, isDeadTriplet, isFuture } from '../policy.js';
import { IP_PREFIX, TRIPLET_PREFIX } from '../store/keys.js';
import type { Change, CommitGroup, ExpiryJudge } from '../store/types.js';
import type { Greylist } from './queue.js';

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
  /** sweeping from the index: LevelDB records deleted or rewritten behind it */
  cleaned?: number;
}

/** A sweep compacts the store when it deleted at least COMPACT_MIN records and at least
 *  1/COMPACT_FRACTION of those it scanned: a mass expiry, not the steady trickle a busy store
 *  sees each sweep (LevelDB's own compactions keep up with that). */
export const COMPACT_MIN = 10_000;
export const COMPACT_FRACTION = 4;
export function shouldCompact(deleted: number, scanned: number): boolean {
  return deleted >= COMPACT_MIN && deleted * COMPACT_FRACTION >= scanned;
}

/** the sweep's pause after a chunk when requests were decided meanwhile */
const SWEEP_PAUSE_MS = 10;
/** and, while LevelDB is cleaned behind the index, this much more per record the chunk
 *  deleted or rewrote: LevelDB's own work on deletions (the tombstones it compacts on its
 *  threads) competes with requests for the CPU, so it is spread out (500 deletions: 40 ms) */
const CLEAN_PAUSE_PER_CHANGE_MS = 0.06;

export class Sweeper {
  private sweeping: Promise<SweepReport> | null = null;
  private stopping = false;

  constructor(private readonly queue: Greylist) {}

  sweep(chunk = 250): Promise<SweepReport> {
    this.sweeping ??= this.run(chunk).finally(() => {
      this.sweeping = null;
    });
    return this.sweeping;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.sweeping?.catch(() => undefined);
  }

  /** Paces the sweep: a turn of the event loop, or SWEEP_PAUSE_MS when request batches were
   *  decided since the last pause. */
  private readonly pace = (changed = 0): Promise<void> => {
    const q = this.queue;
    if (q.requestBatches > 0) {
      q.requestBatches = 0;
      return new Promise((r) => setTimeout(r, SWEEP_PAUSE_MS + changed * CLEAN_PAUSE_PER_CHANGE_MS));
    }
    return new Promise((r) => setImmediate(r));
  };

  private async run(chunk: number): Promise<SweepReport> {
    const started = Date.now();
    const q = this.queue;
    const store = q.store;
    const report: SweepReport = { scanned: 0, deleted: 0, normalised: 0, ms: 0 };
    if (store.capabilities.ttlExpiry) return report;
    const onCorrupt = (message: string) => (report.corrupt ??= message);
    if (store.capabilities.indexExpiry && store.expireIndex !== undefined && q.pending === null && q.sweepFromIndex) {
      let now = 0;
      let expiryNow = 0;
      const judge: ExpiryJudge = (kind, time) => {
        const s = q.settings;
        if (isFuture(time, now, s)) return now;
        return (kind === 'ip' ? isDeadIp(time, expiryNow, s) : isDeadTriplet(time, expiryNow, s)) ? null : undefined;
      };
      const r = await store.expireIndex(judge, {
        runSlice: async (slice) => {
          await q.onSweepSlice?.();
          await q.exclusive(() => {
            now = q.clock();
            expiryNow = Math.min(q.expiryClock(), now);
            slice();
            return Promise.resolve();
          });
          await this.pace();
        },
        pause: (changed) => this.pace(changed),
        stopping: () => this.stopping,
        onCorrupt,
        ...(q.sweepSliceSlots !== undefined ? { sliceSlots: q.sweepSliceSlots } : {}),
      });
      report.scanned = r.scanned;
      report.deleted = r.deleted;
      report.normalised = r.normalised;
      report.cleaned = r.cleaned;
      return this.finish(report, started);
    }
    for (const [prefix, dead] of [
      [TRIPLET_PREFIX, isDeadTriplet],
      [IP_PREFIX, isDeadIp],
    ] as const) {
      if (this.stopping) break;
      for await (const records of store.scan(prefix, { chunk, onCorrupt })) {
        if (this.stopping) break;
        report.scanned += records.length;
        const now = q.clock();
        const expiryNow = Math.min(q.expiryClock(), now);
        const ops: Change[] = [];
        const groups: CommitGroup[] = [];
        for (const r of records) {
          let op: Change | null = null;
          if (isFuture(r.time, now, q.settings)) op = [r.key, now];
          else if (dead(r.time, expiryNow, q.settings)) op = [r.key, null];
          if (op === null) continue;
          ops.push(op);
          groups.push({ expect: [[r.key, r.time]], changes: [op] });
        }
        if (groups.length > 0) {
          await q.onSweepChunk?.(ops);
          const conflicts = await q.afterNextBatch(() => store.commit(groups));
          const applied: Change[] = [];
          for (let i = 0; i < groups.length; i++) {
            if (conflicts?.has(i)) continue;
            applied.push(ops[i]);
            if (ops[i][1] === null) report.deleted++;
            else report.normalised++;
          }
          q.noteDeleted(applied);
        }
        // paced while requests come: the sweep competes with them for the CPU and the store
        if (q.requestBatches > 0) {
          q.requestBatches = 0;
          await new Promise((r) => setTimeout(r, SWEEP_PAUSE_MS));
        }
      }
    }
    return this.finish(report, started);
  }

  private async finish(report: SweepReport, started: number): Promise<SweepReport> {
    const store = this.queue.store;
    // Deleted records leave tombstones and the old values in LevelDB's files until a
    // compaction reaches them, which a store that stopped growing may wait for for ever.
    // Not over a corrupt block: a compaction that reads one fails, and LevelDB then refuses
    // every write until the store is reopened.
    if (!this.stopping && report.corrupt === undefined && store.compact !== undefined && shouldCompact(report.deleted, report.scanned)) {
      const t = Date.now();
      await store.compact();
      report.compactMs = Date.now() - t;
    }
    report.ms = Date.now() - started;
    return report;
  }
}
