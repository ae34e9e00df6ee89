// --max-pending: how many triplets each client network has stored, so that the policy can
// refuse to store more (a spam run from one network cannot grow the store without limit).
//
// A network's count is the number of triplet records stored under its client key: created by
// a request (a new triplet), removed when the sweep deletes them (dead: first seen more than
// grey-window ago), or changed by qgreyctl (import, forget). Passed triplets stay counted
// until the sweep deletes them, but they make the network known good, and a known-good
// network is never capped. The counts are rebuilt at start from one scan of the store's
// triplet keys, begun before the first request is decided: a key written after the scan's
// snapshot is counted by the write, one in it by the scan, and a deletion can come before
// the scan reaches its key (the count goes below its final value for a while), so counts are
// signed until the scan is done.
import { clientOfTriplet } from './policy.js';
import type { StoredRecord } from './store/types.js';

export class PendingCounts {
  private counts = new Map<string, number>();
  /** false until the start-up scan has counted every stored triplet */
  complete = false;

  get(client: string): number {
    return this.counts.get(client) ?? 0;
  }

  add(client: string, n = 1): void {
    const c = (this.counts.get(client) ?? 0) + n;
    if (c === 0) this.counts.delete(client);
    else this.counts.set(client, c);
  }

  /** a triplet record (its key without the store's prefix) was created (+1) or deleted (-1) */
  addKey(tripletKey: string, n: 1 | -1): void {
    this.add(clientOfTriplet(tripletKey), n);
  }

  /** networks with a count other than 0 */
  get networks(): number {
    return this.counts.size;
  }

  /** Counts the records of a scan of the triplet keys (keys with `prefix`). */
  async count(records: AsyncIterable<StoredRecord[]>, prefix: string): Promise<number> {
    let n = 0;
    for await (const chunk of records) {
      for (const r of chunk) this.addKey(r.key.slice(prefix.length), 1);
      n += chunk.length;
    }
    this.complete = true;
    return n;
  }
}
