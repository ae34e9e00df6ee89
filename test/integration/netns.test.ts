// Listening, for real: two network namespaces joined by a veth pair. The server's interface has
// a primary and a secondary IPv4 address and two IPv6 ones; qgreyd runs in the server's
// namespace; a client in the other one asks through each address with a connect()ed UDP socket,
// as IndiMail's qmail-smtpd does, so that a reply from any other address is dropped by the
// kernel and shows up here as no reply. Needs root (iproute2); skipped otherwise, unless
// QGREYD_REQUIRE_NETNS=1 (CI), which makes a missing capability a failure.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import { removeDir, setTestClock, startDaemon, tempDir, type Daemon } from '../helpers.js';

const REQUIRED = process.env.QGREYD_REQUIRE_NETNS === '1';

function cannotRun(): string | null {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  const ip = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (ip.error || ip.status !== 0) return 'needs iproute2 (apt-get install iproute2)';
  return null;
}
const reason = cannotRun();
const skip = reason !== null && !REQUIRED ? `${reason} (QGREYD_REQUIRE_NETNS=1 makes this a failure)` : false;

const PORT = 1999;
// addresses live only inside the namespaces, so fixed ones cannot clash with the host's
const S1 = '10.201.0.1';
const S2 = '10.201.0.2'; // secondary: a wildcard socket would answer it from S1
const S3 = '10.201.0.3'; // added while qgreyd runs
const S6A = 'fd77:201::1';
const S6B = 'fd77:201::2';
const SLL = 'fe80::201:1'; // link-local: bound with its interface as scope
const S6T = 'fd77:201::3'; // tentative (in duplicate address detection) at start-up
const C4 = '10.201.0.10';
const C6 = 'fd77:201::10';
const CLL = 'fe80::201:10';

