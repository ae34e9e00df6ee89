// The store operations behind qgreyctl: dump, stats, import, allow, forget. They run in two
// places: in qgreyctl itself when it holds the store (the daemon is stopped), and in the
// daemon on qgreyctl's behalf (src/admin/admin.ts). `exclusive` is the seam: the daemon passes
// Greylist.exclusive, so changes are serialised with decisions and go through the daemon's
// store; alone, it simply runs the function. Every change goes through `write`: in the daemon
// that is Greylist.write, which a running sweep respects exactly as it respects requests.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { clientKey, GREYDAEMON, isDeadIp, isDeadTriplet, isFuture, keySender, normaliseSender, stripSpaces, tripletKey, asciiLower, type Grouping, type Settings } from '../policy.js';
import { normaliseIp } from '../ip.js';
import type { SaveRecord } from '../savefile.js';
import type { LiveCounters } from '../metrics.js';
import { IP_PREFIX, ipKey, TRIPLET_PREFIX, tripletDbKey } from '../store/keys.js';
import type { GreylistStore } from '../store/types.js';
import { QgreydError } from '../errors.js';

export interface OpsContext {
  /** for reads; changes go through write() */
  store: GreylistStore;
  settings: Settings;
  clock: () => number;
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** how the daemon keys records (its --ipv4-prefix, --ipv6-prefix, --normalise-senders);
   *  absent: greydaemon's keys, the address and the sender as given */
  grouping?: Grouping;
  /** writes a batch (a time sets a record, null deletes it); called inside exclusive() */
  write(ops: ReadonlyArray<readonly [key: string, time: number | null]>): Promise<void>;
}

export interface DumpFilter {
  /** one client address (any IP text) */
  ip?: string;
  /** a sender address, or "@domain" for every sender of that domain; "." or "" for bounces */
  sender?: string;
  /** a recipient address, or "@domain" */
  rcpt?: string;
  /** leave out the known-good IPs, or the triplets */
  only?: 'ip' | 'triplet';
}

export class OpsError extends QgreydError {
  constructor(message: string, permanent = true) {
    super('QGREYD_OPS', message, !permanent);
  }

  get permanent(): boolean {
    return !this.temporary;
  }
}

