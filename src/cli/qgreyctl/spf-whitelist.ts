// qgreyctl spf-whitelist: a whitelist file from big senders' SPF records. The walking is in
// ../spf.ts; this is flags, the domain list, and replacing the output file only when every
// domain was walked, so a DNS failure in a cron job leaves yesterday's list in force.
import { closeSync, fchmodSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { isIP } from 'node:net';
import { basename, dirname, join } from 'node:path';
import minimist from 'minimist';
import { CtlError } from '../../admin/client.js';
import { keepNegativeValues } from '../args.js';
import type { CtlContext } from './io.js';
import { DEFAULT_MAX_LOOKUPS, formatWhitelist, isDomainName, nodeDns, parseDomainList, SpfError, walkSpf, type SpfResult } from '../../spf.js';

export const SPF_WHITELIST_HELP = `usage: qgreyctl spf-whitelist [-o FILE] [--resolver IP[:PORT]]... [--wait S] [--max-lookups N]
                              [--skip-bad] [-q] DOMAIN... | -f LISTFILE

Walks each domain's SPF record (ip4, ip6, a, mx, include, redirect) and writes the ranges it
authorises as a whitelist file, one range a line, commented with the domain and the date.
exists, ptr and macros depend on the connecting client: they are reported and left out.
-f LISTFILE     domains one a line, "#" comments (whitelist/spf-domains is a starting list)
-o FILE         write FILE (through a temporary file and a rename); default standard output
--resolver      DNS server(s) to ask (default: /etc/resolv.conf's), e.g. 127.0.0.1 or [::1]:5353
--wait S        seconds to wait for each DNS query try (default 5; 2 tries)
--max-lookups N DNS lookups allowed per domain, as receivers count them (default ${DEFAULT_MAX_LOOKUPS}, RFC 7208)
--skip-bad      leave out domains whose record is bad or missing instead of failing
-q, --quiet     no notes or summary on standard error, only errors (for cron, which mails output)
Nothing is written unless every domain was walked: the previous FILE stays as it was.
exit: 0 written, 100 usage or a bad or missing SPF record, 111 DNS failure (timeout, SERVFAIL).`;

function usage(message: string): never {
  throw new CtlError(`spf-whitelist: ${message}; see qgreyctl spf-whitelist --help`, 100);
}

function strings(v: unknown): string[] {
  if (v === undefined || v === false) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

function resolverAddress(text: string): string {
  const bracket = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text);
  const plain = /^([^:]+)(?::(\d{1,5}))?$/.exec(text);
  const [host, port] = bracket ? [bracket[1], bracket[2]] : plain ? [plain[1], plain[2]] : [text, undefined];
  if (isIP(host) === 0 || (port !== undefined && (Number(port) < 1 || Number(port) > 65535))) {
    usage(`--resolver ${JSON.stringify(text)} is not an IP address with an optional port (127.0.0.1, 127.0.0.1:5353, [::1]:5353)`);
  }
  return text;
}

function positive(flag: string, text: string, whole: boolean): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n <= 0 || (whole && !Number.isInteger(n))) usage(`${flag} ${JSON.stringify(text)} is not a positive ${whole ? 'whole ' : ''}number`);
  return n;
}

