#!/usr/bin/env node
// qgreyd-conf: creates a daemontools service directory for qgreyd, in the style of djb's
// *-conf tools. Exit 100 for a permanent error (bad usage, missing user, existing directory),
// 111 for a temporary one (a system call failed).
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, lstatSync, mkdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isIP } from 'node:net';
import { isLoopback } from '../daemon/access.js';
import { isWildcard } from '../daemon/listen.js';
import { parseStoreUrl, StoreUrlError } from '../store/redis-url.js';
import { parseListenList, UsageError } from './args.js';
import { lookupUser, type Account } from './privileges.js';
import { QgreydError } from '../errors.js';
import { EXIT_PERMANENT, EXIT_TEMPORARY, exitOnError, type ExitClass } from './common.js';
import { hostPort } from '../ip.js';
import { SETTINGS } from './settings.js';


const USAGE = `usage: qgreyd-conf daemon-user log-user service-dir [ipaddr[:port]] [--store URL]

Creates service-dir (it must not exist) for daemontools: run, log/run, env/ (the settings,
one file each), whitelist, data/ (the state, owned by daemon-user, mode 0700) and log/main
(owned by log-user). ipaddr:port defaults to 127.0.0.1:1999; several addresses, separated
by commas, share one port (127.0.0.1,192.0.2.25:1999). Run it as root; without root, both
users must be you (for your own svscan).

  --store URL   keep the records in Redis, shared with other MX servers' qgreyd
                (redis://[user:password@]host:port[/db], rediss://..., redis-cluster://
                host:port[,host:port...]); written to env/STORE, mode 0600, which qgreyd
                gets in its environment, not on its command line. Default: env/STORE
                empty (LevelDB in data/).`;

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const RUN_TEMPLATE = join(PACKAGE_ROOT, 'supervise', 'qgreyd', 'run');
const LOG_RUN_TEMPLATE = join(PACKAGE_ROOT, 'supervise', 'qgreyd', 'log', 'run');
const SAMPLE_WHITELIST = join(PACKAGE_ROOT, 'whitelist', 'whitelist');
const SAMPLE_EXCEPTIONS = join(PACKAGE_ROOT, 'whitelist', 'exceptions');
const QGREYD = join(dirname(fileURLToPath(import.meta.url)), 'qgreyd.js');

class ConfError extends QgreydError {
  constructor(message: string, exit: ExitClass) {
    super('QGREYD_CONF', message, exit === EXIT_TEMPORARY);
  }
}

