// qgreyctl's way to the store: through the running daemon's admin socket when one answers,
// else by opening the store itself. Both sides offer the same operations (src/admin/ops.ts).
import { existsSync, statSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { allow, dump, forgetIp, forgetTriplet, Importer, OpsError, stats, type AllowResult, type DumpFilter, type ForgetResult, type ImportCounts, type OpsContext, type Stats } from './ops.js';
import { type SaveRecord } from '../savefile.js';
import { adminSocketPath, MAX_SOCKET_PATH, readJsonLines, socketAddress, writeJsonLine } from './admin.js';
import { unixNow } from '../daemon/queue.js';
import { expiresAt, type Settings } from '../policy.js';
import { isIpKey } from '../store/keys.js';
import { Store, StoreError } from '../store/leveldb.js';
import { RedisStore } from '../store/redis.js';
import type { RedisTarget } from '../store/redis-url.js';
import { EXIT_TEMPORARY, QgreydError, type ExitClass } from '../errors.js';

/** An error qgreyctl reports on one line and exits with `exit` (100 permanent, 111 temporary). */
export class CtlError extends QgreydError {
  constructor(message: string, exit: ExitClass, options?: ErrorOptions) {
    super('QGREYD_CTL', message, exit === EXIT_TEMPORARY, options);
  }
}

export interface Backend {
  /** 'daemon': through the running qgreyd; 'direct': qgreyctl holds the store */
  readonly mode: 'daemon' | 'direct';
  /** the settings that decide what is dead: the daemon's own when it runs */
  readonly settings: Settings;
  readonly stateDir: string;
  dump(filter: DumpFilter): AsyncIterable<SaveRecord[]>;
  /** every record: a dump the daemon logs as an export */
  export(): AsyncIterable<SaveRecord[]>;
  stats(): Promise<Stats>;
  import(batches: AsyncIterable<SaveRecord[]>): Promise<ImportCounts>;
  allow(ip: string): Promise<AllowResult>;
  forget(ip: string, triplet?: { sender: string; rcpt: string }): Promise<ForgetResult>;
  close(): Promise<void>;
}

export interface OpenOptions {
  stateDir: string;
  /** settings for direct mode (the daemon's flags, which qgreyctl cannot know) */
  settings: Settings;
  /** create a missing state directory (import, allow) instead of failing */
  create: boolean;
  /** how long to wait for each answer from a running daemon (ms) */
  waitMs?: number;
  /** the daemon's --store: with the daemon stopped, qgreyctl works on that Redis itself */
  store?: RedisTarget | null;
  /** run as root on a directory another user owns, become that user (default); false in a
   *  process that must keep its user (qgreyctl's commands run inside a test) */
  mayChangeUser?: boolean;
}

/** A paused or wedged daemon must not hang qgreyctl (and the cron job or monitor that runs
 *  it). Long enough for stats over a store of ten million records, which the daemon answers
 *  only at the end (1.3 s per million records measured on two shared cores). */
export const DEFAULT_WAIT_MS = 30_000;

class NoAnswer extends CtlError {}

function noAnswer(sockPath: string, waitMs: number): CtlError {
  return new NoAnswer(
    `${sockPath}: the daemon did not answer within ${waitMs / 1000} s (is it stopped with SIGSTOP, or overloaded?); check it (svstat, top) and try again, or give --wait SECONDS to wait longer`,
    111,
  );
}

/** p, or a CtlError after waitMs (then `onTimeout` runs, e.g. to drop the connection). */
function within<T>(p: Promise<T>, waitMs: number, err: () => CtlError, onTimeout: () => void): Promise<T> {
  return new Promise((resolvePromise, reject) => {
    const t = setTimeout(() => {
      onTimeout();
      reject(err());
    }, waitMs);
    p.then(
      (v) => {
        clearTimeout(t);
        resolvePromise(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

export async function openBackend(opts: OpenOptions): Promise<Backend> {
  const dir = resolve(opts.stateDir);
  const sockPath = adminSocketPath(dir);
  const waitMs = opts.waitMs ?? DEFAULT_WAIT_MS;
  const sock = await connect(sockPath, waitMs);
  if (sock !== null) return DaemonBackend.start(sock, dir, waitMs);
  if (opts.store !== undefined && opts.store !== null) {
    const settings = opts.settings;
    try {
      // TTLs from the records' times and these settings, as the daemon sets them
      return new DirectBackend(await RedisStore.open(opts.store, { expiresAt: (k, t) => expiresAt(isIpKey(k), t, settings) }), settings);
    } catch (e) {
      if (e instanceof StoreError) throw new CtlError(e.message, e.temporary ? 111 : 100);
      throw e;
    }
  }

  if (!existsSync(dir) && !opts.create) {
    throw new CtlError(`state directory ${dir} does not exist; give the daemon's state directory with --state`, 100);
  }
  adoptOwner(dir, opts.mayChangeUser ?? true);
  let store: Store;
  try {
    // one pass over the records: a cache would only fill memory
    store = await Store.open(dir, { cacheSize: 1000, program: 'qgreyctl' });
  } catch (e) {
    if (e instanceof StoreError && e.code === 'QGREYD_STORE_LOCKED' && socketAddress(sockPath) === null) {
      throw new CtlError(
        `state directory ${dir} is locked by another process, and its admin socket path is more than ${MAX_SOCKET_PATH} bytes long, too long for a socket; run qgreyctl (and qgreyd) from near the state directory, e.g. cd into its parent and give --state with a relative path`,
        111,
      );
    }
    if (e instanceof StoreError && e.code === 'QGREYD_STORE_LOCKED') {
      throw new CtlError(
        `state directory ${dir} is locked by another process${e.holder ? ` (${e.holder})` : ''} and no daemon answers on ${sockPath}; if qgreyd is starting or stopping, try again; if another qgreyctl holds it, wait for it`,
        111,
      );
    }
    if (e instanceof StoreError) throw new CtlError(e.message, e.temporary ? 111 : 100);
    throw e;
  }
  return new DirectBackend(store, opts.settings);
}

/** Connects to the admin socket; null when no daemon listens there (no socket file, or a
 *  file a dead daemon left behind, or a path too long for a daemon to have bound). */
function connect(path: string, waitMs: number): Promise<net.Socket | null> {
  const address = socketAddress(path);
  if (address === null) return Promise.resolve(null);
  let sock: net.Socket | undefined;
  const connecting = new Promise<net.Socket | null>((resolvePromise, reject) => {
    sock = net.createConnection(address);
    const s = sock;
    s.once('connect', () => {
      s.off('error', onError);
      resolvePromise(s);
    });
    const onError = (e: NodeJS.ErrnoException) => {
      s.destroy();
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') resolvePromise(null);
      else if (e.code === 'EACCES' || e.code === 'EPERM') {
        reject(new CtlError(`${path}: permission denied; run qgreyctl as root or as the daemon's user`, 100));
      } else if (e.code === 'ENOTDIR') {
        reject(new CtlError(`${path}: the state directory is not a directory; give the daemon's state directory with --state`, 100));
      } else reject(new CtlError(`${path}: cannot connect (${e.code ?? e.message})`, 111));
    };
    s.once('error', onError);
  });
  return within(connecting, waitMs, () => noAnswer(path, waitMs), () => sock?.destroy());
}

/** Run as root on a directory another user owns (the daemon's), become that user first, so
 *  that the LevelDB files qgreyctl creates stay readable and writable by the daemon. */
function adoptOwner(dir: string, may: boolean): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return;
  let st;
  try {
    st = statSync(dir);
  } catch {
    return;
  }
  if (st.uid === 0) return;
  if (!may) throw new CtlError(`state directory ${dir}: owned by uid ${st.uid}, and this process may not become another user; run the qgreyctl program`, 111);
  try {
    process.setgroups!([st.gid]);
    process.setgid!(st.gid);
    process.setuid!(st.uid);
  } catch (e) {
    throw new CtlError(`state directory ${dir}: cannot become its owner uid ${st.uid} (${(e as Error).message})`, 111);
  }
}

class DirectBackend implements Backend {
  readonly mode = 'direct' as const;
  private readonly ctx: OpsContext;

  constructor(private readonly store: Store | RedisStore, readonly settings: Settings) {
    // a shared store takes the administrator's changes unconditionally, as the daemon does
    const write = store instanceof RedisStore ? (ops: Parameters<OpsContext['write']>[0]) => store.commit([{ expect: [], changes: ops }]).then(() => undefined) : (ops: Parameters<OpsContext['write']>[0]) => store.write(ops);
    this.ctx = { store, settings, clock: unixNow, exclusive: (fn) => fn(), write };
  }

  get stateDir(): string {
    return this.store instanceof RedisStore ? this.store.location : this.store.dir;
  }

  dump(filter: DumpFilter): AsyncIterable<SaveRecord[]> {
    return dump(this.ctx, filter);
  }

  export(): AsyncIterable<SaveRecord[]> {
    return dump(this.ctx, {});
  }

  stats(): Promise<Stats> {
    return stats(this.ctx);
  }

  async import(batches: AsyncIterable<SaveRecord[]>): Promise<ImportCounts> {
    const importer = new Importer(this.ctx);
    for await (const b of batches) await importer.add(b);
    return importer.counts;
  }

  allow(ip: string): Promise<AllowResult> {
    return allow(this.ctx, ip);
  }

  forget(ip: string, triplet?: { sender: string; rcpt: string }): Promise<ForgetResult> {
    return triplet ? forgetTriplet(this.ctx, ip, triplet.sender, triplet.rcpt) : forgetIp(this.ctx, ip);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

/** The daemon writes whole batches only, and importing again changes nothing it has. */
function importCut(e: CtlError): CtlError {
  return e.exit === 111 ? new CtlError(`${e.message.replace(/; try again$/, '')}; the batches it received are imported, and importing the file again is safe`, 111) : e;
}

interface Hello {
  hello?: unknown;
  version?: unknown;
  settings?: Settings;
}

class DaemonBackend implements Backend {
  readonly mode = 'daemon' as const;

  private constructor(
    private readonly sock: net.Socket,
    private readonly lines: AsyncGenerator<unknown>,
    readonly settings: Settings,
    readonly stateDir: string,
    private readonly waitMs: number,
  ) {}

  static async start(sock: net.Socket, dir: string, waitMs: number): Promise<DaemonBackend> {
    sock.on('error', () => undefined);
    const lines = readJsonLines(sock);
    let hello: Hello;
    try {
      const first = await within(lines.next(), waitMs, () => noAnswer(adminSocketPath(dir), waitMs), () => sock.destroy());
      if (first.done) throw new Error('it closed the connection');
      hello = first.value as Hello;
    } catch (e) {
      sock.destroy();
      if (e instanceof CtlError) throw e;
      throw new CtlError(`${adminSocketPath(dir)}: the daemon did not greet (${(e as Error).message}); try again`, 111);
    }
    if (hello.hello !== 'qgreyd-admin' || hello.version !== 1 || hello.settings === undefined) {
      sock.destroy();
      throw new CtlError(`${adminSocketPath(dir)}: not a qgreyd admin socket of this release (got ${JSON.stringify(hello).slice(0, 100)})`, 100);
    }
    return new DaemonBackend(sock, lines, hello.settings, dir, waitMs);
  }

  /** p, or exit 111 once the daemon has been silent for the wait. */
  private timed<T>(p: Promise<T>): Promise<T> {
    return within(p, this.waitMs, () => noAnswer(adminSocketPath(this.stateDir), this.waitMs), () => this.sock.destroy());
  }

  /** The next message; `timed` false where the daemon may rightly be silent for long (it
   *  answers an import only at the end: the caller times the wait from the end mark). */
  private async next(timed = true): Promise<Record<string, unknown>> {
    let r: IteratorResult<unknown>;
    try {
      r = await (timed ? this.timed(this.lines.next()) : this.lines.next());
    } catch (e) {
      if (e instanceof CtlError) throw e;
      if (e instanceof SyntaxError) throw new CtlError(`the daemon sent something unreadable (${e.message})`, 111);
      const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new CtlError(`the connection to the daemon broke (${code}) before it answered (did it stop?); try again`, 111);
    }
    if (r.done) throw new CtlError('the daemon closed the connection before answering (did it stop?); try again', 111);
    const m = r.value as Record<string, unknown>;
    if (typeof m.error === 'string') {
      throw new CtlError(`qgreyd: ${m.error}`, m.permanent === true ? 100 : 111);
    }
    return m;
  }

  private async call<T>(req: unknown): Promise<T> {
    await this.send(req);
    const m = await this.next();
    if (!('done' in m)) throw new CtlError('the daemon answered out of turn', 111);
    return m.done as T;
  }

  private async send(value: unknown): Promise<void> {
    try {
      await this.timed(writeJsonLine(this.sock, value));
    } catch (e) {
      if (e instanceof CtlError) throw e;
      throw new CtlError(`the daemon closed the connection (${(e as Error).message}); try again`, 111);
    }
  }

  dump(filter: DumpFilter): AsyncIterable<SaveRecord[]> {
    return this.records({ op: 'dump', filter });
  }

  export(): AsyncIterable<SaveRecord[]> {
    return this.records({ op: 'export' });
  }

  private async *records(req: unknown): AsyncIterable<SaveRecord[]> {
    await this.send(req);
    for (;;) {
      const m = await this.next();
      if ('done' in m) return;
      if (!Array.isArray(m.records)) throw new CtlError('the daemon answered out of turn', 111);
      yield m.records as SaveRecord[];
    }
  }

  stats(): Promise<Stats> {
    return this.call<Stats>({ op: 'stats' });
  }

  async import(batches: AsyncIterable<SaveRecord[]>): Promise<ImportCounts> {
    await this.send({ op: 'import' });
    // the daemon answers only at the end, or with an error at any time
    let failed: CtlError | null = null;
    const answer = this.next(false).then(
      (m) => m,
      (e: CtlError) => {
        failed = e;
        return null;
      },
    );
    let sendFailed = false;
    const send = (v: unknown) =>
      this.send(v).catch((e: unknown) => {
        sendFailed = true;
        throw e;
      });
    try {
      for await (const records of batches) {
        if (failed !== null) throw failed;
        await send({ records });
      }
      await send({ end: true });
    } catch (e) {
      // end our side without the end mark: the daemon logs the import as incomplete and
      // answers; when it went away first, its reason is the better message
      this.sock.end();
      if (e instanceof NoAnswer) throw importCut(e);
      await this.timed(answer);
      if (sendFailed && failed !== null) throw importCut(failed);
      throw e;
    }
    const m = await this.timed(answer);
    if (failed !== null) throw importCut(failed);
    if (m === null || !('done' in m)) throw new CtlError('the daemon answered out of turn', 111);
    return m.done as ImportCounts;
  }

  allow(ip: string): Promise<AllowResult> {
    return this.call<AllowResult>({ op: 'allow', ip });
  }

  forget(ip: string, triplet?: { sender: string; rcpt: string }): Promise<ForgetResult> {
    return this.call<ForgetResult>({ op: 'forget', ip, ...triplet });
  }

  async close(): Promise<void> {
    this.sock.end();
    this.sock.destroy();
  }
}

export { OpsError };

/** A running daemon's settings, from the greeting on its admin socket; null when no daemon
 *  answers there. For work that reads no store but must judge as the daemon does (import's
 *  dry run). */
export async function daemonSettings(stateDir: string, waitMs = DEFAULT_WAIT_MS): Promise<Settings | null> {
  const dir = resolve(stateDir);
  const sock = await connect(adminSocketPath(dir), waitMs);
  if (sock === null) return null;
  const backend = await DaemonBackend.start(sock, dir, waitMs);
  const settings = backend.settings;
  await backend.close();
  return settings;
}