export async function cmdSpfWhitelist(argv: string[], ctx: CtlContext): Promise<number> {
  const { io } = ctx;
  const unknown: string[] = [];
  if (argv.some((x) => /^--timeout(=|$)/.test(x))) usage('--timeout is not an option here (elsewhere it means the daemon\'s -t, in days); give --wait SECONDS for the DNS wait');
  const valueFlags = ['o', 'f', 'resolver', 'wait', 'max-lookups', 'state'];
  const a = minimist(keepNegativeValues(argv, [...valueFlags, 'output', 'file']), {
    string: valueFlags,
    boolean: ['skip-bad', 'help', 'q'],
    alias: { o: 'output', f: 'file', h: 'help', q: 'quiet' },
    unknown: (arg) => {
      if (arg.startsWith('-') && arg.length > 1) {
        unknown.push(arg);
        return false;
      }
      return true;
    },
  });
  if (a.help) {
    await io.out(SPF_WHITELIST_HELP + '\n');
    return 0;
  }
  if (unknown.length > 0) usage(`unknown option ${unknown[0]}`);
  const outputs = strings(a.o);
  if (outputs.length > 1) usage('-o given more than once');
  const output = outputs[0];
  if (output === '') usage('-o needs a file name');
  const servers = strings(a.resolver).map(resolverAddress);
  const timeout = positive('--wait', strings(a.wait).pop() ?? '5', false);
  const maxLookups = positive('--max-lookups', strings(a['max-lookups']).pop() ?? String(DEFAULT_MAX_LOOKUPS), true);

  const domains: string[] = [];
  for (const d of (a._ as unknown[]).map(String)) {
    const name = d.replace(/\.$/, '').toLowerCase();
    if (!isDomainName(name)) usage(`${JSON.stringify(d)} is not a domain name`);
    domains.push(name);
  }
  for (const file of strings(a.f)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new CtlError(`spf-whitelist: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a file of domain names, one a line`, 100);
    }
    try {
      domains.push(...parseDomainList(text, file));
    } catch (e) {
      if (e instanceof SpfError) throw new CtlError(`spf-whitelist: ${e.message}`, 100);
      throw e;
    }
  }
  const unique = [...new Set(domains)];
  if (unique.length === 0) usage('no domains given (DOMAIN... or -f LISTFILE)');

  const dns = nodeDns(servers.length > 0 ? servers : null, Math.round(timeout * 1000), 2);
  const results: SpfResult[] = [];
  const failures: SpfError[] = [];
  for (const d of unique) {
    try {
      results.push(await walkSpf(d, dns, maxLookups));
    } catch (e) {
      if (!(e instanceof SpfError)) throw e;
      failures.push(e);
    }
  }
  const quiet = a.q === true;
  if (!quiet) for (const r of results) for (const n of r.notes) io.err(`qgreyctl: spf-whitelist: ${r.domain}: note: ${n}\n`);
  const where = output === undefined ? 'nothing written' : `${output} left as it was`;
  const temporary = failures.filter((f) => f.temporary);
  for (const f of failures) io.err(`qgreyctl: spf-whitelist: ${f.domain}: ${f.message}\n`);
  if (temporary.length > 0) {
    throw new CtlError(`spf-whitelist: DNS failed for ${temporary.map((f) => f.domain).join(', ')}; ${where}; try again later`, 111);
  }
  if (failures.length > 0 && !a['skip-bad']) {
    throw new CtlError(
      `spf-whitelist: no usable SPF record for ${failures.map((f) => f.domain).join(', ')}; ${where}; remove ${failures.length === 1 ? 'it' : 'them'} from the list, or give --skip-bad to leave ${failures.length === 1 ? 'it' : 'them'} out`,
      100,
    );
  }
  const ranges = new Set(results.flatMap((r) => r.ranges.map((x) => x.cidr))).size;
  if (ranges === 0) throw new CtlError(`spf-whitelist: the SPF records give no address ranges; ${where}`, 100);
  const text = formatWhitelist(results, new Date(), failures.map((f) => `${f.domain}: ${f.message}`));
  if (output === undefined) {
    await io.out(text);
  } else {
    replaceFile(output, text);
  }
  const from = `${results.length} domain${results.length === 1 ? '' : 's'}`;
  const left = failures.length > 0 ? `; left out ${failures.map((f) => f.domain).join(', ')}` : '';
  if (!quiet) io.err(`qgreyctl: spf-whitelist: ${output === undefined ? 'wrote' : `wrote ${output}:`} ${ranges} ranges from ${from}${left}\n`);
  return 0;
}

/** Writes FILE whole or not at all: a reader (qgreyd on SIGHUP) sees the old file or the new one. */
function replaceFile(file: string, text: string): void {
  let mode = 0o644;
  try {
    const st = statSync(file);
    if (st.isDirectory()) throw new CtlError(`spf-whitelist: -o ${file} is a directory; give a file name`, 100);
    mode = st.mode & 0o7777;
  } catch (e) {
    if (e instanceof CtlError) throw e;
    // no previous file: a new one readable by the daemon's user
  }
  const tmp = join(dirname(file), `.${basename(file)}.tmp-${process.pid}`);
  let fd: number | null = null;
  try {
    fd = openSync(tmp, 'w', mode);
    // the umask must not make the new list unreadable to the daemon where the old one was not
    fchmodSync(fd, mode);
    writeSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, file);
  } catch (e) {
    if (fd !== null) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // never created
    }
    const err = e as NodeJS.ErrnoException;
    throw new CtlError(`spf-whitelist: cannot write ${file} (${err.code ?? err.message}); check the directory exists and is writable; ${file} left as it was`, err.code === 'ENOENT' || err.code === 'EACCES' || err.code === 'ENOTDIR' ? 100 : 111);
  }
}
