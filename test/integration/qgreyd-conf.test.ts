// qgreyd-conf's checks and what it writes, and the sample whitelist. (Running the service it
// writes is test/daemontools.test.ts.)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Whitelist } from '../../src/whitelist.js';
import { QGREYD, removeDir, ROOT, tempDir, which } from '../helpers.js';

const CONF = join(ROOT, 'dist', 'src', 'cli', 'qgreyd-conf.js');
const IS_ROOT = process.getuid?.() === 0;
/** a user that exists here: as root, one that is not root; otherwise you */
const OTHER = IS_ROOT ? 'nobody' : userInfo().username;

function conf(...args: string[]) {
  const r = spawnSync(process.execPath, [CONF, ...args], { encoding: 'utf8', timeout: 10_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function withDir(fn: (dir: string) => void): void {
  const dir = tempDir('qgreyd-conf-');
  chmodSync(dir, 0o755);
  try {
    fn(dir);
  } finally {
    removeDir(dir);
  }
}

test('usage errors exit 100 with the usage; --help exits 0', () => {
  for (const args of [[], ['a'], ['a', 'b'], ['a', 'b', 'c', 'd', 'e']]) {
    const r = conf(...args);
    assert.equal(r.status, 100, args.join(' '));
    assert.match(r.stderr, /^qgreyd-conf: usage: qgreyd-conf daemon-user log-user service-dir \[ipaddr\[:port\]\]/);
  }
  const help = conf('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: qgreyd-conf /);
});

test('a missing user stops it, saying how to create the user; nothing is created', () => {
  withDir((dir) => {
    const ghost = `qgreyd-no-such-user-${process.pid}`;
    for (const [args, role] of [
      [[ghost, OTHER, join(dir, 's')], 'daemon-user'],
      [[OTHER, ghost, join(dir, 's')], 'log-user'],
    ] as const) {
      const r = conf(...args);
      assert.equal(r.status, 100, r.stderr);
      assert.equal(r.stderr, `qgreyd-conf: ${role} "${ghost}" does not exist; create it first, e.g.: useradd -r -M -d /nonexistent -s /usr/sbin/nologin ${ghost}\n`);
      assert.ok(!existsSync(join(dir, 's')));
    }
  });
});

test('a bad or unusable address is refused', () => {
  withDir((dir) => {
    const bad = conf(OTHER, OTHER, join(dir, 's'), '1.2.3:99');
    assert.equal(bad.status, 100);
    assert.match(bad.stderr, /ipaddr: "1\.2\.3" is not an IPv4 or IPv6 address/);
    const zero = conf(OTHER, OTHER, join(dir, 's'), '127.0.0.1:0');
    assert.equal(zero.status, 100);
    assert.match(zero.stderr, /port: 0 picks a random port/);
    assert.ok(!existsSync(join(dir, 's')));
  });
});

test('an existing directory is never touched; a missing parent is not created', () => {
  withDir((dir) => {
    const existing = join(dir, 'existing');
    mkdirSync(existing);
    writeFileSync(join(existing, 'keep'), 'mine\n');
    const r = conf(OTHER, OTHER, existing);
    assert.equal(r.status, 100);
    assert.equal(r.stderr, `qgreyd-conf: ${existing} already exists; qgreyd-conf does not overwrite it. Remove it, or give a new directory\n`);
    assert.deepEqual(readdirSync(existing), ['keep']);
    assert.equal(readFileSync(join(existing, 'keep'), 'utf8'), 'mine\n');

    const orphan = conf(OTHER, OTHER, join(dir, 'no', 'such', 'svc'));
    assert.equal(orphan.status, 100);
    assert.match(orphan.stderr, /no\/such is not a directory; create it first \(mkdir -p /);
  });
});

test('without root, both users must be you', { skip: IS_ROOT ? 'runs as root' : false }, () => {
  withDir((dir) => {
    const r = conf('root', userInfo().username, join(dir, 's'));
    assert.equal(r.status, 100);
    assert.match(r.stderr, /daemon-user root: only root can give files to another user; run qgreyd-conf as root, or give your own user/);
  });
});

test('as root: a daemon user who could not reach the state directory is refused', { skip: IS_ROOT ? false : 'needs root' }, () => {
  withDir((dir) => {
    const closed = join(dir, 'closed');
    mkdirSync(closed, { mode: 0o700 });
    const r = conf('nobody', 'nobody', join(closed, 's'));
    assert.equal(r.status, 100);
    assert.match(r.stderr, /nobody cannot reach .*closed \(a directory on the way is not searchable by it\)/);
    assert.deepEqual(readdirSync(closed), []);
  });
});

test('it writes run, log/run, env/, whitelist, data/ and log/main with owners and modes', () => {
  withDir((dir) => {
    const svc = join(dir, 'qgreyd');
    const r = conf(OTHER, OTHER, svc, '127.0.0.2:2525');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^ +ln -s ${svc} /service$`, 'm'));
    assert.match(r.stdout, /^ +svstat \/service\/qgreyd \/service\/qgreyd\/log$/m);
    assert.match(r.stdout, /^ +:allow,GREYIP="127\.0\.0\.2:2525"$/m);
    assert.match(r.stdout, /^ +:allow,GREYIP="127\.0\.0\.2@2525"$/m);
    assert.match(r.stdout, /^ +tcprules \/etc\/tcp\.smtp\.cdb \/etc\/tcp\.smtp\.tmp < \/etc\/tcp\.smtp$/m);

    const env = (n: string) => readFileSync(join(svc, 'env', n), 'utf8');
    assert.deepEqual(readdirSync(join(svc, 'env')).sort(), [
      'ALLOW', 'CACHE_SIZE', 'DEBUG', 'EXCEPTIONS', 'FAIL_CLOSED', 'GREY_HOURS', 'IP', 'IPV4_PREFIX', 'IPV6_PREFIX', 'MAX_PENDING', 'MAX_RECORDS', 'METRICS', 'MIN_RESEND_MINUTES',
      'NORMALISE_SENDERS', 'PORT', 'STATE', 'STORE', 'SWEEP_MINUTES', 'SYNC', 'TIMEOUT_DAYS', 'USER', 'WHITELIST',
    ]);
    // empty: LevelDB in data/; it may hold a Redis password, so only root reads it
    assert.equal(env('STORE'), '');
    assert.equal(statSync(join(svc, 'env', 'STORE')).mode & 0o777, 0o600);
    assert.equal(env('IP'), '127.0.0.2\n');
    assert.equal(env('PORT'), '2525\n');
    assert.equal(env('USER'), IS_ROOT ? 'nobody\n' : '');
    assert.equal(env('WHITELIST'), './whitelist\n');
    assert.equal(env('STATE'), './data\n');
    assert.equal(env('TIMEOUT_DAYS'), '7\n');
    assert.equal(env('GREY_HOURS'), '12\n');
    assert.equal(env('MIN_RESEND_MINUTES'), '5\n');
    assert.equal(env('SWEEP_MINUTES'), '10\n');
    assert.equal(env('DEBUG'), '');
    assert.equal(env('SYNC'), '');
    assert.equal(env('ALLOW'), '');
    assert.equal(env('CACHE_SIZE'), '');
    assert.equal(env('FAIL_CLOSED'), '');
    assert.equal(env('METRICS'), '');
    for (const n of ['IPV4_PREFIX', 'IPV6_PREFIX', 'NORMALISE_SENDERS', 'EXCEPTIONS', 'MAX_PENDING']) assert.equal(env(n), '', `${n} is off as created`);
    // each policy option is recommended for new installations, with the file that turns it on
    for (const [n, v] of [['IPV4_PREFIX', '24'], ['IPV6_PREFIX', '64'], ['NORMALISE_SENDERS', '1'], ['EXCEPTIONS', './exceptions'], ['MAX_PENDING', '5000']]) {
      assert.match(r.stdout, new RegExp(`^ +echo ${v.replace('.', '\\.')} > ${svc}/env/${n} +# .+$`, 'm'));
    }
    assert.equal(readFileSync(join(svc, 'exceptions'), 'utf8'), readFileSync(join(ROOT, 'whitelist', 'exceptions'), 'utf8'));
    assert.equal(readFileSync(join(svc, 'whitelist'), 'utf8'), readFileSync(join(ROOT, 'whitelist', 'whitelist'), 'utf8'));

    const run = readFileSync(join(svc, 'run'), 'utf8');
    const template = readFileSync(join(ROOT, 'supervise', 'qgreyd', 'run'), 'utf8');
    const expected = template
      .replace(/^node=.*$/m, `node=${process.execPath}`)
      .replace(/^qgreyd=.*$/m, `qgreyd=${realpathSync(QGREYD)}`);
    assert.equal(run, expected, 'the template with the absolute paths of this installation');
    const logRun = readFileSync(join(svc, 'log', 'run'), 'utf8');
    assert.match(logRun, IS_ROOT ? /^exec setuidgid nobody multilog t \.\/main$/m : /^exec multilog t \.\/main$/m);
    for (const script of [join(svc, 'run'), join(svc, 'log', 'run')]) {
      assert.equal(spawnSync('/bin/sh', ['-n', script]).status, 0, `${script} is valid sh`);
    }

    const me = process.getuid!();
    const other = Number(spawnSync('id', ['-u', OTHER], { encoding: 'utf8' }).stdout.trim());
    const expect: Array<[string, number, number]> = [
      ['', 0o755, me],
      ['run', 0o755, me],
      ['env', 0o755, me],
      ['env/IP', 0o644, me],
      ['whitelist', 0o644, me],
      ['data', 0o700, other],
      ['log', 0o755, me],
      ['log/run', 0o755, me],
      ['log/main', 0o750, other],
    ];
    for (const [rel, mode, uid] of expect) {
      const st = statSync(join(svc, rel));
      assert.equal((st.mode & 0o7777).toString(8), mode.toString(8), `${rel} mode`);
      assert.equal(st.uid, uid, `${rel} owner`);
    }
  });
});

test('the sample whitelist: loopback active, private ranges only as comments', () => {
  const wl = Whitelist.load(join(ROOT, 'whitelist', 'whitelist'));
  assert.deepEqual(
    wl.entries.map((e) => e.text),
    ['127.0.0.0/8', '::1'],
  );
  for (const ip of ['127.0.0.1', '127.255.255.254', '::1']) assert.ok(wl.match(ip), ip);
  for (const ip of ['10.0.0.1', '172.16.0.1', '192.168.1.1', 'fd00::1', '198.51.100.1', '::2']) assert.equal(wl.match(ip), undefined, ip);
  // every commented-out entry parses once uncommented
  const text = readFileSync(join(ROOT, 'whitelist', 'whitelist'), 'latin1');
  const uncommented = text.replace(/^#(?=[0-9a-f]+[.:/][0-9a-f.:/]*\s*(#|$))/gim, '');
  const all = Whitelist.parse(uncommented, 'uncommented');
  for (const range of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']) {
    assert.ok(all.entries.some((e) => e.text === range), `${range} is offered, commented out`);
  }
});

const REQUIRED = process.env.QGREYD_REQUIRE_DAEMONTOOLS === '1';
const noTcprules = which('tcprules') !== null && which('tcprulescheck') !== null ? false : 'needs tcprules (apt-get install ucspi-tcp)';

/** The GREYIP lines printed for the netqmail patch and for IndiMail, in that order (null when
 *  that family cannot reach the daemon), each compiled by tcprules into a rules database and
 *  read back with tcprulescheck, as qmail-smtpd's tcpserver would see it. */
function printedGreyip(dir: string, stdout: string): { netqmail: string | null; indimail: string | null } {
  const section = (title: RegExp) => {
    const at = stdout.search(title);
    assert.ok(at >= 0, `${title} in ${stdout}`);
    const next = stdout.slice(at).split('\n')[1];
    const m = /^ +(:allow,GREYIP="[^"]*")$/.exec(next);
    if (m === null) return null;
    const rules = join(dir, `rules-${Math.random().toString(36).slice(2)}`);
    writeFileSync(rules, `127.:allow,RELAYCLIENT=""\n${m[1]}\n`);
    const built = spawnSync('tcprules', [`${rules}.cdb`, `${rules}.tmp`], { input: readFileSync(rules), encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    const check = spawnSync('tcprulescheck', [`${rules}.cdb`], { encoding: 'utf8', env: { ...process.env, TCPREMOTEIP: '192.0.2.1' } });
    const v = /set environment variable GREYIP=(\S+)/.exec(check.stdout);
    assert.ok(v, check.stdout);
    return v[1];
  };
  return { netqmail: section(/with the netqmail greylisting patch/), indimail: section(/with IndiMail's qmail-smtpd/) };
}

test('the GREYIP lines for both client families, for every kind of listen address, compile with tcprules', { skip: noTcprules && !REQUIRED ? noTcprules : false }, () => {
  assert.equal(noTcprules, false, noTcprules || '');
  withDir((dir) => {
    const cases: Array<[listen: string, netqmail: string | null, indimail: string | null, ip: string, port: string, remote: RegExp | null]> = [
      ['', '127.0.0.1:1999', '127.0.0.1@1999', '127.0.0.1', '1999', null],
      ['0.0.0.0:2000', '127.0.0.1:2000', '127.0.0.1@2000', '0.0.0.0', '2000', /any address of this host/],
      // dual-stack: the IPv4 loopback serves both, IndiMail turns ::1 into 127.0.0.1 anyway
      ['[::]:2001', '127.0.0.1:2001', '127.0.0.1@2001', '::', '2001', /any address of this host/],
      ['127.0.0.1,192.0.2.25:2002', '127.0.0.1:2002', '127.0.0.1@2002', '127.0.0.1 192.0.2.25', '2002',
        /Other mail servers reach it at 192\.0\.2\.25: GREYIP="192\.0\.2\.25:2002" \(netqmail patch\), GREYIP="192\.0\.2\.25@2002" \(IndiMail\)/],
      // the netqmail patch has no IPv6; IndiMail takes a global IPv6 address
      ['2001:db8::5,::1', null, '2001:db8::5@1999', '2001:db8::5 ::1', '1999', null],
      // IndiMail would send to 127.0.0.1 instead of ::1: nothing works
      ['[::1]:2003', null, null, '::1', '2003', null],
    ];
    for (const [i, [listen, netqmail, indimail, ip, port, remote]] of cases.entries()) {
      const svc = join(dir, `s${i}`);
      const r = conf(OTHER, OTHER, svc, listen);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(printedGreyip(dir, r.stdout), { netqmail, indimail }, `${listen}: ${r.stdout}`);
      if (netqmail === null) assert.match(r.stdout, /\(none: the patch speaks IPv4 only/);
      if (indimail === null) assert.match(r.stdout, /\(none: IndiMail turns ::1 into 127\.0\.0\.1/);
      if (remote) assert.match(r.stdout, remote);
      else assert.doesNotMatch(r.stdout, /Other mail servers/);
      assert.equal(readFileSync(join(svc, 'env', 'IP'), 'utf8'), `${ip}\n`);
      assert.equal(readFileSync(join(svc, 'env', 'PORT'), 'utf8'), `${port}\n`);
    }
    const two = conf(OTHER, OTHER, join(dir, 'two'), '127.0.0.1:1,192.0.2.25:2');
    assert.equal(two.status, 100);
    assert.match(two.stderr, /gives different ports; the service has one \(env\/PORT\)/);
  });
});

test('the run script gives qgreyd every address in env/IP, each with env/PORT', { skip: which('envdir') !== null || REQUIRED ? false : 'needs envdir (apt-get install daemontools)' }, () => {
  withDir((dir) => {
    const svc = join(dir, 'svc');
    assert.equal(conf(OTHER, OTHER, svc).status, 0);
    // the script as written, with node replaced by something that shows its arguments
    const run = readFileSync(join(svc, 'run'), 'utf8').replace(/^node=.*$/m, 'node=/bin/echo');
    writeFileSync(join(svc, 'run'), run);
    writeFileSync(join(svc, 'env', 'USER'), '');
    const argsFor = (ip: string, port: string) => {
      writeFileSync(join(svc, 'env', 'IP'), ip);
      writeFileSync(join(svc, 'env', 'PORT'), port);
      const r = spawnSync('/bin/sh', ['./run'], { cwd: svc, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr + r.stdout);
      return r.stdout.trim().split(' ').slice(1, -1).filter((a) => !a.startsWith('-') && !/^\.\/whitelist$|^\d+$/.test(a));
    };
    assert.deepEqual(argsFor('127.0.0.1\n', '1999\n'), ['127.0.0.1:1999']);
    assert.deepEqual(argsFor('127.0.0.1 192.0.2.25\n', '2525\n'), ['127.0.0.1:2525,192.0.2.25:2525']);
    assert.deepEqual(argsFor('127.0.0.1,::1 2001:db8::5\n', '1999\n'), ['127.0.0.1:1999,[::1]:1999,[2001:db8::5]:1999']);
    assert.deepEqual(argsFor('::\n', ''), ['[::]:']);
    assert.deepEqual(argsFor('', ''), [':']);
  });
});

test('the run script gives qgreyd the policy options from env/, and every WHITELIST entry as a -w', { skip: which('envdir') !== null || REQUIRED ? false : 'needs envdir (apt-get install daemontools)' }, () => {
  withDir((dir) => {
    const svc = join(dir, 'svc');
    assert.equal(conf(OTHER, OTHER, svc).status, 0);
    const run = readFileSync(join(svc, 'run'), 'utf8').replace(/^node=.*$/m, 'node=/bin/echo');
    writeFileSync(join(svc, 'run'), run);
    writeFileSync(join(svc, 'env', 'USER'), '');
    const argv = () => {
      const r = spawnSync('/bin/sh', ['./run'], { cwd: svc, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr + r.stdout);
      return r.stdout.trim().split(' ').slice(1).join(' ');
    };
    assert.doesNotMatch(argv(), /prefix|normalise|exceptions|pending/, 'off as created');
    const set = (n: string, v: string) => writeFileSync(join(svc, 'env', n), v);
    set('IPV4_PREFIX', '24\n');
    set('IPV6_PREFIX', '64\n');
    set('NORMALISE_SENDERS', '1\n');
    set('EXCEPTIONS', './exceptions\n');
    set('MAX_PENDING', '5000\n');
    set('WHITELIST', './whitelist ./whitelist.d\n');
    assert.match(argv(), /^-w \.\/whitelist -w \.\/whitelist\.d .*--ipv4-prefix 24 --ipv6-prefix 64 --normalise-senders --exceptions \.\/exceptions --max-pending 5000 /);
    set('NORMALISE_SENDERS', 'no\n');
    assert.doesNotMatch(argv(), /normalise/);
  });
});
