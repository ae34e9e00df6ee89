#!/usr/bin/env node
// qgreyd: the greylisting daemon. Runs in the foreground, logs to stdout; exit 100 for a
// permanent (usage or configuration) error, 111 for a temporary one.
import { accessSync, constants, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AllowList } from '../daemon/access.js';
import { AdminServer } from '../admin/admin.js';
import { ClockWatch } from '../clock.js';
import { Greylist, unixNow } from '../daemon/queue.js';
import { LineWriter, quoted } from '../log/log.js';
import { Exceptions } from '../exceptions.js';
import type { LiveCounters, Metrics, MetricsServer } from '../metrics.js';
import { PendingCounts } from '../pending.js';
import { expiresAt, settingsFrom, type Grouping } from '../policy.js';
import { isWildcard } from '../daemon/listen.js';
import { adoptStatePath, statePathLogLines, storeDirFor } from './state-path.js';
import { ListenError, Server } from '../daemon/server.js';
import { Store, StoreError } from '../store/leveldb.js';
import { isIpKey, TRIPLET_PREFIX } from '../store/keys.js';
import { RedisStore } from '../store/redis.js';
import { describeTarget } from '../store/redis-url.js';
import { StoreLock } from '../store/lock.js';
import { Whitelist, whitelistFiles, warningLogLine } from '../whitelist.js';
import { parseArgs, USAGE, UsageError, type Options } from './args.js';
import { dropPrivileges, lookupUser, type Account } from './privileges.js';
import { writeSettings } from './recorded-settings.js';
import { checkStatePath, secureStateDir } from './statedir.js';
import { repairStore } from '../store/repair.js';
import { EXIT_TEMPORARY, exitOnError, version } from './common.js';
import { errnoOf, QgreydError } from '../errors.js';
import { hostPort } from '../ip.js';

/** how often the wall clock is compared with the monotonic one (and at each sweep) */
const CLOCK_CHECK_MS = 10_000;

/** A socket qgreyd could not bind, by its errno: in use may pass by itself (111), no
 *  permission or an address not on this host needs the admin (100); anything else is taken
 *  as temporary. */
function bindError(code: string | undefined, messages: { inUse: string; denied: string; notHere: string; other: string }): QgreydError {
  if (code === 'EADDRINUSE') return new QgreydError('QGREYD_ADDRESS_IN_USE', messages.inUse, true);
  if (code === 'EACCES') return new QgreydError('QGREYD_BIND_DENIED', messages.denied);
  if (code === 'EADDRNOTAVAIL') return new QgreydError('QGREYD_ADDRESS_NOT_HERE', messages.notHere);
  return new QgreydError('QGREYD_BIND', messages.other, true);
}

// Every start-up failure is thrown as a QgreydError and reaches exitOnError (at the end of
// this file), which takes the exit code from the error's class: 100 permanent, 111 temporary.

/** When each part of the start-up ended, in ms since the process was executed: -d logs them. */
const startup: Array<[part: string, ms: number]> = [];
const startupMark = (part: string): void => void startup.push([part, Math.round(performance.now())]);

