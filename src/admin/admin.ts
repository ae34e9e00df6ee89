// The daemon's admin socket: how qgreyctl reads and changes the store while qgreyd holds it
// (LevelDB admits one opener). A UNIX-domain socket in the state directory, mode 0600 in a
// 0700 directory, so only root and the daemon's user reach it. The protocol is
// newline-delimited JSON, one request per connection:
//
//   daemon: {"hello":"qgreyd-admin","version":1,"settings":{...},"now":N}
//   client: {"op":"dump","filter":{...}} | {"op":"export"} | {"op":"stats"} | {"op":"allow","ip":...}
//           | {"op":"forget","ip":...[,"sender":...,"rcpt":...]} | {"op":"import"}
//   import: the client then sends {"records":[...]} lines and {"end":true}
//   daemon: zero or more {"records":[...]} lines (dump, export), then {"done":{...}} or {"error":"..."}
//
// Every change runs inside Greylist.exclusive (between decision batches, through the store's
// cache) and is logged as an `admin op=...` line.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { join, relative } from 'node:path';
import { allow, dump, shownSender, forgetIp, forgetTriplet, Importer, OpsError, stats, type DumpFilter, type OpsContext } from './ops.js';
import { saveFileIp, type SaveRecord } from '../savefile.js';
import type { Greylist } from '../daemon/queue.js';
import { escapeField, quoted, type LineWriter } from '../log/log.js';
import type { LiveCounters } from '../metrics.js';

export const ADMIN_SOCKET = 'admin.sock';
export const ADMIN_PROTOCOL_VERSION = 1;
/** No sane request line comes near this; a longer one ends the connection. */
export const MAX_LINE = 16 * 1024 * 1024;

export function adminSocketPath(stateDir: string): string {
  return join(stateDir, ADMIN_SOCKET);
}

/** The longest path a UNIX socket address holds on Linux (sun_path, less its NUL). */
export const MAX_SOCKET_PATH = 107;

/** The path to bind or connect to: relative to the working directory when that is shorter,
 *  since the kernel (and libuv, silently) cut socket paths at 107 bytes. null if neither fits.
 *  qgreyd never changes its working directory, so a relative path stays valid. */
export function socketAddress(path: string): string | null {
  const rel = relative(process.cwd(), path);
  const best = rel !== '' && Buffer.byteLength(rel) < Buffer.byteLength(path) ? rel : path;
  return Buffer.byteLength(best) <= MAX_SOCKET_PATH ? best : null;
}

/** JSON values, one per line, pulled from the socket as the consumer asks for them, so a
 *  sender streaming millions of records is held back by TCP-style flow control. */
export async function* readJsonLines(sock: net.Socket): AsyncGenerator<unknown> {
  let partial = '';
  // a character may straddle two chunks
  const decoder = new StringDecoder('utf8');
  for await (const chunk of sock as AsyncIterable<Buffer>) {
    partial += decoder.write(chunk);
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (line.trim() === '') continue;
      yield JSON.parse(line) as unknown;
    }
    if (partial.length > MAX_LINE) throw new Error(`a line longer than ${MAX_LINE} bytes`);
  }
  partial += decoder.end();
  if (partial.trim() !== '') yield JSON.parse(partial) as unknown;
}

/** Writes one JSON line; resolves when the socket can take more. */
export function writeJsonLine(sock: net.Socket, value: unknown): Promise<void> {
  if (sock.destroyed || !sock.writable) return Promise.reject(new Error('connection closed'));
  const ok = sock.write(JSON.stringify(value) + '\n');
  if (ok) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      sock.off('drain', onDrain);
      sock.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('connection closed'));
    sock.once('drain', onDrain);
    sock.once('close', onClose);
  });
}

interface Request {
  op?: unknown;
  filter?: unknown;
  ip?: unknown;
  sender?: unknown;
  rcpt?: unknown;
}

export class AdminServer {
  private server: net.Server | null = null;
  private closing = false;
  private readonly connections = new Set<net.Socket>();
  private readonly handlers = new Set<Promise<void>>();
  readonly path: string;
  /** what was bound: `path`, or the same relative to the working directory */
  private address: string;
  private readonly ctx: OpsContext;

