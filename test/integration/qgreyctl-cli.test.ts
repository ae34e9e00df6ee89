// qgreyctl's command line: query, whitelist check, help, bad arguments, and what it does when
// the store is locked or the socket is out of reach. The commands run in this process
// (ctlInProcess) where no process of their own is needed; the program is spawned (ctl) to
// check its exit codes and streams, a command through a running daemon, another process
// holding the store, another user, and the default state directory.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Store } from '../../src/store/leveldb.js';
import { boundSocket, query, removeDir, startDaemon, tempDir } from '../helpers.js';
import { ctl, ctlInProcess, QGREYCTL } from '../ctl-helpers.js';

test('the program: exit 0, 1, 100 and 111, answers on stdout and errors on stderr, and a command through a running daemon', async () => {
  const dir = tempDir();
  const wl = join(dir, 'wl');
  writeFileSync(wl, '192.0.2.0/24\n');
  const state = join(dir, 'data');
  const d = await startDaemon(['127.0.0.1:0', state]);
  const silent = await boundSocket('127.0.0.1');
  try {
    const yes = await ctl(['whitelist', 'check', wl, '192.0.2.7']);
    assert.deepEqual(yes, { code: 0, stdout: `192.0.2.7 matches ${wl}:1: 192.0.2.0/24\n`, stderr: '' });
    const no = await ctl(['whitelist', 'check', wl, '198.51.100.7']);
    assert.deepEqual(no, { code: 1, stdout: `198.51.100.7 does not match ${wl} (1 entries)\n`, stderr: '' });
    const usage = await ctl(['allow']);
    assert.deepEqual(usage, { code: 100, stdout: '', stderr: 'qgreyctl: allow: needs one IP address; see qgreyctl allow --help\n' });
    const none = await ctl(['query', '--server', `127.0.0.1:${silent.address().port}`, '--wait', '0.2', '192.0.2.1', 'a@x.example', 'b@y.example']);
    assert.equal(none.code, 111);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /^qgreyctl: query: no answer from .* within 0\.2 s/);
    // through the daemon's admin socket: the daemon logs it and answers by it
    const allow = await ctl(['allow', '198.51.100.7', '--state', state]);
    assert.equal(allow.code, 0, allow.stderr);
    assert.match(allow.stdout, /^allowed 198\.51\.100\.7: known good from \S+Z \(was not known\)\n$/);
    assert.equal(allow.stderr, '');
    await d.waitForLine(/^admin op=allow ip=198\.51\.100\.7 /);
    assert.equal(await query(d.port, '198.51.100.7', 'q@q.example', ['r@r.example']), '0102');
  } finally {
    silent.close();
    await d.stop();
    removeDir(dir);
  }
});

const COMMANDS = ['query', 'dump', 'stats', 'import', 'export', 'whitelist', 'allow', 'forget', 'report'];

// in-process: the same dispatch and exit mapping as the program, without starting node 30 times
test('every command has --help, which states its exit codes', async () => {
  const top = await ctlInProcess(['--help']);
  assert.equal(top.code, 0);
  for (const c of COMMANDS) assert.match(top.stdout, new RegExp(`^  ${c} `, 'm'));
  for (const c of COMMANDS) {
    const r = await ctlInProcess([c, '--help']);
    assert.equal(r.code, 0, c);
    assert.match(r.stdout, new RegExp(`^usage: qgreyctl ${c}`), c);
    assert.match(r.stdout, /^exit: 0 /m, c);
  }
});

test('bad usage is a one-line error and exit 100', async () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /^qgreyctl: no command given; see qgreyctl --help\n$/],
    [['frobnicate'], /^qgreyctl: unknown command "frobnicate"; commands: query, dump/],
    [['--bogus', 'stats'], /^qgreyctl: unknown option --bogus before the command/],
    [['dump', '--bogus'], /^qgreyctl: dump: unknown option --bogus; see qgreyctl dump --help\n$/],
    [['dump', '--ip', 'not-an-ip'], /^qgreyctl: dump --ip: "not-an-ip" is not an IPv4 or IPv6 address\n$/],
    [['stats', '-g', 'long'], /^qgreyctl: stats: -g \(--grey-window\): "long" is not a number of hours/],
    [['allow'], /^qgreyctl: allow: needs one IP address/],
    [['allow', '192.0.2.300'], /^qgreyctl: allow: "192.0.2.300" is not an IPv4 or IPv6 address\n$/],
    [['forget', '192.0.2.1', 'only-a-sender'], /^qgreyctl: forget: needs IP, or IP SENDER RCPT/],
    [['export', 'file'], /^qgreyctl: export: unexpected argument "file"; export writes to standard output/],
    [['--state'], /^qgreyctl: --state needs a directory\n$/],
    [['stats', '--state', ''], /^qgreyctl: --state: an empty path/],
    [['query', '192.0.2.1'], /^qgreyctl: query: needs CLIENT-IP SENDER/],
    [['query', '--server', 'nowhere:1', '192.0.2.1', 'a@b', 'c@d'], /^qgreyctl: query: --server: "nowhere" is not an IPv4 or IPv6 address/],
    [['query', '--wait', '0', '192.0.2.1', 'a@b', 'c@d'], /^qgreyctl: query: --wait "0" is not a number of seconds/],
    [['whitelist', 'show', 'f', '1.2.3.4'], /^qgreyctl: whitelist: usage: qgreyctl whitelist check FILE IP\n$/],
  ];
  for (const [args, re] of cases) {
    const r = await ctlInProcess(args);
    assert.equal(r.code, 100, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.equal(r.stdout, '', args.join(' '));
  }
});