async function main(argv: string[]): Promise<void> {
  startup.push(['node', Math.round(performance.nodeTiming.bootstrapComplete)]);
  startupMark('modules');
  const parsed = parseArgs(argv);
  if (parsed.kind === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`qgreyd ${version()}\n`);
    return;
  }
  if (parsed.kind === 'repair') {
    const r = await repairStore(parsed.stateDir);
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    process.exit(r.code);
  }
  const options: Options = parsed.options;

  // read before -u drops privileges: the daemon's user need not be able to read the installation
  const ver = version();
  // Under daemontools svscan holds the log pipe open while multilog restarts, so EPIPE means
  // there is no supervised reader at all: exiting would only turn every request into a
  // deferral (IndiMail's client) with nobody to restart us, so the daemon keeps deciding.
  // stderr is often the same pipe (2>&1): its failure must not kill the daemon either.
  process.stderr.on('error', () => undefined);
  const log = new LineWriter(process.stdout, undefined, (err) => {
    process.stderr.write(
      `qgreyd: the log reader went away (standard output: ${err.code ?? err.message}); qgreyd keeps answering requests, but its decision log is lost until it is restarted with a reader on standard output (under daemontools: check the log service, svstat /service/qgreyd/log)\n`,
    );
  });
  // Signals that come during start-up (supervise may send them at any time) must not kill
  // the process with its default action: SIGHUP is a no-op until the whitelist is in place,
  // SIGTERM and SIGINT stop the daemon as soon as it can stop cleanly.
  let earlySignal: NodeJS.Signals | null = null;
  const early = (sig: NodeJS.Signals) => (earlySignal ??= sig);
  const ignoreHup = () => undefined;
  process.on('SIGTERM', early);
  process.on('SIGINT', early);
  process.on('SIGHUP', ignoreHup);
  let whitelist = Whitelist.empty();
  let exceptions: Exceptions | null = null;
  let account: Account | null = null;
  if (options.whitelist.length > 0) whitelist = Whitelist.loadAll(options.whitelist);
  for (const w of whitelist.warnings) log.line(warningLogLine(w));
  if (options.exceptions !== null) exceptions = Exceptions.load(options.exceptions);
  if (options.user !== null) {
    account = lookupUser(options.user);
    if (process.getuid?.() !== 0) throw new UsageError(`-u ${options.user}: only root can change user; run qgreyd as root, or leave out -u`);
  }

  startupMark('settings');
  const settings = settingsFrom(options.timeoutDays, options.greyHours, options.minResendMinutes);
  // bind first (a port below 1024 needs root), then drop privileges, then open the store as
  // the user who will own its files
  const allow = options.allow.length > 0 ? AllowList.parse(options.allow) : AllowList.defaultFor(options.listen.map((l) => l.host));
  // QGREYD_MAX_IN_FLIGHT: a small in-flight bound, for the tests that go past it
  const maxInFlight = Number(process.env.QGREYD_MAX_IN_FLIGHT) || undefined;
  // what a scrape and qgreyctl stats read, filled in as the parts below come up
  const startedAt = Math.floor(Date.now() / 1000);
  let gl: Greylist | null = null;
  let store: Store | RedisStore | null = null;
  let lastSweep: LiveCounters['lastSweep'] = null;
  // the directory of the admin socket, the pid file and the recorded settings: the LevelDB
  // store's own, or with --store the state directory given
  const stateDirOf = (s: Store | RedisStore): string => (s instanceof RedisStore ? resolve(options.stateDir) : s.dir);
  // loaded only when asked for: prom-client is a tenth of the start-up
  const MetricsClass = options.metrics === null ? null : (await import('../metrics.js')).Metrics;
  const metrics: Metrics | null =
    MetricsClass === null
      ? null
      : new MetricsClass({
          inFlight: () => server.pending,
          refused: () => server.refused.total,
          overload: () => server.overload.total,
          malformed: () => server.counters.malformed,
          storeHealthy: () => store?.healthy ?? false,
          storeRecords: () => (lastSweep === null ? null : lastSweep.scanned - lastSweep.deleted),
          lastSweep: () => lastSweep,
          whitelistHits: () => whitelistHits() ?? [],
          ...(options.exceptions === null ? {} : { exceptionHits: () => exceptionHits() ?? [] }),
        });
  const whitelistHits = (): LiveCounters['whitelistHits'] =>
    metrics === null || gl === null ? null : gl.whitelist.entries.map((e) => ({ file: e.file, line: e.line, entry: e.text, hits: metrics.whitelistHits(e) }));
  const exceptionHits = (): LiveCounters['whitelistHits'] => {
    const ex = gl?.grouping.exceptions;
    if (metrics === null || ex === null || ex === undefined) return null;
    return ex.entries.map((e) => ({ file: e.file, line: e.line, entry: e.text, hits: metrics.whitelistHits(e) }));
  };
  const server: Server = new Server({ listen: options.listen, debug: options.debug, log, allow, failClosed: options.failClosed, maxInFlight, metrics: metrics ?? undefined });
  let bound: { bound: string[]; failed: ListenError[] };
  try {
    bound = await server.listen();
  } catch (e) {
    if (!(e instanceof ListenError)) throw e;
    const where = e.address;
    throw bindError(e.code, {
      inUse: `cannot listen on ${where}: address in use (another qgreyd or greydaemon running?)`,
      denied: `cannot listen on ${where}: permission denied (ports below 1024 need root; use -u to drop privileges after binding)`,
      notHere: `cannot listen on ${where}: that address is not on this host`,
      other: `cannot listen on ${where}: ${e.message}`,
    });
  }

  startupMark('listen');
  // before -u, as the UDP sockets: a port below 1024 needs root
  let metricsServer: MetricsServer | null = null;
  if (metrics !== null && options.metrics !== null) {
    const where = hostPort(options.metrics.host, options.metrics.port);
    try {
      metricsServer = await metrics.listen(options.metrics.host, options.metrics.port);
    } catch (e) {
      throw bindError(errnoOf(e), {
        inUse: `--metrics ${where}: address in use (another qgreyd, or another exporter on that port?); give another port`,
        denied: `--metrics ${where}: permission denied (ports below 1024 need root)`,
        notHere: `--metrics ${where}: that address is not on this host`,
        other: `--metrics ${where}: ${(e as Error).message}`,
      });
    }
  }

  // greydaemon's last argument is its save file: imported once into a store directory beside
  // it, before -u so that the directory can be made for the user wherever the file lies
  // with --store the records are in Redis: the state path is a directory (admin socket, pid file)
  if (options.store === null) {
    // the store directory beside a save file is written before secureStateDir() runs: its
    // place must pass the same check first
    checkStatePath(storeDirFor(options.stateDir).dir, account);
    const statePath = await adoptStatePath(options.stateDir, settings, { now: unixNow(), owner: account });
    for (const line of statePathLogLines(statePath)) log.line(line);
    options.stateDir = statePath.dir;
  }

  // before the store is opened, as root when -u is given: refuse a state directory another
  // user controls, and create a missing one for the daemon's user
  secureStateDir(options.stateDir, account);
  if (account) dropPrivileges(account);

  // A test hook, not a setting: QGREYD_TEST_CLOCK_FILE names a file holding seconds to add to
  // the wall clock, read at start and on SIGUSR2, so tests can jump the daemon's clock
  // without touching the machine's.
  const testClockFile = process.env.QGREYD_TEST_CLOCK_FILE;
  let testOffsetMs = 0;
  const readTestClock = () => {
    if (testClockFile !== undefined) testOffsetMs = Number(readFileSync(testClockFile, 'utf8').trim()) * 1000 || 0;
  };
  readTestClock();
  const wallMs = testClockFile === undefined ? Date.now : () => Date.now() + testOffsetMs;

  let lock: StoreLock | null = null;
  const stateDir = resolve(options.stateDir);
  if (options.store !== null) {
    const where = describeTarget(options.store);
    try {
      // one qgreyd per state directory: the admin socket and pid file are its own
      const r = StoreLock.acquire(stateDir, 'qgreyd');
      if (!r.ok) throw new QgreydError('QGREYD_STATE_IN_USE', `state directory ${stateDir} is in use by ${r.holder !== null ? `${r.holder.program} pid ${r.holder.pid}` : 'a process that is starting'}; give each qgreyd its own`, true);
      lock = r.lock;
      store = await RedisStore.open(options.store, {
        expiresAt: (key, time) => expiresAt(isIpKey(key), time, settings),
        clock: () => wallMs() / 1000,
        onHealth: (h) =>
          log.line(
            h.state === 'failed'
              ? `error store store=${where} ${quoted(h.error)} answering=${options.failClosed ? 'defer' : 'accept'} retry-in=${h.retryInMs}ms`
              : `store recovered store=${where} after=${h.afterMs}ms`,
          ),
      });
    } catch (e) {
      lock?.release();
      if (e instanceof QgreydError) throw e;
      // the pid file could not be made at all
      const code = errnoOf(e);
      if (code !== undefined) throw new QgreydError('QGREYD_PID_FILE', `state directory ${stateDir}: cannot create its pid file (${code})`, true, { cause: e });
      throw e;
    }
  } else try {
    startupMark('state-dir');
    store = await Store.open(options.stateDir, {
      program: 'qgreyd',
      onPhase: startupMark,
      sync: options.sync,
      maxRecords: options.maxRecords,
      onHealth: (h) =>
        log.line(
          h.state === 'failed'
            ? `error store state=${resolve(options.stateDir)} ${quoted(h.error)} answering=${options.failClosed ? 'defer' : 'accept'} retry-in=${h.retryInMs}ms`
            : `store recovered state=${resolve(options.stateDir)} after=${h.afterMs}ms`,
        ),
    });
  } catch (e) {
    // the user matters to a permission error on the store's files
    if (e instanceof StoreError && account) throw new QgreydError(e.code, `${e.message} (running as ${account.name})`, e.temporary, { cause: e });
    throw e;
  }
  const clock = new ClockWatch(wallMs, () => performance.now(), undefined, settings.timeout * 1000, (j) =>
    log.line(
      j.seconds > 0
        ? `warning clock jumped forward ${j.seconds}s against the monotonic clock; the sweep expires records as if it had not, by ${j.heldBack}s, until it is set back or for ${options.timeoutDays}d`
        : `warning clock jumped back ${-j.seconds}s against the monotonic clock; records dated ahead of now count as now${j.heldBack > 0 ? `; the sweep still holds back ${j.heldBack}s of an earlier jump forward` : ''}`,
    ),
  );
  const clockTimer = setInterval(() => clock.check(), CLOCK_CHECK_MS);
  const greylist = new Greylist(store, settings, whitelist, () => Math.floor(wallMs() / 1000));
  gl = greylist;
  gl.expiryClock = () => clock.expiryNow();
  const grouping: Grouping = { prefixes: options.prefixes, normaliseSenders: options.normaliseSenders, exceptions, maxPending: options.maxPending };
  gl.grouping = grouping;
  if (options.maxPending !== null) {
    // The scan's snapshot is taken before the first request is decided (its first chunk is
    // read now): triplets written from here on are counted by the queue, the rest by the scan.
    const pending = new PendingCounts();
    gl.pending = pending;
    const started = Date.now();
    const scan = store.scan(TRIPLET_PREFIX, { chunk: 5000, onCorrupt: (m) => log.line(`error pending count: ${quoted(m)}`) });
    const first = await scan.next().catch((e: Error) => e);
    const rest = async function* () {
      if (first instanceof Error) throw first;
      if (first.done === true) return;
      yield first.value;
      yield* scan;
    };
    void pending.count(rest(), TRIPLET_PREFIX).then(
      (n) => log.line(`pending counted triplets=${n} networks=${pending.networks} ms=${Date.now() - started}`),
      (e: Error) => log.line(`error pending count failed, --max-pending counts only triplets stored from now on: ${quoted(e.message)}`),
    );
  }
  server.attach(gl);
  startupMark('answering');
  // qgreyctl judges records by these while the daemon is stopped
  try {
    writeSettings(stateDirOf(store), { timeoutDays: options.timeoutDays, greyHours: options.greyHours, minResendMinutes: options.minResendMinutes }, `qgreyd ${ver}`);
  } catch (e) {
    log.line(`warning settings not recorded in ${stateDirOf(store)}, qgreyctl will use its defaults while qgreyd is stopped: ${quoted((e as Error).message)}`);
  }
  const openStore = store;
  const live = async (): Promise<LiveCounters> => ({
    started: startedAt,
    ...server.counters,
    refused: server.refused.total,
    overload: server.overload.total,
    inFlight: server.pending,
    storeHealthy: openStore.healthy,
    lastSweep,
    whitelistEntries: greylist.whitelist.size,
    replies: metrics === null ? null : await metrics.replyCounts(),
    whitelistHits: whitelistHits(),
    ...(options.exceptions === null ? {} : { exceptionEntries: greylist.grouping.exceptions?.size ?? 0, exceptionHits: exceptionHits() }),
  });
  // before the start line, so that qgreyctl finds the socket as soon as the daemon is up
  const admin = new AdminServer(gl, { dir: stateDirOf(openStore) }, log, ver, live);
  const adminError = await admin.listen().then(() => null, (e: Error) => e.message);

  const listen = bound.bound.join(',');
  if (metricsServer !== null) {
    const a = metricsServer.address.includes(':') ? `[${metricsServer.address}]` : metricsServer.address;
    log.line(`metrics listen=${a}:${metricsServer.port} url=http://${a}:${metricsServer.port}/metrics`);
  }
  log.line(
    `start version=${ver} listen=${listen} state=${stateDirOf(store)}${store instanceof RedisStore ? ` store=${store.location}` : ''} timeout=${options.timeoutDays}d grey-window=${options.greyHours}h ` +
      `min-resend=${options.minResendMinutes}m sweep=${options.sweepMinutes}m whitelist=${options.whitelist.join(',') || '-'} ` +
      `whitelist-entries=${whitelist.size} user=${account?.name ?? '-'} sync=${options.sync ? 'yes' : 'no'} debug=${options.debug ? 'yes' : 'no'} ` +
      `allow=${allow} cache-size=${options.cacheSize} fail=${options.failClosed ? 'closed' : 'open'}` +
      groupingText(options, exceptions),
  );
  for (const f of bound.failed) log.line(`warning listen=${f.address} not bound, tried again at SIGHUP: ${quoted(f.message)}`);
  log.line(adminError === null ? `admin listen=${admin.path}` : `error admin socket ${admin.path} not started, qgreyctl works only while qgreyd is stopped: ${quoted(adminError)}`);
  if (!allow.restricted) {
    // kept a warning, not a refusal, so that a greydaemon run script listening on a LAN
    // address keeps working when only the program's path changes
    const warning = `warning listen=${listen} is not only loopback and no --allow is given: qgreyd answers ANY host that can reach this port; add --allow with your mail servers' addresses (env/ALLOW)`;
    log.line(warning);
    process.stderr.write(`qgreyd: ${warning}\n`);
  }
  if (account) {
    let listed: string[] = [];
    try {
      listed = whitelistFiles(options.whitelist);
    } catch {
      // changed since it loaded: the next SIGHUP says what is wrong
    }
    const files = new Map<string, string>([...options.whitelist, ...listed].map((f) => [f, 'whitelist']));
    if (options.exceptions !== null) files.set(options.exceptions, 'exceptions');
    for (const [file, kind] of files) {
      try {
        accessSync(file, constants.R_OK);
      } catch {
        log.line(`warning ${kind}=${file} is not readable by ${account.name}; SIGHUP reloads will fail until it is`);
      }
    }
  }

  // a sweep can outlast the interval: a tick then joins the running one, which logs once
  let sweepRunning = false;
  // every sweep meets a corrupt block again until the store is repaired: say so once
  let corruptLogged = false;
  const sweepTimer = setInterval(() => {
    // a shared store's records expire by their TTLs
    if (sweepRunning || store instanceof RedisStore) return;
    sweepRunning = true;
    gl.sweep().finally(() => (sweepRunning = false)).then(
      (r) => {
        if (r.corrupt !== undefined && !corruptLogged) {
          corruptLogged = true;
          log.line(`error sweep stepped over a corrupt part of the store, and will each time until it is repaired: ${quoted(r.corrupt)}`);
        }
        lastSweep = { at: Math.floor(Date.now() / 1000), scanned: r.scanned, deleted: r.deleted, ms: r.ms };
        log.line(
          `sweep scanned=${r.scanned} deleted=${r.deleted}` +
            (r.normalised > 0 ? ` future-dated-set-to-now=${r.normalised}` : '') +
            (r.compactMs !== undefined ? ` compacted-ms=${r.compactMs}` : '') +
            ` ms=${r.ms}`,
        );
      },
      (e: Error) => log.line(`error sweep ${quoted(e.message)}`),
    );
  }, options.sweepMinutes * 60_000);

  if (testClockFile !== undefined) {
    process.on('SIGUSR2', () => {
      readTestClock();
      clock.check();
      log.line(`test-clock offset=${testOffsetMs / 1000}s`);
    });
  }

  const rescan = options.listen.some((l) => isWildcard(l.host));
  process.on('SIGHUP', () => {
    // a wildcard stands for the addresses the host has now: an address added since start-up
    // is served from this SIGHUP on
    if (rescan) {
      void server.rescan().then((r) => {
        if (r.added.length + r.removed.length > 0) log.line(`listen added=${r.added.join(',') || '-'} removed=${r.removed.join(',') || '-'} now=${server.bound().join(',')}`);
        for (const f of r.failed) log.line(`error listen=${f.address} not bound, tried again at the next SIGHUP: ${quoted(f.message)}`);
      });
    }
    if (options.exceptions !== null) {
      try {
        const ex = Exceptions.load(options.exceptions);
        gl.grouping = { ...gl.grouping, exceptions: ex };
        log.line(`exceptions reloaded file=${options.exceptions} entries=${ex.size}`);
      } catch (e) {
        log.line(`error exceptions reload failed, keeping the old list (${gl.grouping.exceptions?.size ?? 0} entries): ${quoted((e as Error).message)}`);
      }
    }
    if (options.whitelist.length === 0) {
      log.line('whitelist reload skipped: no -w file');
      return;
    }
    try {
      gl.whitelist = Whitelist.loadAll(options.whitelist);
      for (const w of gl.whitelist.warnings) log.line(warningLogLine(w));
      log.line(`whitelist reloaded file=${options.whitelist.join(',')} entries=${gl.whitelist.size}`);
    } catch (e) {
      log.line(`error whitelist reload failed, keeping the old list (${gl.whitelist.size} entries): ${quoted((e as Error).message)}`);
    }
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.line(`stop signal=${signal}`);
    clearInterval(sweepTimer);
    clearInterval(clockTimer);
    void (async () => {
      await server.close();
      await admin.close();
      await metricsServer?.close();
      await gl.stop();
      await openStore.close();
      lock?.release();
      const c = server.counters;
      log.line(
        `stopped received=${c.received} replied=${c.replied} malformed=${c.malformed} store-errors=${c.storeErrors} ` +
          `refused=${server.refused.total} overload=${server.overload.total}${c.shutdown > 0 ? ` shutdown=${c.shutdown}` : ''}`,
      );
      log.flush();
      process.exit(0);
    })();
  };
  process.off('SIGTERM', early);
  process.off('SIGINT', early);
  process.off('SIGHUP', ignoreHup);
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  if (earlySignal !== null) stop(earlySignal);
  process.on('uncaughtException', (e) => {
    log.line(`fatal ${quoted(e.stack ?? String(e))}`);
    log.flush();
    process.exit(EXIT_TEMPORARY);
  });
  if (options.debug) {
    startupMark('ready');
    const source = store instanceof Store ? ` index-from=${store.indexSource} records=${store.memoryRecords}` : '';
    log.line(`debug start-up ms-since-exec ${startup.map(([part, ms]) => `${part}=${ms}`).join(' ')}${source}`);
    log.line(`debug state=${resolve(options.stateDir)} settings=${JSON.stringify(settings)}`);
  }
}

/** The start line's fields for the options that change keys or decisions, when given. */
function groupingText(o: Options, exceptions: Exceptions | null): string {
  let t = '';
  if (o.prefixes.v4 !== 32) t += ` ipv4-prefix=${o.prefixes.v4}`;
  if (o.prefixes.v6 !== 128) t += ` ipv6-prefix=${o.prefixes.v6}`;
  if (o.normaliseSenders) t += ' normalise-senders=yes';
  if (o.exceptions !== null) t += ` exceptions=${o.exceptions} exceptions-entries=${exceptions?.size ?? 0}`;
  if (o.maxPending !== null) t += ` max-pending=${o.maxPending}`;
  return t;
}

main(process.argv.slice(2)).catch((e: unknown) => exitOnError('qgreyd', e));
