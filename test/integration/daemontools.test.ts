// qgreyd as a daemontools service, for real: qgreyd-conf writes the service directory, svscan
// starts supervise on it and on log/, multilog writes the log, svc and svstat drive and
// inspect it. As root the service runs as throwaway users created here; otherwise as you.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { userInfo } from 'node:os';
import { tripletKey } from '../../src/policy.js';
import { encodeRequest } from '../../src/protocol.js';
import { ipKey, Store, tripletDbKey } from '../../src/store/leveldb.js';
import { freePort, QGREYD, ROOT, sendRaw, sleep, tempDir, which } from '../helpers.js';
import { procCmdline, procPids, procStat, procStatus } from '../proc.js';

const CONF = join(ROOT, 'dist', 'src', 'cli', 'qgreyd-conf.js');
const DAEMONTOOLS = ['svscan', 'supervise', 'svc', 'svstat', 'multilog', 'tai64nlocal', 'envdir', 'setuidgid'];
const IS_ROOT = process.getuid?.() === 0;

const missing = DAEMONTOOLS.filter((p) => which(p) === null);
/** what svscan gets: the daemontools directories and the system's, not the developer's PATH */
const SVSCAN_PATH = [...new Set(DAEMONTOOLS.map((p) => which(p)).filter((p) => p !== null).map((p) => dirname(p)))].concat('/usr/bin', '/bin').join(':');
const INSTALL_HINT = `daemontools is not installed (missing: ${missing.join(', ')}); install it with: apt-get install daemontools`;
// .ci/run sets this, so that CI fails rather than skipping
const REQUIRED = process.env.QGREYD_REQUIRE_DAEMONTOOLS === '1';
const skip = missing.length > 0 && !REQUIRED ? INSTALL_HINT : false;
if (missing.length > 0 && !REQUIRED) process.stderr.write(`daemontools.test: skipped: ${INSTALL_HINT}\n`);

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000, ...opts });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Polls fn (bounded in time) until it returns a value other than undefined. */
async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 15_000, every = 100): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

function alive(pid: number): boolean {
  // a zombie (an orphaned supervise not yet reaped by init) has exited
  const st = procStat(pid);
  return st !== null && st.state !== 'Z';
}

/** pid's descendants, recursively. */
function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0 && out.length < 1000) {
    for (const c of childrenOf(todo.pop()!)) {
      out.push(c);
      todo.push(c);
    }
  }
  return out;
}

function childrenOf(ppid: number): number[] {
  // a process that exited while we looked has no stat
  return procPids().filter((pid) => procStat(pid)?.ppid === ppid);
}

/** Everything one test sets up, and its teardown (idempotent, safe after any failure). */
class Site {
  readonly root = tempDir('qgreyd-dt-');
  readonly serviceDir = join(this.root, 'qgreyd');
  readonly scanDir = join(this.root, 'service');
  readonly link = join(this.scanDir, 'qgreyd');
  readonly users: string[] = [];
  daemonUser = '';
  logUser = '';
  port = 0;
  svscan: ChildProcess | null = null;
  svscanOutput = '';
  /** every process this site started or that daemontools started for it */
  readonly pids = new Set<number>();
  private cleaned: Promise<number[]> | null = null;

  constructor() {
    // like /var/qmail/supervise: the daemon user opens its state by absolute path, so it must
    // be able to search the parents (mkdtemp makes 0700)
    chmodSync(this.root, 0o755);
  }