function sh(args: string[]): void {
  const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: exit ${r.status}: ${r.stderr}${r.error?.message ?? ''}`);
}

class Net {
  readonly id = `${process.pid % 100000}${randomBytes(2).toString('hex')}`;
  readonly server = `qgreyd-s-${this.id}`;
  readonly client = `qgreyd-c-${this.id}`;
  // interface names: at most 15 bytes
  readonly sIf = `qs${this.id}`;
  readonly cIf = `qc${this.id}`;
  private made: string[] = [];

  create(): void {
    for (const ns of [this.server, this.client]) {
      sh(['ip', 'netns', 'add', ns]);
      this.made.push(ns);
    }
    sh(['ip', 'link', 'add', this.sIf, 'netns', this.server, 'type', 'veth', 'peer', 'name', this.cIf, 'netns', this.client]);
    const s = (...a: string[]) => sh(['ip', '-n', this.server, ...a]);
    const c = (...a: string[]) => sh(['ip', '-n', this.client, ...a]);
    s('link', 'set', 'lo', 'up');
    // no automatic link-local address: it would be tentative (unusable) for a second or two
    s('link', 'set', this.sIf, 'addrgenmode', 'none');
    s('addr', 'add', `${S1}/24`, 'dev', this.sIf);
    s('addr', 'add', `${S2}/24`, 'dev', this.sIf);
    // nodad: usable at once, not after duplicate address detection
    s('-6', 'addr', 'add', `${S6A}/64`, 'dev', this.sIf, 'nodad');
    s('-6', 'addr', 'add', `${S6B}/64`, 'dev', this.sIf, 'nodad');
    s('-6', 'addr', 'add', `${SLL}/64`, 'dev', this.sIf, 'nodad');
    s('link', 'set', this.sIf, 'up');
    c('link', 'set', 'lo', 'up');
    c('link', 'set', this.cIf, 'addrgenmode', 'none');
    c('-6', 'addr', 'add', `${CLL}/64`, 'dev', this.cIf, 'nodad');
    c('addr', 'add', `${C4}/24`, 'dev', this.cIf);
    c('-6', 'addr', 'add', `${C6}/64`, 'dev', this.cIf, 'nodad');
    c('link', 'set', this.cIf, 'up');
  }

  serverIp(...a: string[]): void {
    sh(['ip', '-n', this.server, ...a]);
  }

  /** Deleting a namespace deletes its end of the veth pair, and so the pair. */
  destroy(): void {
    for (const ns of this.made.splice(0)) spawnSync('ip', ['netns', 'del', ns]);
  }
}

// The client: one connect()ed UDP socket, one request, the reply as hex, or what happened.
const CLIENT = `
const dgram = require('node:dgram');
const [host, port, ip] = process.argv.slice(1);
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
const done = (t) => { console.log(t); process.exit(0); };
setTimeout(() => done('timeout'), 1500);
s.on('error', (e) => done('error ' + e.code));
s.on('message', (m, r) => done('reply ' + m.toString('hex') + ' from ' + r.address));
s.connect(Number(port), host, (e) => e ? done('error ' + e.code) : s.send(Buffer.from('I' + ip + '\\0Fa@x.example\\0Tb@y.example\\0\\0', 'latin1')));
`;

let asked = 0;
/** Asks from namespace ns through host: "reply 0001 from <host>", "timeout" or "error ECONNREFUSED". */
function ask(ns: string, host: string): Promise<string> {
  // a new client IP each time: every answer is 00 01, and none depends on an earlier one
  const clientIp = `192.0.2.${++asked}`;
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', CLIENT, host, String(PORT), clientIp], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`client exit ${code}: ${err}`))));
  });
}

const answered = (host: string) => `reply 0001 from ${host}`;

async function withNet(t: TestContext, fn: (net: Net, start: (listen: string, extra?: string[], env?: NodeJS.ProcessEnv) => Promise<Daemon>) => Promise<void>): Promise<void> {
  if (reason !== null) assert.fail(`QGREYD_REQUIRE_NETNS=1 but ${reason}`);
  const net = new Net();
  const dirs: string[] = [];
  const daemons: Daemon[] = [];
  t.after(async () => {
    for (const d of daemons) await d.stop();
    net.destroy();
    for (const d of dirs) removeDir(d);
  });
  net.create();
  const start = async (listen: string, extra: string[] = [], env?: NodeJS.ProcessEnv) => {
    const dir = tempDir();
    dirs.push(dir);
    const d = await startDaemon([...extra, listen, join(dir, 's')], { prefix: ['ip', 'netns', 'exec', net.server], ...(env ? { env } : {}) });
    daemons.push(d);
    return d;
  };
  await fn(net, start);
}

test('0.0.0.0: every IPv4 address answers from itself, the secondary included; IPv6 is not served', { skip, timeout: 60_000 }, async (t) => {
  await withNet(t, async (net, start) => {
    const d = await start(`0.0.0.0:${PORT}`);
    const startLine = d.lines[0];
    for (const a of [`127.0.0.1:${PORT}`, `${S1}:${PORT}`, `${S2}:${PORT}`]) assert.ok(startLine.includes(a), `start line shows ${a}: ${startLine}`);
    assert.ok(!startLine.includes(S6A), startLine);
    assert.equal(await ask(net.client, S1), answered(S1));
    assert.equal(await ask(net.client, S2), answered(S2), 'the secondary address answers from itself');
    assert.notEqual(await ask(net.client, S6A), answered(S6A));
    assert.equal(await ask(net.server, '127.0.0.1'), answered('127.0.0.1'));
  });
});

test(':: is dual-stack: IPv4 and IPv6 clients get answers, each from the address asked', { skip, timeout: 60_000 }, async (t) => {
  await withNet(t, async (net, start) => {
    const d = await start(`[::]:${PORT}`);
    for (const a of [`${S1}:${PORT}`, `${S2}:${PORT}`, `[${S6A}]:${PORT}`, `[${S6B}]:${PORT}`, `[::1]:${PORT}`]) {
      assert.ok(d.lines[0].includes(a), `start line shows ${a}: ${d.lines[0]}`);
    }
    for (const host of [S1, S2, S6A, S6B]) assert.equal(await ask(net.client, host), answered(host));
    assert.equal(await ask(net.server, '127.0.0.1'), answered('127.0.0.1'));
    assert.equal(await ask(net.server, '::1'), answered('::1'));
    assert.ok(d.lines[0].includes(`[${SLL}%${net.sIf}]:${PORT}`), d.lines[0]);
    assert.match(await ask(net.client, `${SLL}%${net.cIf}`), new RegExp(`^reply 0001 from ${SLL}(%.*)?$`), 'a link-local address answers too');
    // the IPv4 clients were seen as IPv4 (no ::ffff: mapped addresses in the log)
    await d.waitForLine(new RegExp(`^client=${C4.replace(/\./g, '\\.')}:\\d+ `));
    assert.ok(!d.lines.some((l) => l.includes('::ffff:')), d.lines.join('\n'));
  });
});

test('several explicit addresses: each answers, an address not given does not; the --allow default is not loopback-only', { skip, timeout: 60_000 }, async (t) => {
  await withNet(t, async (net, start) => {
    const d = await start(`127.0.0.1:${PORT},${S2}:${PORT},[${S6A}]:${PORT}`);
    assert.match(d.lines[0], new RegExp(` listen=127\\.0\\.0\\.1:${PORT},${S2.replace(/\./g, '\\.')}:${PORT},\\[${S6A}\\]:${PORT} `));
    assert.match(d.lines[0], / allow=everyone /);
    assert.equal(await ask(net.server, '127.0.0.1'), answered('127.0.0.1'));
    assert.equal(await ask(net.client, S2), answered(S2));
    assert.equal(await ask(net.client, S6A), answered(S6A));
    assert.notEqual(await ask(net.client, S1), answered(S1));
    assert.notEqual(await ask(net.client, S6B), answered(S6B));
  });
});

test('SIGHUP binds an address added since start-up and lets go of one removed', { skip, timeout: 60_000 }, async (t) => {
  await withNet(t, async (net, start) => {
    const d = await start(`0.0.0.0:${PORT}`, ['--allow', '10.201.0.0/24']);
    net.serverIp('addr', 'add', `${S3}/24`, 'dev', net.sIf);
    assert.notEqual(await ask(net.client, S3), answered(S3), 'not served before SIGHUP');
    d.proc.kill('SIGHUP');
    const added = await d.waitForLine(/^listen added=/);
    assert.match(added, new RegExp(`^listen added=${S3.replace(/\./g, '\\.')}:${PORT} removed=- now=.*${S3.replace(/\./g, '\\.')}`));
    assert.equal(await ask(net.client, S3), answered(S3));
    assert.equal(await ask(net.client, S2), answered(S2), 'the others still answer');

    net.serverIp('addr', 'del', `${S2}/24`, 'dev', net.sIf);
    d.proc.kill('SIGHUP');
    const removed = await d.waitForLine(/^listen added=- removed=/);
    assert.match(removed, new RegExp(`removed=${S2.replace(/\./g, '\\.')}:${PORT} `));
    assert.equal(await ask(net.client, S1), answered(S1));
    assert.equal(await ask(net.client, S3), answered(S3));
  });
});

test('an IPv6 address still in duplicate address detection is skipped with a warning, and bound at SIGHUP once usable', { skip, timeout: 60_000 }, async (t) => {
  await withNet(t, async (net, start) => {
    // DAD that lasts a minute: the address is certainly tentative while qgreyd starts
    sh(['ip', 'netns', 'exec', net.server, 'sysctl', '-q', '-w', `net.ipv6.conf.${net.sIf}.dad_transmits=60`]);
    net.serverIp('-6', 'addr', 'add', `${S6T}/64`, 'dev', net.sIf);
    const d = await start(`[::]:${PORT}`);
    const warning = await d.waitForLine(/^warning listen=\[fd77:201::3\]/);
    assert.match(warning, new RegExp(`^warning listen=\\[${S6T}\\]:${PORT} not bound, tried again at SIGHUP: `));
    assert.ok(!d.lines[0].includes(S6T), d.lines[0]);
    assert.equal(await ask(net.client, S6A), answered(S6A), 'the other addresses are served');
    // made usable at once (nodad), as DAD completing would
    net.serverIp('-6', 'addr', 'del', `${S6T}/64`, 'dev', net.sIf);
    net.serverIp('-6', 'addr', 'add', `${S6T}/64`, 'dev', net.sIf, 'nodad');
    d.proc.kill('SIGHUP');
    await d.waitForLine(new RegExp(`^listen added=\\[${S6T}\\]:${PORT} `));
    assert.equal(await ask(net.client, S6T), answered(S6T));
  });
});

/** Runs one qmail-smtpd DATA stage of `family` (test/qmail-client.ts) in namespace ns. */
function qmailSmtpd(ns: string, family: 'netqmail' | 'indimail', greyip: string, remote: string, sender: string, rcpt: string): Promise<{ smtp: string; cause: string; reply?: string; hangup: boolean }> {
  const runner = join(dirname(fileURLToPath(import.meta.url)), '..', 'qmail-client-run.js');
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, runner, family, greyip, remote, sender, rcpt], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SILENCE_MS: '1500' },
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { smtp: string; cause: string; reply?: string; hangup: boolean }) : reject(new Error(`client exit ${code}: ${err}`))));
  });
}

test('both qmail-smtpd families through the wildcard listener\'s secondary address: first-time, too-soon, pass', { skip, timeout: 60_000 }, async (t) => {
  await withNet(t, async (net, start) => {
    // the daemon's clock is moved on through its test hook instead of waiting min-resend
    const clockDir = tempDir();
    t.after(() => removeDir(clockDir));
    const clockFile = join(clockDir, 'offset');
    writeFileSync(clockFile, '0');
    const d = await start(`0.0.0.0:${PORT}`, [], { ...process.env, QGREYD_TEST_CLOCK_FILE: clockFile });
    let offset = 0;
    const later = async (seconds: number) => {
      offset += seconds;
      await setTestClock(d, clockFile, offset);
    };
    for (const [family, greyip, remote] of [
      ['netqmail', `${S2}:${PORT}`, '192.0.2.50'],
      ['indimail', `${S2}@${PORT}`, '192.0.2.60'],
    ] as const) {
      const ask = () => qmailSmtpd(net.client, family, greyip, remote, 'a@x.example', 'b@y.example');
      const first = await ask();
      assert.deepEqual([first.cause, first.reply, first.smtp], ['reply', '0001', 'defer'], `${family} first-time: ${JSON.stringify(first)}`);
      const soon = await ask();
      assert.deepEqual([soon.cause, soon.reply, soon.smtp], ['reply', '0002', 'defer'], `${family} too soon`);
      await later(400);
      const pass = await ask();
      assert.deepEqual([pass.cause, pass.reply, pass.smtp, pass.hangup], ['reply', '0103', 'accept', false], `${family} pass`);
    }
  });
});