/** Single-quoted for /bin/sh. */
function shQuote(s: string): string {
  return /^[A-Za-z0-9_./:@%+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function findUser(role: string, name: string): Account {
  try {
    return lookupUser(name);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    throw new ConfError(
      `${role} ${JSON.stringify(name)} does not exist; create it first, e.g.: useradd -r -M -d /nonexistent -s /usr/sbin/nologin ${name}`,
      EXIT_PERMANENT,
    );
  }
}

/** The run script for this installation: the template with absolute node and qgreyd paths. */
function runScript(template: string, node: string, qgreyd: string): string {
  let replaced = 0;
  const out = template.replace(/^(node|qgreyd)=.*$/gm, (_line, name: string) => {
    replaced++;
    return `${name}=${shQuote(name === 'node' ? node : qgreyd)}`;
  });
  if (replaced !== 2) throw new ConfError(`${RUN_TEMPLATE}: expected a node= and a qgreyd= line to fill in; reinstall qgreyd`, EXIT_TEMPORARY);
  return out;
}

/** The log/run script: multilog as logUser, or as whoever runs svscan when logUser is null. */
function logRunScript(template: string, logUser: string | null): string {
  const line = /^exec setuidgid qmaill multilog /m;
  if (!line.test(template)) throw new ConfError(`${LOG_RUN_TEMPLATE}: expected an "exec setuidgid qmaill multilog" line; reinstall qgreyd`, EXIT_TEMPORARY);
  return template.replace(line, logUser === null ? 'exec multilog ' : `exec setuidgid ${shQuote(logUser)} multilog `);
}

function readTemplate(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfError(`cannot read ${path} (${(e as NodeJS.ErrnoException).code}); reinstall qgreyd`, EXIT_TEMPORARY);
  }
}

/** Whether account can search dir (and so reach what qgreyd-conf creates under it). */
function canReach(account: Account, dir: string): boolean {
  const r = spawnSync('/bin/sh', ['-c', 'cd "$1"', 'sh', dir], { uid: account.uid, gid: account.gid, stdio: 'ignore' });
  return r.status === 0;
}

interface Plan {
  dir: string;
  daemon: Account;
  log: Account;
  /** false: not root, so nothing changes owner and the scripts do not change user */
  root: boolean;
  /** listen addresses, sharing one port (env/IP, env/PORT) */
  hosts: string[];
  port: number;
  /** --store URL for env/STORE, or '' */
  store: string;
}

function plan(argv: string[]): Plan {
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
    process.stdout.write(USAGE + '\n');
    process.exit(0);
  }
  let store = '';
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--store' || a.startsWith('--store=')) {
      const v = a === '--store' ? argv[++i] : a.slice('--store='.length);
      if (v === undefined || v === '') throw new ConfError('--store: needs a URL, e.g. --store redis://10.0.0.5:6379', EXIT_PERMANENT);
      try {
        parseStoreUrl(v);
      } catch (e) {
        if (e instanceof StoreUrlError) throw new ConfError(e.message, EXIT_PERMANENT);
        throw e;
      }
      store = v;
    } else rest.push(a);
  }
  argv = rest;
  if (argv.length < 3 || argv.length > 4) throw new ConfError(USAGE, EXIT_PERMANENT);
  const [daemonName, logName, dirArg, listenArg] = argv;
  if (dirArg === '') throw new ConfError('service-dir: an empty path; give e.g. /var/qmail/supervise/qgreyd', EXIT_PERMANENT);
  let listen: Array<{ host: string; port: number }>;
  try {
    listen = parseListenList(listenArg ?? '');
  } catch (e) {
    if (e instanceof UsageError) throw new ConfError(e.message, EXIT_PERMANENT);
    throw e;
  }
  // the service has one port (env/PORT): an address without one takes the one given
  const items = (listenArg ?? '').split(/[\s,]+/).filter((x) => x !== '');
  const explicit = new Set(listen.filter((_, i) => /^\[[^\]]*\]:|^[^:]*:[^:]*$/.test(items[i] ?? '')).map((l) => l.port));
  if (explicit.size > 1) {
    throw new ConfError(`ipaddr: ${JSON.stringify(listenArg)} gives different ports; the service has one (env/PORT): give it once (127.0.0.1,192.0.2.25:1999)`, EXIT_PERMANENT);
  }
  const port = explicit.size === 1 ? [...explicit][0] : listen[0].port;
  if (port === 0) throw new ConfError('port: 0 picks a random port, which qmail-smtpd could not be told; give a fixed port (1999 is the default)', EXIT_PERMANENT);

  const daemon = findUser('daemon-user', daemonName);
  const log = findUser('log-user', logName);
  const root = process.getuid?.() === 0;
  if (!root) {
    const me = userInfo().username;
    for (const [role, a] of [['daemon-user', daemon], ['log-user', log]] as const) {
      if (a.uid !== process.getuid?.()) {
        throw new ConfError(`${role} ${a.name}: only root can give files to another user; run qgreyd-conf as root, or give your own user (${me}) for both to run qgreyd under your own svscan`, EXIT_PERMANENT);
      }
    }
  }

  const dir = resolve(dirArg);
  try {
    lstatSync(dir);
    throw new ConfError(`${dir} already exists; qgreyd-conf does not overwrite it. Remove it, or give a new directory`, EXIT_PERMANENT);
  } catch (e) {
    if (e instanceof ConfError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ConfError(`cannot examine ${dir} (${(e as NodeJS.ErrnoException).code})`, EXIT_TEMPORARY);
    }
  }
  const parent = dirname(dir);
  let parentIsDir = false;
  try {
    parentIsDir = statSync(parent).isDirectory();
  } catch {
    // reported below
  }
  if (!parentIsDir) throw new ConfError(`${parent} is not a directory; create it first (mkdir -p ${shQuote(parent)})`, EXIT_PERMANENT);
  // qgreyd opens its state directory by absolute path after dropping to the daemon user
  if (root && !canReach(daemon, parent)) {
    throw new ConfError(`${daemon.name} cannot reach ${parent} (a directory on the way is not searchable by it), so qgreyd could not open its state there; choose another place, or make the path searchable (chmod o+x)`, EXIT_PERMANENT);
  }
  return { dir, daemon, log, root, hosts: [...new Set(listen.map((l) => l.host))], port, store };
}