test('a missing state directory is an error for reading commands, not created', async () => {
  const dir = tempDir();
  try {
    for (const c of ['dump', 'stats', 'export']) {
      const r = await ctlInProcess([c, '--state', join(dir, 'nope')]);
      assert.equal(r.code, 100, c);
      assert.match(r.stderr, /^qgreyctl: state directory .*nope does not exist; give the daemon's state directory with --state\n$/);
    }
    assert.deepEqual(readdirSync(dir), []);
    const r = await ctl(['dump'], { cwd: dir });
    assert.match(r.stderr, /state directory .*\/data does not exist/, 'the default is ./data');
  } finally {
    removeDir(dir);
  }
});

test('a store locked by another process with no admin socket is a temporary error', async () => {
  const dir = tempDir();
  const store = await Store.open(join(dir, 'data'));
  try {
    const r = await ctl(['stats', '--state', join(dir, 'data')]);
    assert.equal(r.code, 111);
    assert.match(r.stderr, /^qgreyctl: state directory .*data is locked by another process \(qgreyctl-cli\.test pid \d+\) and no daemon answers on .*admin\.sock; if qgreyd is starting or stopping, try again/);
  } finally {
    await store.close();
    removeDir(dir);
  }
});

test('query prints the decoded reply; exit 0 accept, 1 defer', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'wl'), '# probes\n127.0.0.9\n');
  const d = await startDaemon(['-m', '0', '-w', join(dir, 'wl'), '127.0.0.1:0', join(dir, 'data')]);
  try {
    const server = `127.0.0.1:${d.port}`;
    const first = await ctlInProcess(['query', '--server', server, '192.0.2.1', 'a@x.example', 'b@y.example']);
    assert.deepEqual([first.code, first.stdout], [1, 'defer 00:01 new triplet\n']);
    const second = await ctlInProcess(['query', '--server', server, '192.0.2.1', 'A@X.example', 'b@y.example']);
    assert.deepEqual([second.code, second.stdout], [0, 'accept 01:03 triplet passed\n']);
    const third = await ctlInProcess(['query', '--server', server, '192.0.2.1', 'other@x.example', 'c@y.example']);
    assert.deepEqual([third.code, third.stdout], [0, 'accept 01:02 known-good IP\n']);
    const probe = await ctlInProcess(['query', '--server', server, '127.0.0.9', 'probe@example.org', 'postmaster@example.org']);
    assert.deepEqual([probe.code, probe.stdout], [0, 'accept 01:01 whitelisted\n']);
    const verp = await ctlInProcess(['query', '--server', server, '192.0.2.2', '<>', 'list-bounce-u=h.example@lists.example']);
    assert.deepEqual([verp.code, verp.stdout], [0, 'accept 01:04 VERP bounce\n']);
    await d.waitForLine(/ip=192\.0\.2\.2 from=<> to=<list-bounce-u=h\.example@lists\.example> reply=01:04/);
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('query with no answer exits 111 and says the mail would pass unchecked', async () => {
  const silent = await boundSocket('127.0.0.1');
  let got = 0;
  silent.on('message', () => got++);
  try {
    const port = silent.address().port;
    const r = await ctlInProcess(['query', '--server', `127.0.0.1:${port}`, '--wait', '0.2', '192.0.2.1', 'a@x.example', 'b@y.example']);
    assert.equal(r.code, 111);
    assert.match(r.stderr, new RegExp(`^qgreyctl: query: no answer from 127\\.0\\.0\\.1:${port} within 0\\.2 s \\(qmail-smtpd would accept the mail unchecked\\); give --wait SECONDS to wait longer\\n$`));
    assert.equal(got, 1, 'one datagram was sent');
  } finally {
    silent.close();
  }
});

test('whitelist check names the matching line; exit 0 match, 1 none, 100 bad file', async () => {
  const dir = tempDir();
  try {
    const wl = join(dir, 'whitelist');
    writeFileSync(wl, '# local\n127.0.0.1\n192.0.2      # a /24\n2001:db8::/32\n');
    const hit = await ctlInProcess(['whitelist', 'check', wl, '192.0.2.77']);
    assert.deepEqual([hit.code, hit.stdout], [0, `192.0.2.77 matches ${wl}:3: 192.0.2\n`]);
    const v6 = await ctlInProcess(['whitelist', 'check', wl, '2001:DB8::5']);
    assert.deepEqual([v6.code, v6.stdout], [0, `2001:DB8::5 matches ${wl}:4: 2001:db8::/32\n`]);
    const miss = await ctlInProcess(['whitelist', 'check', wl, '198.51.100.1']);
    assert.deepEqual([miss.code, miss.stdout], [1, `198.51.100.1 does not match ${wl} (3 entries)\n`]);
    writeFileSync(join(dir, 'bad'), '127.0.0.1\nmail.example.org\n');
    const bad = await ctlInProcess(['whitelist', 'check', join(dir, 'bad'), '127.0.0.1']);
    assert.equal(bad.code, 100);
    assert.match(bad.stderr, /^qgreyctl: whitelist check: whitelist .*bad:2: "mail\.example\.org" has no address in it.*; qgreyd would refuse this file too\n$/);
    const missing = await ctlInProcess(['whitelist', 'check', join(dir, 'nope'), '127.0.0.1']);
    assert.equal(missing.code, 100);
    assert.match(missing.stderr, /^qgreyctl: whitelist check: cannot read .*nope \(ENOENT\)/);
    const badIp = await ctlInProcess(['whitelist', 'check', wl, 'localhost']);
    assert.equal(badIp.code, 100);
    assert.match(badIp.stderr, /"localhost" is not an IPv4 or IPv6 address/);
  } finally {
    removeDir(dir);
  }
});

const root = typeof process.getuid === 'function' && process.getuid() === 0;
const NOBODY = 65534;

test('only root and the daemon user reach the admin socket', { skip: root ? false : 'needs root to run qgreyctl as another user' }, async () => {
  const dir = tempDir();
  chmodSync(dir, 0o755);
  const state = join(dir, 'data');
  // with no umask the socket would be created 0777: the daemon's chmod is what closes it
  const umask = process.umask(0);
  const d = await startDaemon(['127.0.0.1:0', state]).finally(() => process.umask(umask));
  try {
    const asNobody = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, [QGREYCTL, ...args], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
        p.on('exit', (code) => resolve({ code, stderr }));
      });
    const r = await asNobody(['allow', '192.0.2.1', '--state', state]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, /admin\.sock: permission denied; run qgreyctl as root or as the daemon's user/);
    // even if an admin opens up the directory, the socket itself stays closed
    chmodSync(state, 0o755);
    const r2 = await asNobody(['allow', '192.0.2.1', '--state', state]);
    assert.equal(r2.code, 100);
    assert.match(r2.stderr, /permission denied/);
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001', 'nothing was allowed');
  } finally {
    await d.stop();
    removeDir(dir);
  }
});

