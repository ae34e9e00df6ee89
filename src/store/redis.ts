// The shared backend: the greylist in Redis (one server, or a Redis Cluster), so that every MX
// server's qgreyd decides against the same records.
//
// Atomicity: a decision is made in this process from the values it read, and committed by a
// Lua script that applies the request's changes only if every value the decision read still
// holds (a compare-and-set run inside Redis, so nothing can come between the check and the
// write). When another daemon got there first, the script changes nothing and returns the
// current values, and the decision queue decides that request again from them: across all
// daemons the decisions behave as if made one after another. All keys of one request carry
// the client IP as hash tag (redis-keys.ts), so the script's keys lie in one Cluster slot.
//
// Expiry: every write sets the record's TTL from its time (the policy's expiresAt rule, as a
// time-to-live from now, so a clock difference between MX servers and Redis does not matter);
// there is no sweep.
//
// Outages: commands are never queued while Redis is unreachable (they fail at once), each
// command has a timeout, and the client reconnects by itself with backoff. The daemon answers
// "not decided" meanwhile, and the health callback tells the log once per failure and once on
// recovery.
import { createHash } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { StoreError } from './errors.js';
import { IP_PREFIX, TRIPLET_PREFIX } from './keys.js';
import { parseRedisKey, redisIpKey, redisTripletKey, REDIS_FORMAT, REDIS_FORMAT_KEY, REDIS_MATCH, REDIS_PREFIX } from './redis-keys.js';
import { describeTarget, type RedisTarget } from './redis-url.js';
import type { CommitGroup, CommitResult, ExpiryRule, GreylistStore, OpenOptions, ScanOptions, StoreCapabilities, StoreHealth, StoredRecord, Value } from './types.js';

const CAPABILITIES: StoreCapabilities = {
  syncLookup: false,
  syncCommit: false,
  ttlExpiry: true,
  shared: true,
  compact: false,
  indexExpiry: false,
};

/** How long one command may take before it counts as failed. A Redis that is down or stopped
 *  fails a batch at its first command, so a request waits at most two of these (the batch
 *  before its own, then its own). Shorter ones failed bulk work (an import, a dump) on a
 *  loaded machine. */
export const COMMAND_TIMEOUT_MS = 600;
/** Connecting (or reconnecting) may take this long before the attempt counts as failed. */
export const CONNECT_TIMEOUT_MS = 1000;
/** Reconnect backoff: first, and at most. */
export const RECONNECT_FIRST_MS = 100;
export const RECONNECT_MAX_MS = 5000;
/** keys per MGET: large enough for a whole batch, small enough not to stall Redis */
const MGET_CHUNK = 10_000;
/** groups per script call: a call runs alone in Redis, so it stays short */
const COMMIT_CHUNK = 500;

// Applies commit groups in order, each only if its expectations hold (see CommitGroup).
// KEYS: every group's keys, group after group. ARGV[1]: the number of groups; then per group:
// its key count, how many of them are expectations (the first ones), and per key: expected
// value ('' = absent; only for expectations), new value ('' = leave, '-' = delete), TTL in ms
// ('' = none). Returns per group 1 (applied) or, on a conflict, 0 followed by the current
// values of its expected keys (false = absent).
const COMMIT_SCRIPT = `
local groups = tonumber(ARGV[1])
local a = 2
local k = 1
local out = {}
for g = 1, groups do
  local nk = tonumber(ARGV[a])
  local ne = tonumber(ARGV[a + 1])
  a = a + 2
  local holds = true
  for i = 0, ne - 1 do
    if (redis.call('GET', KEYS[k + i]) or '') ~= ARGV[a + 3 * i] then
      holds = false
      break
    end
  end
  if holds then
    for i = 0, nk - 1 do
      local v = ARGV[a + 3 * i + 1]
      if v == '-' then
        redis.call('DEL', KEYS[k + i])
      elseif v ~= '' then
        local ttl = ARGV[a + 3 * i + 2]
        if ttl == '' then redis.call('SET', KEYS[k + i], v) else redis.call('SET', KEYS[k + i], v, 'PX', ttl) end
      end
    end
    out[g] = 1
  else
    local now = {0}
    for i = 0, ne - 1 do now[i + 2] = redis.call('GET', KEYS[k + i]) end
    out[g] = now
  end
  k = k + nk
  a = a + 3 * nk
end
return out
`;
const COMMIT_SHA = createHash('sha1').update(COMMIT_SCRIPT).digest('hex');

type Client = Redis | Cluster;
/** the Redis client library, loaded by open(): a daemon on the local store never loads it
 *  (it is a sixth of the local daemon's start-up) */