/** The normalised form the daemon keys an IP by, or an OpsError naming the argument. */
export function canonicalIp(text: string, what = 'IP address'): string {
  const n = normaliseIp(text);
  if (n === null) throw new OpsError(`${what} ${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  return n.ip;
}

/** The key the daemon's records for this client are stored under: its address, or its
 *  network when the daemon groups clients by network. */
export function clientOf(ctx: OpsContext, text: string, what = 'IP address'): string {
  const n = normaliseIp(text);
  if (n === null) throw new OpsError(`${what} ${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  return clientKey(n, ctx.grouping ?? GREYDAEMON);
}

/** Splits a stored key back into its record. Senders and recipients have had their spaces
 *  removed and IPs never contain one, so the first two spaces are the separators. */
export function recordFromKey(key: string, time: number): SaveRecord | null {
  if (key.startsWith(IP_PREFIX)) return { kind: 'ip', ip: key.slice(IP_PREFIX.length), time };
  if (!key.startsWith(TRIPLET_PREFIX)) return null;
  const body = key.slice(TRIPLET_PREFIX.length);
  const a = body.indexOf(' ');
  const b = a < 0 ? -1 : body.indexOf(' ', a + 1);
  if (b < 0) return null;
  return { kind: 'triplet', ip: body.slice(0, a), sender: body.slice(a + 1, b), rcpt: body.slice(b + 1), time };
}

/** The sender as a person reads it: the store and the save file write the bounce sender as
 *  "." (greydaemon's format needs a word there), the log and the SMTP envelope as <>. */
export function shownSender(stored: string): string {
  return stored === '.' ? '' : stored;
}

export function keyOf(r: SaveRecord): string {
  return r.kind === 'ip' ? ipKey(r.ip) : tripletDbKey(tripletKey(r.ip, r.sender, r.rcpt));
}

export function isDead(r: SaveRecord, now: number, s: Settings): boolean {
  return r.kind === 'ip' ? isDeadIp(r.time, now, s) : isDeadTriplet(r.time, now, s);
}

function addressMatcher(pattern: string | undefined, isSender: boolean): ((addr: string) => boolean) | null {
  if (pattern === undefined) return null;
  let p = asciiLower(stripSpaces(pattern));
  if (isSender) p = normaliseSender(p);
  if (p.startsWith('@')) return (addr) => addr.endsWith(p);
  return (addr) => addr === p;
}

/** Records matching the filter, in key order, a chunk at a time: a store of millions of
 *  records never sits in memory. */
export async function* dump(ctx: OpsContext, filter: DumpFilter = {}, chunk = 1000): AsyncGenerator<SaveRecord[]> {
  const ip = filter.ip === undefined ? undefined : clientOf(ctx, filter.ip, '--ip');
  const sender = addressMatcher(filter.sender, true);
  const rcpt = addressMatcher(filter.rcpt, false);
  if (filter.only !== 'triplet' && sender === null && rcpt === null) {
    if (ip !== undefined) {
      const [t] = await ctx.store.lookup([ipKey(ip)]);
      if (t !== undefined) yield [{ kind: 'ip', ip, time: t }];
    } else {
      for await (const records of ctx.store.scan(IP_PREFIX, { chunk })) {
        yield records.map((r) => recordFromKey(r.key, r.time)).filter((r): r is SaveRecord => r !== null);
      }
    }
  }
  if (filter.only === 'ip') return;
  // one IP's triplets are a contiguous key range: "G <ip> "
  const prefix = ip === undefined ? TRIPLET_PREFIX : `${TRIPLET_PREFIX}${ip} `;
  for await (const records of ctx.store.scan(prefix, { chunk })) {
    const out: SaveRecord[] = [];
    for (const r of records) {
      const rec = recordFromKey(r.key, r.time);
      if (rec === null || rec.kind !== 'triplet') continue;
      if (sender !== null && !sender(rec.sender)) continue;
      if (rcpt !== null && !rcpt(rec.rcpt)) continue;
      out.push(rec);
    }
    if (out.length > 0) yield out;
  }
}

export interface KindStats {
  count: number;
  /** dead by the settings (PROTOCOL.md, Expiry) but not yet deleted by a sweep */
  dead: number;
  oldest: number | null;
  newest: number | null;
}

export interface Stats {
  now: number;
  settings: Settings;
  ips: KindStats;
  triplets: KindStats;
  /** records of either kind dated further ahead of now than the settings tolerate (written
   *  while the clock was ahead); `furthest` is the latest such time */
  future: { count: number; furthest: number | null };
  /** bytes of the files in the state directory */
  diskBytes: number;
  /** the running daemon's counters (through its admin socket only) */
  live?: LiveCounters;
}

export async function stats(ctx: OpsContext): Promise<Stats> {
  const now = ctx.clock();
  const future: Stats['future'] = { count: 0, furthest: null };
  const one = async (prefix: string, dead: (t: number, now: number, s: Settings) => boolean): Promise<KindStats> => {
    const k: KindStats = { count: 0, dead: 0, oldest: null, newest: null };
    for await (const records of ctx.store.scan(prefix, { chunk: 5000 })) {
      for (const r of records) {
        k.count++;
        if (isFuture(r.time, now, ctx.settings)) {
          future.count++;
          if (future.furthest === null || r.time > future.furthest) future.furthest = r.time;
        }
        if (dead(r.time, now, ctx.settings)) k.dead++;
        if (k.oldest === null || r.time < k.oldest) k.oldest = r.time;
        if (k.newest === null || r.time > k.newest) k.newest = r.time;
      }
    }
    return k;
  };
  const ips = await one(IP_PREFIX, isDeadIp);
  const triplets = await one(TRIPLET_PREFIX, isDeadTriplet);
  return { now, settings: ctx.settings, ips, triplets, future, diskBytes: ctx.store.dir === undefined ? 0 : await diskUsage(ctx.store.dir) };
}

/** Bytes of the regular files in dir (LevelDB keeps its files flat in the directory). */
export async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) {
    const st = await stat(join(dir, name)).catch(() => null);
    if (st?.isFile()) total += st.size;
  }
  return total;
}

export interface ImportCounts {
  /** records handed to the importer */
  records: number;
  /** records written */
  imported: number;
  /** dead by the settings at import time: not written */
  dead: number;
  /** the store already held better evidence (a later last-good, an earlier live first-seen) */
  kept: number;
}