  /** As root: two throwaway system users. Otherwise: you, for both. */
  makeUsers(): void {
    if (!IS_ROOT) {
      this.daemonUser = this.logUser = userInfo().username;
      return;
    }
    const tag = `${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
    for (const role of ['d', 'l']) {
      const name = `qgt${role}${tag}`;
      const r = run('useradd', ['-r', '-M', '-d', '/nonexistent', '-s', '/usr/sbin/nologin', name]);
      assert.equal(r.status, 0, `useradd ${name}: ${r.stderr}`);
      this.users.push(name);
    }
    [this.daemonUser, this.logUser] = this.users;
  }

  async install(): Promise<{ status: number | null; stdout: string; stderr: string }> {
    if (this.port === 0) this.port = await freePort('udp') // daemontools cannot report an ephemeral port;
    return run(process.execPath, [CONF, this.daemonUser, this.logUser, this.serviceDir, `127.0.0.1:${this.port}`]);
  }

  env(name: string): string {
    return join(this.serviceDir, 'env', name);
  }

  startSvscan(env: NodeJS.ProcessEnv): void {
    mkdirSync(this.scanDir);
    symlinkSync(this.serviceDir, this.link); // the README's `ln -s <service-dir> /service`
    const p = spawn(which('svscan')!, [this.scanDir], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.svscan = p;
    if (p.pid !== undefined) this.pids.add(p.pid);
    p.stdout!.on('data', (c: Buffer) => (this.svscanOutput += c.toString()));
    p.stderr!.on('data', (c: Buffer) => (this.svscanOutput += c.toString()));
  }

  svc(flags: string, ...which: Array<'service' | 'log'>): void {
    const dirs = (which.length ? which : ['service']).map((w) => (w === 'log' ? join(this.link, 'log') : this.link));
    const r = run('svc', [flags, ...dirs]);
    assert.equal(r.status, 0, `svc ${flags}: ${r.stderr}`);
  }

  /** svstat's line for the service or its log: {up, pid, text}. */
  svstat(which: 'service' | 'log'): { up: boolean; pid: number | null; text: string } {
    const text = run('svstat', [which === 'log' ? join(this.link, 'log') : this.link]).stdout.trim();
    const m = /: up \(pid (\d+)\)/.exec(text);
    if (m) this.pids.add(Number(m[1]));
    return { up: m !== null, pid: m ? Number(m[1]) : null, text };
  }

  /** The supervise processes svscan started; recorded so that teardown can check them. */
  recordSupervisors(): number[] {
    const kids = this.svscan?.pid !== undefined ? childrenOf(this.svscan.pid) : [];
    for (const k of kids) this.pids.add(k);
    return kids;
  }

  /** The log as multilog wrote it: "@<tai64n> <line>". */
  logRaw(): string {
    try {
      return readFileSync(join(this.serviceDir, 'log', 'main', 'current'), 'latin1');
    } catch {
      return '';
    }
  }

  /** The daemon's lines, stamps removed. */
  log(): string[] {
    return this.logRaw()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => l.replace(/^@[0-9a-f]{24} /, ''));
  }

  waitForLog(re: RegExp, from = 0, ms = 15_000): Promise<number> {
    return waitFor(`a log line matching ${re} (log so far:\n${this.log().slice(-20).join('\n')})`, () => {
      const i = this.log().findIndex((l, n) => n >= from && re.test(l));
      return i >= 0 ? i : undefined;
    }, ms);
  }

  query(ip: string, sender: string, rcpts: string[]): Promise<string | null> {
    return sendRaw(this.port, encodeRequest(ip, sender, rcpts), '127.0.0.1', 1000);
  }

  /** Stops everything, removes users and files; resolves with the pids still alive after it. */
  cleanup(): Promise<number[]> {
    this.cleaned ??= this.doCleanup();
    return this.cleaned;
  }

  private async doCleanup(): Promise<number[]> {
    // everything below what we spawned, before signals orphan any of it
    for (const pid of [...this.pids]) if (alive(pid)) for (const d of descendantsOf(pid)) this.pids.add(d);
    const svscan = this.svscan;
    if (svscan && svscan.exitCode === null && svscan.signalCode === null) {
      // first, so that it neither restarts supervise nor keeps the log pipe open
      const gone = new Promise((r) => svscan.once('exit', r));
      svscan.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
    }
    if (existsSync(join(this.serviceDir, 'supervise'))) {
      this.svstat('service');
      this.svstat('log');
      // -x: supervise exits once the service is down; multilog exits at the end of its input
      spawnSync('svc', ['-dx', this.serviceDir, join(this.serviceDir, 'log')], { timeout: 5000 });
    }
    const end = Date.now() + 10_000;
    while ([...this.pids].some(alive) && Date.now() < end) await sleep(100);
    const survivors = [...this.pids].filter(alive);
    for (const pid of survivors) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    if (survivors.length > 0) {
      const end2 = Date.now() + 5000;
      while (survivors.some(alive) && Date.now() < end2) await sleep(100);
    }
    for (const u of this.users) spawnSync('userdel', [u], { timeout: 10_000 });
    rmSync(this.root, { recursive: true, force: true });
    return survivors;
  }
}

function treeModes(dir: string): Array<{ path: string; mode: number; uid: number }> {
  const out = [{ path: dir, mode: lstatSync(dir).mode & 0o7777, uid: lstatSync(dir).uid }];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) out.push(...treeModes(p));
    else out.push({ path: p, mode: st.mode & 0o7777, uid: st.uid });
  }
  return out;
}

function uidOf(user: string): number {
  return Number(run('id', ['-u', user]).stdout.trim());
}

test('qgreyd under svscan, supervise and multilog: install, svstat, replies, svc -h, -t, -d, the log', { skip, timeout: 120_000 }, async (t) => {
  assert.deepEqual(missing, [], INSTALL_HINT);
  const site = new Site();
  // 8: teardown runs however the test ends
  t.after(() => site.cleanup());
  const startedAt = Date.now();

  // 1. the installer
  site.makeUsers();
  const conf = await site.install();
  assert.equal(conf.status, 0, `qgreyd-conf failed: ${conf.stderr}`);
  assert.match(conf.stdout, new RegExp(`ln -s ${site.serviceDir} /service\\n`));
  assert.ok(conf.stdout.includes(`:allow,GREYIP="127.0.0.1:${site.port}"`), conf.stdout);
  assert.ok(conf.stdout.includes('tcprules /etc/tcp.smtp.cdb /etc/tcp.smtp.tmp < /etc/tcp.smtp'), conf.stdout);

  const runText = readFileSync(join(site.serviceDir, 'run'), 'utf8');
  assert.ok(runText.includes(`\nnode=${process.execPath}\n`), 'run names node by its absolute path');
  assert.ok(runText.includes(`\nqgreyd=${realpathSync(QGREYD)}\n`), 'run names qgreyd by its absolute path');
  const logRun = readFileSync(join(site.serviceDir, 'log', 'run'), 'utf8');
  assert.match(logRun, IS_ROOT ? new RegExp(`^exec setuidgid ${site.logUser} multilog t \\./main$`, 'm') : /^exec multilog t \.\/main$/m);

  const modes = treeModes(site.serviceDir);
  for (const f of modes) assert.equal(f.mode & 0o002, 0, `${f.path} is world-writable (${f.mode.toString(8)})`);
  const data = statSync(join(site.serviceDir, 'data'));
  assert.equal(data.mode & 0o777, 0o700);
  assert.equal(data.uid, uidOf(site.daemonUser));
  const logMain = statSync(join(site.serviceDir, 'log', 'main'));
  assert.equal(logMain.uid, uidOf(site.logUser));
  assert.equal(logMain.mode & 0o027, 0, 'log/main is writable only by the log user');
  assert.equal(statSync(join(site.serviceDir, 'run')).mode & 0o777, 0o755);
  assert.equal(readFileSync(site.env('USER'), 'utf8'), IS_ROOT ? `${site.daemonUser}\n` : '');

  const again = await site.install();
  assert.equal(again.status, 100, 'a second qgreyd-conf into the same directory is refused');
  assert.match(again.stderr, /already exists/);
  assert.equal(readFileSync(join(site.serviceDir, 'run'), 'utf8'), runText, 'and changes nothing');

  // the /etc/tcp.smtp line it printed, compiled by tcprules, points qmail-smtpd at this daemon
  let greyip = `127.0.0.1:${site.port}`;
  if (which('tcprules') && which('tcprulescheck')) {
    const rulesLine = /^\s*(:allow,GREYIP=".*")$/m.exec(conf.stdout)![1];
    const rules = join(site.root, 'tcp.smtp');
    writeFileSync(rules, `127.:allow,RELAYCLIENT=""\n${rulesLine}\n`);
    const built = run('tcprules', [`${rules}.cdb`, `${rules}.tmp`], { input: readFileSync(rules, 'utf8') });
    assert.equal(built.status, 0, built.stderr);
    const check = run('tcprulescheck', [`${rules}.cdb`], { env: { ...process.env, TCPREMOTEIP: '192.0.2.1' } });
    greyip = /set environment variable GREYIP=(\S+)/.exec(check.stdout)?.[1] ?? '';
    assert.equal(greyip, `127.0.0.1:${site.port}`, check.stdout);
  } else if (REQUIRED) {
    assert.fail('tcprules is not installed: apt-get install ucspi-tcp');
  }

  // the settings as an admin changes them: a short min-resend, an empty file and a missing
  // one (both mean qgreyd's default)
  writeFileSync(site.env('MIN_RESEND_MINUTES'), '0.02\n');
  writeFileSync(site.env('TIMEOUT_DAYS'), '');
  unlinkSync(site.env('SWEEP_MINUTES'));
  // envdir reads a file's first line only: the list is one line
  writeFileSync(site.env('ALLOW'), '127.0.0.0/8 ::1\n');
  writeFileSync(site.env('FAIL_CLOSED'), 'yes\n');
  // a bare port: loopback; 0 picks a free one, read from the log
  writeFileSync(site.env('METRICS'), '0\n');

  // 2. svscan on a scratch /service, with an environment that must not leak into the settings
  site.startSvscan({
    PATH: SVSCAN_PATH,
    USER: 'root',
    SWEEP_MINUTES: '3',
  });

  // 3. both up, and answering
  const first = await waitFor(`svstat up for both (${site.svstat('service').text} / ${site.svstat('log').text}; svscan: ${site.svscanOutput})`, () => {
    const s = site.svstat('service');
    const l = site.svstat('log');
    return s.up && l.up ? { service: s.pid!, log: l.pid! } : undefined;
  });
  assert.equal(site.recordSupervisors().length, 2, 'svscan runs one supervise for the service and one for log/');
  await site.waitForLog(/^start /);
  const start = site.log().find((l) => l.startsWith('start '))!;
  assert.match(start, new RegExp(` listen=127\\.0\\.0\\.1:${site.port} `));
  assert.match(start, / min-resend=0\.02m /, 'env/MIN_RESEND_MINUTES is used');
  assert.match(start, / timeout=7d /, 'an empty env file means the default');
  assert.match(start, / sweep=10m /, "a missing env file means the default, not svscan's environment");
  assert.match(start, / grey-window=12h /);
  assert.match(start, / allow=127\.0\.0\.0\/8,::1 /, 'env/ALLOW is used');
  assert.match(start, / fail=closed$/, 'env/FAIL_CLOSED is used');
  const metricsLine = site.log().find((l) => l.startsWith('metrics listen='));
  assert.ok(metricsLine, 'env/METRICS is used');
  const metricsUrl = /url=(http:\/\/127\.0\.0\.1:\d+\/metrics)$/.exec(metricsLine)?.[1];
  assert.ok(metricsUrl, metricsLine);
  assert.match(await (await fetch(metricsUrl)).text(), /^qgreyd_store_healthy 1$/m);
  assert.match(start, / whitelist=\.\/whitelist whitelist-entries=2 /);
  assert.match(start, new RegExp(` user=${IS_ROOT ? site.daemonUser : '-'} `));
  // envdir and sh exec: the pid supervise signals is node running qgreyd itself
  const argv = procCmdline(first.service);
  assert.equal(argv[0], process.execPath);
  assert.equal(argv[1], realpathSync(QGREYD));
  if (IS_ROOT) {
    const uid = procStatus(first.service).Uid.split(/\s+/)[0];
    assert.equal(Number(uid), uidOf(site.daemonUser), 'qgreyd dropped to the daemon user');
    const logUid = procStatus(first.log).Uid.split(/\s+/)[0];
    assert.equal(Number(logUid), uidOf(site.logUser), 'multilog runs as the log user');
  }

  assert.equal(greyip, `127.0.0.1:${site.port}`);
  // loopback is whitelisted by the sample list: a probe that stores nothing
  await waitFor('a reply to a whitelisted probe', async () => ((await site.query('127.0.0.1', 'probe@example.org', ['probe@example.org'])) === '0101' ? true : undefined));
  const A = ['192.0.2.1', 'a@x.example', ['b@y.example']] as const;
  const B = ['198.51.100.7', 'c@x.example', ['d@y.example']] as const;
  assert.equal(await site.query(A[0], A[1], [...A[2]]), '0001', 'a new triplet is deferred');
  assert.equal(await site.query(A[0], A[1], [...A[2]]), '0002', 'an immediate retry is too soon');
  assert.equal(await site.query(B[0], B[1], [...B[2]]), '0001', 'not yet whitelisted');

  // 4. svc -h reloads the whitelist
  appendFileSync(join(site.serviceDir, 'whitelist'), '198.51.100.0/24\n');
  site.svc('-h');
  await site.waitForLog(/^whitelist reloaded file=\.\/whitelist entries=3$/);
  assert.equal(await site.query(B[0], B[1], [...B[2]]), '0101', 'the same request is now whitelisted');
  assert.equal(await site.query(B[0], 'e@x.example', ['f@y.example']), '0101');
  assert.equal(site.svstat('service').pid, first.service, 'svc -h does not restart qgreyd');

  // 5. svc -t restarts it, and the state survives
  const before = site.log().length;
  site.svc('-t');
  const stopAt = await site.waitForLog(/^stop signal=SIGTERM$/, before);
  const stoppedAt = await site.waitForLog(/^stopped received=\d+ replied=\d+ /, stopAt);
  await site.waitForLog(/^start /, stoppedAt);
  const second = await waitFor('a new pid after svc -t', () => {
    const s = site.svstat('service');
    return s.up && s.pid !== first.service ? s.pid! : undefined;
  });
  assert.ok(!alive(first.service), 'the old qgreyd has exited');
  await waitFor('a reply after the restart', async () => ((await site.query('127.0.0.1', 'probe@example.org', ['probe@example.org'])) === '0101' ? true : undefined));
  // retry until min-resend (1.2 s, whole seconds in the store) has passed; a too-soon reply
  // changes nothing, so polling is harmless
  const retried = await waitFor('the retry to get past min-resend', async () => {
    const r = await site.query(A[0], A[1], [...A[2]]);
    return r === '0002' ? undefined : r;
  }, 10_000, 250);
  assert.equal(retried, '0103', 'the triplet first seen before the restart passes');
  assert.equal(await site.query(A[0], 'other@z.example', ['c@y.example']), '0102', 'and its IP is now known good');

  // 6. svc -d: a clean exit, and down it stays
  const beforeDown = site.log().length;
  site.svc('-d');
  const downStop = await site.waitForLog(/^stop signal=SIGTERM$/, beforeDown);
  await site.waitForLog(/^stopped received=\d+ replied=\d+ malformed=0 store-errors=0 refused=0 overload=0$/, downStop);
  await waitFor('svstat down', () => (site.svstat('service').up ? undefined : true));
  assert.ok(!alive(second), 'qgreyd has exited');
  await sleep(1500); // longer than supervise's one-second pause before a restart
  const down = site.svstat('service');
  assert.equal(down.up, false, down.text);
  assert.match(down.text, /: down \d+ seconds?, normally up$/);
  assert.equal(site.log().slice(beforeDown).filter((l) => l.startsWith('start ')).length, 0, 'no restart after svc -d');
  assert.equal(site.log().filter((l) => /^(fatal|error) /.test(l)).length, 0, `no errors:\n${site.log().join('\n')}`);
  assert.equal(await site.query(A[0], A[1], [...A[2]]), null, 'nothing answers');

  // the exit status supervise saw but svstat does not show: the same run script, by hand
  const byHand = spawn(join(site.serviceDir, 'run'), [], { cwd: site.serviceDir, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: SVSCAN_PATH } });
  if (byHand.pid !== undefined) site.pids.add(byHand.pid);
  let out = '';
  byHand.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const exit = new Promise<number | null>((r) => byHand.on('exit', (code) => r(code)));
  await waitFor(`./run to start (output: ${out})`, () => (/^start /m.test(out) ? true : undefined));
  byHand.kill('SIGTERM');
  assert.equal(await exit, 0, `run exits 0 on SIGTERM; output:\n${out}`);
  assert.match(out, /^stopped /m);

  // the database was closed: it opens again and holds what the daemon stored
  const store = await Store.open(join(site.serviceDir, 'data'));
  try {
    const [ip, triplet] = await store.get([ipKey(A[0]), tripletDbKey(tripletKey(A[0], A[1], A[2][0]))]);
    assert.equal(typeof ip, 'number', 'the known-good IP was stored');
    assert.equal(typeof triplet, 'number', 'the triplet was stored');
    assert.ok(triplet! * 1000 >= startedAt - 2000 && triplet! * 1000 <= Date.now());
  } finally {
    await store.close();
  }

  // 7. the log: tai64n stamps, readable through tai64nlocal
  const raw = site.logRaw();
  const rawLines = raw.split('\n').filter((l) => l !== '');
  for (const l of rawLines) assert.match(l, /^@[0-9a-f]{24} /, 'multilog t stamps every line');
  assert.ok(rawLines.some((l) => / ip=192\.0\.2\.1 from=<a@x\.example> to=<b@y\.example> reply=00:01 reason=new$/.test(l)));
  assert.ok(rawLines.some((l) => / ip=198\.51\.100\.7 .* reply=01:01 reason=whitelisted whitelist=\.\/whitelist:\d+$/.test(l)));
  assert.ok(rawLines.some((l) => / ip=192\.0\.2\.1 .* reply=01:03 reason=passed$/.test(l)));
  const local = run('tai64nlocal', [], { input: raw });
  assert.equal(local.status, 0);
  const localLines = local.stdout.split('\n').filter((l) => l !== '');
  assert.equal(localLines.length, rawLines.length);
  for (let i = 0; i < localLines.length; i++) {
    const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.\d{9} (.*)$/.exec(localLines[i]);
    assert.ok(m, `tai64nlocal output: ${localLines[i]}`);
    assert.equal(m[3], rawLines[i].slice(26), 'the line itself is unchanged');
    const when = new Date(`${m[1]}T${m[2]}`).getTime(); // local time, as tai64nlocal prints it
    assert.ok(when >= startedAt - 60_000 && when <= Date.now() + 60_000, `${localLines[i]} is a time during this test`);
  }

  // 8. everything stops
  const survivors = await site.cleanup();
  assert.deepEqual(survivors, [], 'every process exited on svc -dx without SIGKILL');
  assert.ok(site.pids.size >= 6, `tracked svscan, 2 supervise, 2 qgreyd, multilog and more: ${[...site.pids].join(' ')}`);
  for (const pid of site.pids) assert.ok(!alive(pid), `pid ${pid} is gone`);
  assert.ok(!existsSync(site.root));
  for (const u of site.users) assert.notEqual(run('id', ['-u', u]).status, 0, `user ${u} removed`);
});

test('teardown stops svscan, supervise, qgreyd and multilog when a test fails midway', { skip, timeout: 60_000 }, async () => {
  assert.deepEqual(missing, [], INSTALL_HINT);
  const site = new Site();
  let started: number[] = [];
  let survivors: number[] = [];
  await assert.rejects(async () => {
    try {
      site.makeUsers();
      const conf = await site.install();
      assert.equal(conf.status, 0, conf.stderr);
      site.startSvscan({ PATH: process.env.PATH });
      await waitFor('both up', () => (site.svstat('service').up && site.svstat('log').up ? true : undefined));
      site.recordSupervisors();
      started = [...site.pids];
      assert.equal(1 + 1, 3, 'a deliberate failure');
    } finally {
      survivors = await site.cleanup();
    }
  }, /a deliberate failure/);
  assert.equal(started.length, 5, `svscan, 2 supervise, qgreyd, multilog: ${started.join(' ')}`);
  assert.deepEqual(survivors, []);
  for (const pid of started) assert.ok(!alive(pid), `pid ${pid} is gone`);
  assert.ok(!existsSync(site.root));
  for (const u of site.users) assert.notEqual(run('id', ['-u', u]).status, 0, `user ${u} removed`);
});