function create(p: Plan): void {
  const node = process.execPath;
  const qgreyd = realpathSync(QGREYD);
  const run = runScript(readTemplate(RUN_TEMPLATE), node, qgreyd);
  const logRun = logRunScript(readTemplate(LOG_RUN_TEMPLATE), p.root ? p.log.name : null);

  const dir = (path: string, mode: number, owner?: Account) => {
    mkdirSync(path, { mode });
    chmodSync(path, mode); // the umask must not decide
    if (owner && p.root) chownSync(path, owner.uid, owner.gid);
  };
  const file = (path: string, text: string, mode: number) => {
    writeFileSync(path, text, { mode, flag: 'wx' });
    chmodSync(path, mode);
  };

  try {
    mkdirSync(p.dir, { mode: 0o755 });
  } catch (e) {
    throw new ConfError(`cannot create ${p.dir} (${(e as NodeJS.ErrnoException).code})`, EXIT_TEMPORARY);
  }
  try {
    chmodSync(p.dir, 0o755);
    file(join(p.dir, 'run'), run, 0o755);
    dir(join(p.dir, 'env'), 0o755);
    const env: Record<string, string> = Object.fromEntries(SETTINGS.map((s) => [s.env, s.conf]));
    env.IP = p.hosts.join(' ');
    env.PORT = String(p.port);
    // without root, svscan runs as this user already and qgreyd -u would be refused
    env.USER = p.root ? p.daemon.name : '';
    env.STORE = p.store;
    // STORE may hold a Redis password: readable by root (the run script) only
    for (const [name, value] of Object.entries(env)) file(join(p.dir, 'env', name), value === '' ? '' : value + '\n', name === 'STORE' ? 0o600 : 0o644);
    copyFileSync(SAMPLE_WHITELIST, join(p.dir, 'whitelist'));
    chmodSync(join(p.dir, 'whitelist'), 0o644);
    copyFileSync(SAMPLE_EXCEPTIONS, join(p.dir, 'exceptions'));
    chmodSync(join(p.dir, 'exceptions'), 0o644);
    dir(join(p.dir, 'data'), 0o700, p.daemon);
    dir(join(p.dir, 'log'), 0o755);
    file(join(p.dir, 'log', 'run'), logRun, 0o755);
    dir(join(p.dir, 'log', 'main'), 0o750, p.log);
  } catch (e) {
    // everything under p.dir is ours: we created p.dir a moment ago
    rmSync(p.dir, { recursive: true, force: true });
    const err = e as NodeJS.ErrnoException;
    throw new ConfError(`cannot create ${p.dir}: ${err.message}; nothing was left behind`, EXIT_TEMPORARY);
  }
}

/** The GREYIP values that reach a daemon on `hosts` for each client family, as
 *  `[netqmail, indimail]` (null: that family cannot reach it), and the addresses other mail
 *  servers would use. The netqmail patch reads an IPv4 address with ":port"; IndiMail reads
 *  "ip@port", takes IPv6 but turns ::1 into 127.0.0.1 and has no way to give a link-local
 *  address its interface. */
export function greyip(hosts: readonly string[], port: number): { netqmail: string | null; indimail: string | null; remote: string[] } {
  const local4 = hosts.some(isWildcard) ? '127.0.0.1' : (hosts.find((h) => isIP(h) === 4 && isLoopback(h)) ?? hosts.find((h) => isIP(h) === 4) ?? null);
  const usable6 = hosts.find((h) => isIP(h) === 6 && !isLoopback(h) && !isWildcard(h) && !/^fe[89ab]/i.test(h)) ?? null;
  const remote = hosts.filter((h) => !isLoopback(h) && !isWildcard(h) && !/^fe[89ab]/i.test(h) && h !== local4 && (local4 !== null || h !== usable6));
  return {
    netqmail: local4 === null ? null : `${local4}:${port}`,
    indimail: local4 !== null ? `${local4}@${port}` : usable6 !== null ? `${usable6}@${port}` : null,
    remote,
  };
}