test('run as root on the daemon user\'s stopped store, qgreyctl writes files that user owns', { skip: root ? false : 'needs root' }, async () => {
  const dir = tempDir();
  chmodSync(dir, 0o755);
  const state = join(dir, 'data');
  mkdirSync(state, { mode: 0o700 });
  chownSync(state, NOBODY, NOBODY);
  try {
    const r = await ctl(['allow', '192.0.2.50', '--state', state]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of readdirSync(state)) assert.equal(statSync(join(state, f)).uid, NOBODY, f);
    // and the daemon, running as that user, can open it
    const d = await startDaemon(['-u', 'nobody', '127.0.0.1:0', state]);
    try {
      assert.equal(await query(d.port, '192.0.2.50', 'q@q.example', ['r@r.example']), '0102');
      const through = await ctl(['forget', '192.0.2.50', '--state', state]);
      assert.equal(through.code, 0, through.stderr);
      assert.equal(statSync(join(state, 'admin.sock')).uid, NOBODY, 'the socket belongs to the daemon user');
    } finally {
      await d.stop();
    }
  } finally {
    removeDir(dir);
  }
});

test('in-process, a command on a stopped store another user owns refuses instead of changing the test process\'s user', { skip: root ? false : 'needs root' }, async () => {
  const dir = tempDir();
  const state = join(dir, 'data');
  mkdirSync(state, { mode: 0o700 });
  chownSync(state, NOBODY, NOBODY);
  try {
    const r = await ctlInProcess(['allow', '192.0.2.50', '--state', state]);
    assert.equal(r.code, 111, r.stderr);
    assert.match(r.stderr, /owned by uid 65534, and this process may not become another user; run the qgreyctl program/);
    assert.equal(process.getuid!(), 0, 'still root');
    assert.deepEqual(readdirSync(state), [], 'nothing written');
  } finally {
    removeDir(dir);
  }
});

test('a state path too long for a socket: the daemon runs without admin socket and qgreyctl says why', async () => {
  const dir = tempDir();
  const state = join(dir, 'x'.repeat(60), 'y'.repeat(60), 'data');
  mkdirSync(state, { recursive: true });
  const d = await startDaemon(['127.0.0.1:0', state]);
  try {
    await d.waitForLine(/^error admin socket .* not started, qgreyctl works only while qgreyd is stopped: "the path is \d+ bytes, more than the 107/);
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001', 'greylisting goes on');
    const r = await ctlInProcess(['stats', '--state', state]);
    assert.equal(r.code, 111);
    assert.match(r.stderr, /admin socket path is more than 107 bytes long, too long for a socket/);
  } finally {
    await d.stop();
  }
  try {
    const r = await ctlInProcess(['stats', '--json', '--state', state]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { triplets: { count: number } }).triplets.count, 1);
  } finally {
    removeDir(dir);
  }
});