  constructor(
    private readonly greylist: Greylist,
    /** only its directory: the socket lives there (a shared store's state directory too) */
    store: { readonly dir: string },
    private readonly log: LineWriter,
    private readonly version = '',
    /** the daemon's counters, added to a stats answer */
    private readonly live?: () => Promise<LiveCounters>,
  ) {
    this.path = adminSocketPath(store.dir);
    this.address = this.path;
    this.ctx = greylist.opsContext();
  }

  /** Listens on <statedir>/admin.sock. A socket file left by a daemon that died is removed:
   *  the caller holds the store (its pid file and LevelDB's lock), so no live daemon can be
   *  using it. */
  async listen(): Promise<void> {
    const address = socketAddress(this.path);
    if (address === null) {
      throw new Error(`the path is ${Buffer.byteLength(this.path)} bytes, more than the ${MAX_SOCKET_PATH} a UNIX socket path may have; give qgreyd a shorter state directory path`);
    }
    try {
      unlinkSync(address);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const server = net.createServer((sock) => this.accept(sock));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // the socket file is created by the bind inside listen(): born 0600, no window
      const umask = process.umask(0o177);
      try {
        server.listen(address, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    try {
      // already 0600 by the umask; the directory (0700, nobody else's: qgreyd checks it at
      // start) is the other lock. Check that what was bound is our socket and nothing else.
      chmodSync(address, 0o600);
      const st = lstatSync(address);
      const euid = process.geteuid?.();
      if (!st.isSocket() || (euid !== undefined && st.uid !== euid) || (st.mode & 0o077) !== 0) {
        throw new Error(`${this.path} is not the socket qgreyd bound (a ${st.isSocket() ? 'socket' : 'file'} of uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}); check who can write the state directory`);
      }
    } catch (e) {
      server.close();
      this.server = null;
      throw e;
    }
    this.address = address;
    server.on('error', (e) => this.log.line(`error admin ${quoted(e.message)}`));
  }

  private accept(sock: net.Socket): void {
    this.connections.add(sock);
    sock.on('error', () => undefined);
    const h = this.serve(sock)
      .catch((e: Error) => {
        if (!this.closing) this.log.line(`error admin ${quoted(e.message)}`);
      })
      .finally(() => {
        this.connections.delete(sock);
        this.handlers.delete(h);
        sock.end();
      });
    this.handlers.add(h);
  }

  private async serve(sock: net.Socket): Promise<void> {
    await writeJsonLine(sock, {
      hello: 'qgreyd-admin',
      version: ADMIN_PROTOCOL_VERSION,
      daemon: this.version,
      settings: this.greylist.settings,
      now: this.greylist.clock(),
    });
    const lines = readJsonLines(sock);
    let req: Request;
    try {
      const first = await lines.next();
      if (first.done) return;
      req = first.value as Request;
    } catch (e) {
      await writeJsonLine(sock, { error: `bad request: ${(e as Error).message}` }).catch(() => undefined);
      return;
    }
    try {
      const done = await this.run(req, sock, lines);
      await writeJsonLine(sock, { done });
    } catch (e) {
      const message = (e as Error).message;
      // a connection cut by our own shutdown is logged by the operation, not as an error
      if (!(e instanceof OpsError) && !this.closing && !sock.destroyed) this.log.line(`error admin op=${opName(req)} ${quoted(message)}`);
      await writeJsonLine(sock, { error: message, permanent: e instanceof OpsError ? e.permanent : false }).catch(() => undefined);
    }
  }

  private async run(req: Request, sock: net.Socket, lines: AsyncGenerator<unknown>): Promise<unknown> {
    switch (req.op) {
      case 'dump':
      case 'export': {
        const filter = req.op === 'export' ? {} : toFilter(req.filter);
        let n = 0;
        let complete = false;
        try {
          for await (const records of dump(this.ctx, filter)) {
            n += records.length;
            await writeJsonLine(sock, { records });
          }
          complete = true;
        } finally {
          // a reader that stops early (qgreyctl dump | head) ends the dump, not an error
          this.log.line(`admin op=${req.op} records=${n}${filterText(filter)}${complete ? '' : ' incomplete=yes'}`);
        }
        return { records: n };
      }
      case 'stats': {
        const s = await stats(this.ctx);
        this.log.line(`admin op=stats ips=${s.ips.count} triplets=${s.triplets.count}`);
        return this.live === undefined ? s : { ...s, live: await this.live() };
      }
      case 'allow': {
        const r = await allow(this.ctx, str(req.ip, 'ip'));
        this.log.line(`admin op=allow ip=${r.ip} time=${r.time} previous=${r.previous ?? '-'}`);
        return r;
      }
      case 'forget': {
        const ip = str(req.ip, 'ip');
        if (req.sender !== undefined || req.rcpt !== undefined) {
          const r = await forgetTriplet(this.ctx, ip, str(req.sender, 'sender'), str(req.rcpt, 'rcpt'));
          this.log.line(`admin op=forget ip=${r.ip} sender=<${escapeField(shownSender(r.triplet?.sender ?? ''))}> rcpt=<${escapeField(r.triplet?.rcpt ?? '')}> deleted=${r.deleted}`);
          return r;
        }
        const r = await forgetIp(this.ctx, ip);
        this.log.line(`admin op=forget ip=${r.ip} deleted=${r.deleted}`);
        return r;
      }
      case 'import':
        return this.import(lines);
      default:
        throw new OpsError(`unknown admin request ${JSON.stringify(req.op)}; is qgreyctl from the same release as qgreyd?`);
    }
  }

  private async import(lines: AsyncGenerator<unknown>): Promise<unknown> {
    const importer = new Importer(this.ctx);
    let ended = false;
    try {
      // next() by hand: leaving a for-await early would destroy the socket before the reply
      for (;;) {
        const next = await lines.next();
        if (next.done) break;
        const m = next.value as { records?: unknown; end?: unknown };
        if (m.end === true) {
          ended = true;
          break;
        }
        if (!Array.isArray(m.records)) throw new OpsError('import: expected {"records":[...]} or {"end":true}');
        await importer.add(m.records.map(toRecord));
      }
    } finally {
      const c = importer.counts;
      const counts = `records=${c.records} imported=${c.imported} dead=${c.dead} kept=${c.kept}`;
      // an import cut short has written whole batches only; running it again is harmless
      this.log.line(`admin op=import ${counts}${ended ? '' : ' incomplete=yes'}`);
    }
    if (!ended) throw new OpsError('import: the connection ended before the last record; the batches received were imported, run the import again', false);
    return importer.counts;
  }

  /** Stops listening, ends open connections and waits for their work to finish. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    this.closing = true;
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const sock of this.connections) sock.destroy();
    await Promise.allSettled([...this.handlers]);
    await closed;
    try {
      unlinkSync(this.address);
    } catch {
      // already gone
    }
  }
}

function opName(req: Request): string {
  return typeof req.op === 'string' ? escapeField(req.op) : '-';
}

function str(v: unknown, name: string): string {
  if (typeof v !== 'string') throw new OpsError(`request field ${name} is missing or not a string`);
  return v;
}

function toFilter(v: unknown): DumpFilter {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object') throw new OpsError('dump: filter is not an object');
  const f = v as Record<string, unknown>;
  const out: DumpFilter = {};
  for (const k of ['ip', 'sender', 'rcpt'] as const) {
    if (f[k] !== undefined) out[k] = str(f[k], k);
  }
  if (f.only === 'ip' || f.only === 'triplet') out.only = f.only;
  return out;
}

function filterText(f: DumpFilter): string {
  let s = '';
  if (f.ip !== undefined) s += ` ip=${escapeField(f.ip)}`;
  if (f.sender !== undefined) s += ` sender=<${escapeField(f.sender)}>`;
  if (f.rcpt !== undefined) s += ` rcpt=<${escapeField(f.rcpt)}>`;
  return s;
}

function toRecord(v: unknown): SaveRecord {
  const r = v as Record<string, unknown>;
  const time = r?.time;
  if (typeof time !== 'number' || !Number.isFinite(time)) throw new OpsError('import: a record without a time');
  if (r.kind === 'ip') return { kind: 'ip', ip: recordIp(str(r.ip, 'ip')), time };
  if (r.kind === 'triplet') return { kind: 'triplet', ip: recordIp(str(r.ip, 'ip')), sender: str(r.sender, 'sender'), rcpt: str(r.rcpt, 'rcpt'), time };
  throw new OpsError('import: a record that is neither an ip nor a triplet');
}

/** An imported record's IP, read as the save file reads it (text clients included). */
function recordIp(text: string): string {
  const ip = saveFileIp(text);
  if (typeof ip !== 'string') throw new OpsError(ip.error);
  return ip;
}