/** Imports records in batches. Each batch is one atomic LevelDB write made inside
 *  `exclusive`, merged with what is stored so that importing never loses evidence:
 *  a known-good IP keeps the later last-good time, a triplet keeps the earlier first-seen time
 *  unless the stored one is dead. So importing the same file twice changes nothing. */
export class Importer {
  readonly counts: ImportCounts = { records: 0, imported: 0, dead: 0, kept: 0 };

  constructor(private readonly ctx: OpsContext) {}

  async add(batch: readonly SaveRecord[]): Promise<void> {
    const now = this.ctx.clock();
    const s = this.ctx.settings;
    this.counts.records += batch.length;
    const wanted = new Map<string, SaveRecord>();
    for (const r of batch) {
      if (isDead(r, now, s)) {
        this.counts.dead++;
        continue;
      }
      const key = keyOf(r);
      const prev = wanted.get(key);
      if (prev !== undefined) {
        this.counts.kept++;
        if (!better(r, prev.time, now, s)) continue;
      }
      wanted.set(key, r);
    }
    if (wanted.size === 0) return;
    await this.ctx.exclusive(async () => {
      const keys = [...wanted.keys()];
      const stored = await this.ctx.store.lookup(keys);
      const ops: Array<[string, number]> = [];
      keys.forEach((key, i) => {
        const r = wanted.get(key)!;
        const cur = stored[i];
        if (cur === undefined || better(r, cur, now, s)) ops.push([key, r.time]);
        else this.counts.kept++;
      });
      await this.ctx.write(ops);
      this.counts.imported += ops.length;
    });
  }
}

/** Whether record r should replace a stored time `cur` for the same key. */
function better(r: SaveRecord, cur: number, now: number, s: Settings): boolean {
  if (r.kind === 'ip') return r.time > cur;
  return isDeadTriplet(cur, now, s) || r.time < cur;
}

export interface AllowResult {
  ip: string;
  time: number;
  previous: number | null;
}

/** Marks an IP known good from now on, as if one of its triplets had just passed. */
export async function allow(ctx: OpsContext, ipText: string): Promise<AllowResult> {
  const ip = clientOf(ctx, ipText);
  return ctx.exclusive(async () => {
    const key = ipKey(ip);
    const [previous] = await ctx.store.lookup([key]);
    const time = ctx.clock();
    await ctx.write([[key, time]]);
    return { ip, time, previous: previous ?? null };
  });
}

export interface ForgetResult {
  ip: string;
  /** set when one triplet was named: its sender and recipient as the daemon keys them */
  triplet?: { sender: string; rcpt: string };
  /** records deleted */
  deleted: number;
}

/** Deletes an IP's known-good record and all of its triplets. The triplets are read a
 *  chunk at a time from a snapshot and deleted between decision batches, as the sweep does. */
export async function forgetIp(ctx: OpsContext, ipText: string): Promise<ForgetResult> {
  const ip = clientOf(ctx, ipText);
  let deleted = await ctx.exclusive(async () => {
    const key = ipKey(ip);
    const [t] = await ctx.store.lookup([key]);
    if (t === undefined) return 0;
    await ctx.write([[key, null]]);
    return 1;
  });
  for await (const records of ctx.store.scan(`${TRIPLET_PREFIX}${ip} `, { chunk: 1000 })) {
    deleted += await ctx.exclusive(async () => {
      await ctx.write(records.map((r) => [r.key, null] as const));
      return records.length;
    });
  }
  return { ip, deleted };
}

/** Deletes one triplet, keyed exactly as the daemon keys it. */
export async function forgetTriplet(ctx: OpsContext, ipText: string, sender: string, rcpt: string): Promise<ForgetResult> {
  const ip = clientOf(ctx, ipText);
  const key = tripletDbKey(tripletKey(ip, keySender(sender, ctx.grouping), stripSpaces(rcpt)));
  const rec = recordFromKey(key, 0);
  const triplet = rec?.kind === 'triplet' ? { sender: rec.sender, rcpt: rec.rcpt } : { sender, rcpt };
  return ctx.exclusive(async () => {
    const [t] = await ctx.store.lookup([key]);
    if (t === undefined) return { ip, triplet, deleted: 0 };
    await ctx.write([[key, null]]);
    return { ip, triplet, deleted: 1 };
  });
}