let io: { Redis: typeof Redis; Cluster: typeof Cluster };

export interface RedisOpenOptions extends OpenOptions {
  /** the clock TTLs count from, in Unix seconds (the daemon's clock; tests inject one) */
  clock?: () => number;
  /** override the timeouts (tests of outages use short ones) */
  commandTimeoutMs?: number;
}

/** The Redis key of a record key ("I <ip>", "G <triplet>"). */
export function redisKeyOf(key: string): string {
  if (key.startsWith(IP_PREFIX)) return redisIpKey(key.slice(IP_PREFIX.length));
  if (key.startsWith(TRIPLET_PREFIX)) return redisTripletKey(key.slice(TRIPLET_PREFIX.length));
  throw new StoreError('QGREYD_STORE_FORMAT', `not a record key: ${JSON.stringify(key.slice(0, 40))}`);
}

/** The record key of a Redis key, or null for a key that is not a record. */
export function recordKeyOf(redisKey: string): string | null {
  const p = parseRedisKey(redisKey);
  if (p === null) return null;
  return p.kind === 'ip' ? IP_PREFIX + p.ip : TRIPLET_PREFIX + p.triplet;
}

/** The hash tag a record key's Redis key carries: keys with the same one share a slot. */
function slotGroup(key: string): string {
  const sp = key.indexOf(' ', 2);
  return (sp < 0 ? key.slice(2) : key.slice(2, sp)).toLowerCase();
}

function parseValue(v: string | null): Value {
  if (v === null) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new StoreError('QGREYD_STORE_CORRUPT', `a Redis record holds ${JSON.stringify(v.slice(0, 20))}, not a time`);
  return n;
}

/** The code of a Redis error reply: by the protocol its first word (NOSCRIPT, WRONGTYPE, ...);
 *  ioredis hands a reply over as a ReplyError that holds only the text. (Told by its name:
 *  ioredis is loaded only when a Redis store is opened, so its class is not imported here.) */
