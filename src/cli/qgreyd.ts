#!/usr/bin/env node
// qgreyd: the greylisting daemon. Runs in the foreground, logs to stdout; exit 100 for a
// permanent (usage or configuration) error, 111 for a temporary one.
import { accessSync, constants, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { AllowList } from '../access.js';
import { AdminServer } from '../admin.js';
import { Greylist } from '../greylist.js';
import { LineWriter, quoted } from '../log.js';
import { settingsFrom } from '../policy.js';
import { Server } from '../server.js';
import { Store, StoreError } from '../store.js';
import { Whitelist, WhitelistError } from '../whitelist.js';
import { parseArgs, USAGE, UsageError, type Options } from './args.js';
import { dropPrivileges, lookupUser, prepareStateDir, type Account } from './privileges.js';
import { repairStore } from './repair.js';

export const EXIT_PERMANENT = 100;
export const EXIT_TEMPORARY = 111;

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function fail(message: string, code: number): never {
  process.stderr.write(`qgreyd: ${message}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  let options: Options;
  try {
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
    options = parsed.options;
  } catch (e) {
    if (e instanceof UsageError) fail(e.message, EXIT_PERMANENT);
    throw e;
  }

  // read before -u drops privileges: the daemon's user need not be able to read the installation
  const ver = version();
  const log = new LineWriter();
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
  let account: Account | null = null;
  try {
    if (options.whitelist !== null) whitelist = Whitelist.load(options.whitelist);
    if (options.user !== null) {
      account = lookupUser(options.user);
      if (process.getuid?.() !== 0) throw new UsageError(`-u ${options.user}: only root can change user; run qgreyd as root, or leave out -u`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof WhitelistError) fail(e.message, EXIT_PERMANENT);
    throw e;
  }

  const settings = settingsFrom(options.timeoutDays, options.greyHours, options.minResendMinutes);
  // bind first (a port below 1024 needs root), then drop privileges, then open the store as
  // the user who will own its files
  const allow = options.allow.length > 0 ? AllowList.parse(options.allow) : AllowList.defaultFor(options.host);
  // QGREYD_MAX_IN_FLIGHT: a small in-flight bound, for the tests that go past it
  const maxInFlight = Number(process.env.QGREYD_MAX_IN_FLIGHT) || undefined;
  const server = new Server({ host: options.host, port: options.port, debug: options.debug, log, allow, failClosed: options.failClosed, maxInFlight });
  let bound: { address: string; port: number };
  try {
    bound = await server.listen();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const where = `${options.host}:${options.port}`;
    if (err.code === 'EADDRINUSE') fail(`cannot listen on ${where}: address in use (another qgreyd or greydaemon running?)`, EXIT_TEMPORARY);
    if (err.code === 'EACCES') fail(`cannot listen on ${where}: permission denied (ports below 1024 need root; use -u to drop privileges after binding)`, EXIT_PERMANENT);
    if (err.code === 'EADDRNOTAVAIL') fail(`cannot listen on ${where}: that address is not on this host`, EXIT_PERMANENT);
    fail(`cannot listen on ${where}: ${err.message}`, EXIT_TEMPORARY);
  }

  try {
    if (account) {
      prepareStateDir(options.stateDir, account);
      dropPrivileges(account);
    }
  } catch (e) {
    if (e instanceof UsageError) fail(e.message, EXIT_PERMANENT);
    throw e;
  }

  let store: Store;
  try {
    store = await Store.open(options.stateDir, {
      sync: options.sync,
      cacheSize: options.cacheSize,
      onHealth: (h) =>
        log.line(
          h.state === 'failed'
            ? `error store state=${resolve(options.stateDir)} ${quoted(h.error)} answering=${options.failClosed ? 'defer' : 'accept'} retry-in=${h.retryInMs}ms`
            : `store recovered state=${resolve(options.stateDir)} after=${h.afterMs}ms`,
        ),
    });
  } catch (e) {
    if (e instanceof StoreError) {
      const who = account ? ` (running as ${account.name})` : '';
      fail(e.message + who, e.temporary ? EXIT_TEMPORARY : EXIT_PERMANENT);
    }
    throw e;
  }
  const gl = new Greylist(store, settings, whitelist);
  server.attach(gl);
  // before the start line, so that qgreyctl finds the socket as soon as the daemon is up
  const admin = new AdminServer(gl, store, log, ver);
  const adminError = await admin.listen().then(() => null, (e: Error) => e.message);

  const listen = bound.address.includes(':') ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
  log.line(
    `start version=${ver} listen=${listen} state=${store.dir} timeout=${options.timeoutDays}d grey-window=${options.greyHours}h ` +
      `min-resend=${options.minResendMinutes}m sweep=${options.sweepMinutes}m whitelist=${options.whitelist ?? '-'} ` +
      `whitelist-entries=${whitelist.size} user=${account?.name ?? '-'} sync=${options.sync ? 'yes' : 'no'} debug=${options.debug ? 'yes' : 'no'} ` +
      `allow=${allow} cache-size=${options.cacheSize} fail=${options.failClosed ? 'closed' : 'open'}`,
  );
  log.line(adminError === null ? `admin listen=${admin.path}` : `error admin socket ${admin.path} not started, qgreyctl works only while qgreyd is stopped: ${quoted(adminError)}`);
  if (!allow.restricted) {
    // kept a warning, not a refusal, so that a greydaemon run script listening on a LAN
    // address keeps working when only the program's path changes
    const warning = `warning listen=${listen} is not a loopback address and no --allow is given: qgreyd answers ANY host that can reach this port; add --allow with your mail servers' addresses (env/ALLOW)`;
    log.line(warning);
    process.stderr.write(`qgreyd: ${warning}\n`);
  }
  if (account && options.whitelist !== null) {
    try {
      accessSync(options.whitelist, constants.R_OK);
    } catch {
      log.line(`warning whitelist=${options.whitelist} is not readable by ${account.name}; SIGHUP reloads will fail until it is`);
    }
  }

  // a sweep can outlast the interval: a tick then joins the running one, which logs once
  let sweepRunning = false;
  const sweepTimer = setInterval(() => {
    if (sweepRunning) return;
    sweepRunning = true;
    gl.sweep().finally(() => (sweepRunning = false)).then(
      (r) => log.line(`sweep scanned=${r.scanned} deleted=${r.deleted} ms=${r.ms}`),
      (e: Error) => log.line(`error sweep ${quoted(e.message)}`),
    );
  }, options.sweepMinutes * 60_000);

  process.on('SIGHUP', () => {
    if (options.whitelist === null) {
      log.line('whitelist reload skipped: no -w file');
      return;
    }
    try {
      gl.whitelist = Whitelist.load(options.whitelist);
      log.line(`whitelist reloaded file=${options.whitelist} entries=${gl.whitelist.size}`);
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
    void (async () => {
      await server.close();
      await admin.close();
      await gl.stop();
      await store.close();
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
  if (options.debug) log.line(`debug state=${resolve(options.stateDir)} settings=${JSON.stringify(settings)}`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  fail(`unexpected error: ${(e as Error).stack ?? String(e)}`, EXIT_TEMPORARY);
});