function greyipText(p: Plan): string {
  const g = greyip(p.hosts, p.port);
  const netqmail = g.netqmail !== null
    ? `     :allow,GREYIP="${g.netqmail}"`
    : '     (none: the patch speaks IPv4 only; add an IPv4 address such as 127.0.0.1 to env/IP)';
  const indimail = g.indimail !== null
    ? `     :allow,GREYIP="${g.indimail}"`
    : '     (none: IndiMail turns ::1 into 127.0.0.1; add 127.0.0.1 to env/IP)';
  let text = `   with the netqmail greylisting patch (GREYIP is ip:port):
${netqmail}
   with IndiMail's qmail-smtpd (GREYIP is ip@port; ip:port would silently use port 1999):
${indimail}
   (you have IndiMail's when this finds something:
     strings $(command -v qmail-smtpd || echo /var/qmail/bin/qmail-smtpd) | grep 'greylist temporary failure - Timeout')
`;
  const wildcard = p.hosts.some(isWildcard);
  for (const h of g.remote) {
    text += isIP(h) === 6
      ? `   Other mail servers reach it at ${h}: GREYIP="${h}@${p.port}" (IndiMail; the netqmail patch has no IPv6)\n`
      : `   Other mail servers reach it at ${h}: GREYIP="${h}:${p.port}" (netqmail patch), GREYIP="${h}@${p.port}" (IndiMail)\n`;
  }
  if (wildcard) text += `   Other mail servers reach it at any address of this host (ip:${p.port} or ip@${p.port}).\n`;
  if (g.remote.length > 0 || wildcard) text += `   List them, with 127.0.0.0/8 ::1 for this host, in env/ALLOW: without it qgreyd answers anyone.\n`;
  return text;
}

function nextSteps(p: Plan): string {
  const listen = p.hosts.map((h) => hostPort(h, p.port)).join(', ');
  const d = shQuote(p.dir);
  const name = shQuote(basename(p.dir));
  const users = p.root ? `qgreyd runs as ${p.daemon.name}, multilog as ${p.log.name}` : `qgreyd and multilog run as the user running svscan`;
  return `qgreyd-conf: created ${p.dir}
  ${users}; listening on ${listen}
  settings: ${join(p.dir, 'env')} (one file per setting; edit one, then svc -t)

Next steps:
1. Let svscan start it (/etc/service instead of /service with Debian's daemontools-run):
     ln -s ${d} /service
   and a few seconds later both should be up:
     svstat /service/${name} /service/${name}/log
2. Greylist in qmail-smtpd: give GREYIP to the clients to greylist in /etc/tcp.smtp. Its
   syntax depends on your qmail-smtpd (README: "How qmail-smtpd uses it"):
${greyipText(p)}   Keep your RELAYCLIENT lines above it (your own clients need no greylisting), then
     tcprules /etc/tcp.smtp.cdb /etc/tcp.smtp.tmp < /etc/tcp.smtp
3. Recommended for a new installation (off as created, so that a copied greydaemon setup
   decides as before; README: "Policy options"), then svc -t /service/${name}:
     echo 24 > ${d}/env/IPV4_PREFIX          # a retry from another host of a sender's /24 passes
     echo 64 > ${d}/env/IPV6_PREFIX          # and of its /64
     echo 1 > ${d}/env/NORMALISE_SENDERS     # BATV, SRS and VERP senders keep one triplet
     echo ./exceptions > ${d}/env/EXCEPTIONS # postmaster@ and abuse@ never wait
     echo 5000 > ${d}/env/MAX_PENDING        # one network's spam run cannot grow the store
`;
}

function main(argv: string[]): void {
  try {
    const p = plan(argv);
    create(p);
    process.stdout.write(nextSteps(p));
  } catch (e) {
    exitOnError('qgreyd-conf', e);
  }
}

main(process.argv.slice(2));