function replyCode(e: unknown): string | undefined {
  return e instanceof Error && e.name === 'ReplyError' ? /^[A-Z]+/.exec(e.message)?.[0] : undefined;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class RedisStore implements GreylistStore {
  readonly capabilities = CAPABILITIES;
  readonly location: string;
  readonly memoryRecords = 0;
  private closed = false;
  private failedSince: number | null = null;
  private readonly clock: () => number;
  private readonly expiresAt: ExpiryRule | undefined;

  private constructor(
    private readonly client: Client,
    readonly target: RedisTarget,
    private readonly opts: RedisOpenOptions,
  ) {
    this.location = describeTarget(target);
    this.clock = opts.clock ?? (() => Date.now() / 1000);
    this.expiresAt = opts.expiresAt;
  }

  /** Connects and checks the store's format. A Redis that cannot be reached at start is an
   *  error (temporary: exit 111, supervise retries); once running, outages are survived. */
  static async open(target: RedisTarget, opts: RedisOpenOptions = {}): Promise<RedisStore> {
    const commandTimeout = opts.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
    // plain objects, not RedisOptions: ioredis's own option types do not pass exactOptionalPropertyTypes
    const common = {
      ...(target.username !== undefined ? { username: target.username } : {}),
      ...(target.password !== undefined ? { password: target.password } : {}),
      ...(target.tls ? { tls: {} } : {}),
      connectTimeout: CONNECT_TIMEOUT_MS,
      commandTimeout,
      // a command for a Redis that is down fails at once rather than waiting in a queue:
      // the request it serves gets its "not decided" answer now, not after the client gave up
      maxRetriesPerRequest: 0,
      lazyConnect: true,
      // the requests of one event-loop turn go out in one write per server
      enableAutoPipelining: true,
    } as const;
    io ??= await import('ioredis');
    const retry = (times: number): number => Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** Math.min(times - 1, 10));
    let client: Client;
    if (target.cluster) {
      const { enableAutoPipelining: _pipelining, lazyConnect: _lazy, ...nodeOptions } = common;
      const copts = {
        enableOfflineQueue: false,
        enableAutoPipelining: true,
        clusterRetryStrategy: retry,
        scaleReads: 'master' as const,
        lazyConnect: true,
        slotsRefreshTimeout: CONNECT_TIMEOUT_MS,
        // each node's connection: the cluster pipelines and connects lazily itself
        redisOptions: nodeOptions,
      };
      client = new io.Cluster(
        target.nodes.map((n) => ({ host: n.host, port: n.port })),
        copts,
      );
    } else {
      client = new io.Redis({ ...common, host: target.nodes[0].host, port: target.nodes[0].port, ...(target.db !== undefined ? { db: target.db } : {}), enableOfflineQueue: false, retryStrategy: retry });
    }
    const store = new RedisStore(client, target, opts);
    // errors come back from the commands; without a listener ioredis would print each one.
    // The connection's own error (a refused certificate, a wrong password) says more than
    // the "Connection is closed" a command then gets: kept for the start-up message
    let connectionError: string | null = null;
    client.on('error', (e: Error) => (connectionError = e.message));
    client.on('ready', () => store.recovered());
    try {
      await client.connect();
      if (client instanceof io.Cluster) await store.waitReady();
      await store.checkFormat();
    } catch (e) {
      client.disconnect();
      if (e instanceof StoreError) throw e;
      const why = connectionError !== null && connectionError !== message(e) ? `${connectionError} (${message(e)})` : message(e);
      throw new StoreError('QGREYD_STORE_IO', `Redis at ${describeTarget(target)}: ${why}; start it, or check --store`, true);
    }
    return store;
  }

  get healthy(): boolean {
    return this.failedSince === null;
  }

  private async waitReady(): Promise<void> {
    // a Cluster is "ready" once it loaded the slot map; give it the connect timeout
    const c = this.client as Cluster;
    if (c.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the Cluster did not become ready')), CONNECT_TIMEOUT_MS * 3);
      c.once('ready', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private async checkFormat(): Promise<void> {
    await this.client.set(REDIS_FORMAT_KEY, String(REDIS_FORMAT), 'NX');
    const v = await this.client.get(REDIS_FORMAT_KEY);
    if (v !== String(REDIS_FORMAT)) {
      throw new StoreError('QGREYD_STORE_FORMAT', `Redis at ${this.location} holds qgreyd records of format ${JSON.stringify(v)} (key ${REDIS_FORMAT_KEY}); this qgreyd reads format ${REDIS_FORMAT}: run the qgreyd that wrote them, or give another database`);
    }
  }

  /** A failed command: reported once per outage, then only the recovery. */
  private failed(e: unknown): StoreError {
    if (e instanceof StoreError) return e;
    const error = `Redis at ${this.location}: ${message(e)}`;
    if (this.failedSince === null && !this.closed) {
      this.failedSince = Date.now();
      this.opts.onHealth?.({ state: 'failed', error, retryInMs: RECONNECT_FIRST_MS } satisfies StoreHealth);
    }
    return new StoreError('QGREYD_STORE_IO', error, true);
  }

  private recovered(): void {
    if (this.failedSince === null) return;
    const afterMs = Date.now() - this.failedSince;
    this.failedSince = null;
    this.opts.onHealth?.({ state: 'recovered', afterMs });
  }

  /** A command that went through: the store works (a Cluster may be "ready" while a node is
   *  gone, so success is what counts). */
  private worked(): void {
    if (this.failedSince !== null) this.recovered();
  }

  private check(): void {
    if (this.closed) throw new StoreError('QGREYD_STORE_IO', `the store at ${this.location} is closed`);
  }

  async lookup(keys: readonly string[]): Promise<Value[]> {
    this.check();
    if (keys.length === 0) return [];
    let raw: Array<string | null>;
    try {
      raw = await this.getMany(keys.map(redisKeyOf), keys);
    } catch (e) {
      throw this.failed(e);
    }
    this.worked();
    return raw.map(parseValue);
  }

  /** Values of Redis keys, in order: one MGET on a single server (chunked), one per client IP
   *  on a Cluster (an MGET must stay within one slot; one IP's keys share one). */
  private async getMany(rkeys: string[], recordKeys: readonly string[]): Promise<Array<string | null>> {
    if (!this.target.cluster) {
      if (rkeys.length <= MGET_CHUNK) return this.client.mget(rkeys);
      const parts: Array<Promise<Array<string | null>>> = [];
      for (let i = 0; i < rkeys.length; i += MGET_CHUNK) parts.push(this.client.mget(rkeys.slice(i, i + MGET_CHUNK)));
      return (await Promise.all(parts)).flat();
    }
    const byTag = new Map<string, number[]>();
    for (let i = 0; i < recordKeys.length; i++) {
      const t = slotGroup(recordKeys[i]);
      let list = byTag.get(t);
      if (list === undefined) byTag.set(t, (list = []));
      list.push(i);
    }
    const out = new Array<string | null>(rkeys.length);
    await inWaves(
      [...byTag.values()].map((idx) => async () => {
        const vals = await this.client.mget(idx.map((i) => rkeys[i]));
        idx.forEach((i, j) => (out[i] = vals[j]));
      }),
    );
    return out;
  }

  async commit(groups: readonly CommitGroup[]): Promise<CommitResult> {
    this.check();
    // one script call per slot (per client IP on a Cluster, everything on one server), the
    // groups in their order within it; a call holds at most COMMIT_CHUNK groups
    const calls = new Map<string, Array<{ owner: number; keys: string[]; args: string[] }>>();
    for (let g = 0; g < groups.length; g++) {
      for (const part of this.split(groups[g])) {
        const tag = this.target.cluster ? slotGroup(part.expect.length > 0 ? part.expect[0][0] : part.changes[0][0]) : '';
        let list = calls.get(tag);
        if (list === undefined) calls.set(tag, (list = []));
        list.push({ owner: g, ...this.encodeGroup(part) });
      }
    }
    const runs: Array<() => Promise<void>> = [];
    const results: Array<{ owner: number; reply: unknown }> = [];
    for (const list of calls.values()) {
      for (let i = 0; i < list.length; i += COMMIT_CHUNK) {
        const chunk = list.slice(i, i + COMMIT_CHUNK);
        const keys: string[] = [];
        const args: string[] = [String(chunk.length)];
        for (const c of chunk) {
          for (const k of c.keys) keys.push(k);
          for (const a of c.args) args.push(a);
        }
        runs.push(() =>
          this.evalCommit(keys, args).then((reply) => {
            if (!Array.isArray(reply) || reply.length !== chunk.length) throw new Error(`the commit script answered ${JSON.stringify(reply)}`);
            chunk.forEach((c, j) => results.push({ owner: c.owner, reply: reply[j] }));
          }),
        );
      }
    }
    try {
      await inWaves(runs);
    } catch (e) {
      throw this.failed(e);
    }
    this.worked();
    let conflicts: CommitResult = null;
    for (const { owner, reply } of results) {
      if (reply === 1) continue;
      if (!Array.isArray(reply)) throw this.failed(new Error(`the commit script answered ${JSON.stringify(reply)} for a group`));
      (conflicts ??= new Map()).set(
        owner,
        (reply.slice(1) as Array<string | null>).map(parseValue),
      );
    }
    return conflicts;
  }

  /** A group whose keys span several client IPs is applied per IP when it has no
   *  expectations (an import, a bulk write): atomicity across IPs is then not needed, and a
   *  Cluster could not give it. A conditional group must stay within one IP. */
  private split(group: CommitGroup): CommitGroup[] {
    const first = group.expect.length > 0 ? group.expect[0][0] : group.changes.length > 0 ? group.changes[0][0] : null;
    if (first === null) return [];
    const tag = slotGroup(first);
    let one = true;
    for (const [k] of group.expect) if (slotGroup(k) !== tag) one = false;
    for (const [k] of group.changes) if (slotGroup(k) !== tag) one = false;
    if (one) return [group];
    if (group.expect.length > 0 && this.target.cluster) {
      throw new StoreError('QGREYD_STORE_IO', 'a conditional change spans several client IPs, which a Redis Cluster cannot apply atomically');
    }
    if (group.expect.length > 0) return [group];
    const byTag = new Map<string, Array<readonly [string, number | null]>>();
    for (const c of group.changes) {
      const t = slotGroup(c[0]);
      let list = byTag.get(t);
      if (list === undefined) byTag.set(t, (list = []));
      list.push(c);
    }
    return [...byTag.values()].map((changes) => ({ expect: [], changes }));
  }

  /** A group as the script reads it: its keys, and its count, expectation count and per-key
   *  triples. */
  private encodeGroup(group: CommitGroup): { keys: string[]; args: string[] } {
    const n = group.expect.length;
    // a key both expected and changed is passed once: its expectation and its change together
    const index = new Map<string, number>();
    const keys: string[] = [];
    const args: string[] = ['', String(n)];
    for (const [k, v] of group.expect) {
      index.set(k, keys.length);
      keys.push(redisKeyOf(k));
      args.push(v === undefined ? '' : String(v), '', '');
    }
    if (index.size !== n) {
      // the same key expected twice: the values must agree, and one check does
      throw new StoreError('QGREYD_STORE_IO', 'a commit group expects one key twice');
    }
    for (const [k, t] of group.changes) {
      let i = index.get(k);
      if (i === undefined) {
        i = keys.length;
        index.set(k, i);
        keys.push(redisKeyOf(k));
        args.push('', '', '');
      }
      if (t === null) {
        args[3 * i + 3] = '-';
        args[3 * i + 4] = '';
      } else {
        const ttl = this.ttlMs(k, t);
        if (ttl !== null && ttl <= 0) {
          // already dead: storing it would only make a record no decision may use
          args[3 * i + 3] = '-';
          args[3 * i + 4] = '';
        } else {
          args[3 * i + 3] = String(t);
          args[3 * i + 4] = ttl === null ? '' : String(ttl);
        }
      }
    }
    args[0] = String(keys.length);
    return { keys, args };
  }

  /** EVALSHA, and EVAL when the server does not have the script yet (a new or restarted
   *  server, a Cluster node): EVAL caches it there for the next time. (ioredis's
   *  defineCommand would do this too, but its Cluster auto-pipelining then routes by the
   *  key count instead of the first key.) */
  private async evalCommit(keys: string[], args: string[]): Promise<unknown> {
    try {
      return await this.client.evalsha(COMMIT_SHA, keys.length, ...keys, ...args);
    } catch (e) {
      if (replyCode(e) !== 'NOSCRIPT') throw e;
      return await this.client.eval(COMMIT_SCRIPT, keys.length, ...keys, ...args);
    }
  }

  /** Milliseconds from now until the record is dead, or null without an expiry rule. */
  private ttlMs(key: string, time: number): number | null {
    if (this.expiresAt === undefined) return null;
    return Math.ceil((this.expiresAt(key, time) - this.clock()) * 1000);
  }

  async *scan(prefix: string, opts: ScanOptions = {}): AsyncGenerator<StoredRecord[]> {
    this.check();
    const match = matchFor(prefix);
    if (match === null) return;
    const keys: Array<[record: string, redis: string]> = [];
    try {
      const nodes = this.client instanceof io.Cluster ? this.client.nodes('master') : [this.client];
      for (const node of nodes) {
        let cursor = '0';
        do {
          const [next, found] = await node.scan(cursor, 'MATCH', match, 'COUNT', 1000);
          cursor = next;
          for (const rk of found) {
            const k = recordKeyOf(rk);
            if (k !== null && k.startsWith(prefix) && (opts.after === undefined || k > opts.after)) keys.push([k, rk]);
          }
        } while (cursor !== '0');
      }
    } catch (e) {
      throw this.failed(e);
    }
    keys.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const chunk = Math.max(1, opts.chunk ?? 1000);
    for (let i = 0; i < keys.length; i += chunk) {
      const part = keys.slice(i, i + chunk);
      let raw: Array<string | null>;
      try {
        raw = await this.getMany(
          part.map((p) => p[1]),
          part.map((p) => p[0]),
        );
      } catch (e) {
        throw this.failed(e);
      }
      const out: StoredRecord[] = [];
      for (let j = 0; j < part.length; j++) {
        // expired or deleted since the SCAN saw it
        if (raw[j] === null) continue;
        let time: Value;
        try {
          time = parseValue(raw[j]);
        } catch (e) {
          if (opts.onCorrupt === undefined) throw e;
          opts.onCorrupt(`${part[j][1]}: ${message(e)}`);
          continue;
        }
        if (time !== undefined) out.push({ key: part[j][0], time });
      }
      if (out.length > 0) yield out;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }
}

/** Runs the calls WAVE at a time, in order: thousands of calls at once (a bulk import over a
 *  Cluster, one call per client IP) would each wait behind all the others and time out on a
 *  busy machine, while a wave's calls still share one write per server. */
const WAVE = 256;
async function inWaves(calls: ReadonlyArray<() => Promise<void>>): Promise<void> {
  for (let i = 0; i < calls.length; i += WAVE) await Promise.all(calls.slice(i, i + WAVE).map((c) => c()));
}

/** The SCAN pattern that covers every Redis key of records starting with `prefix` (the
 *  caller still filters by prefix), or null when no record can start so. */
function matchFor(prefix: string): string | null {
  const kind = prefix.slice(0, 2);
  if (prefix.length < 2) return REDIS_MATCH;
  if (kind !== IP_PREFIX && kind !== TRIPLET_PREFIX) return null;
  const base = `${REDIS_PREFIX}${kind[0]}:`;
  const rest = prefix.slice(2);
  // a whole client IP (what forget and dump --ip ask for): only that IP's keys
  const sp = rest.indexOf(' ');
  if (kind === TRIPLET_PREFIX && sp > 0) {
    const rk = redisTripletKey(rest.slice(0, sp) + ' ');
    return globEscape(rk.slice(0, rk.length - 1)) + ' *';
  }
  return base + '*';
}

function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, (c) => '\\' + c);
}
