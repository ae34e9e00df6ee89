// greydaemon's own files, unchanged: its whitelist (sloppy lines included) and its save file
// as the state path, run with greydaemon's command line and checked over UDP.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { unixNow } from '../../src/daemon/queue.js';
import { ctl, ctlInProcess } from '../ctl-helpers.js';
import { freePort, QGREYD, query, runDaemon, type Daemon, tracked } from '../helpers.js';

const { dir, daemon } = tracked();
function start(args: string[], cwd?: string): Promise<Daemon> {
  return daemon(args, { cwd });
}

const HOUR = 3600;
const DAY = 86400;

// lines as found in greydaemon whitelists; every one of them loaded in greydaemon
const GREYWHITE = `# greydaemon whitelist
127.
10.9.9.
192.168.1.0/24 mailhost
mx2 172.16.5.5   backup mx
198.51.100.77/24
203.0.113.9.
192.0.2.44
`;

describe("greydaemon's whitelist", () => {
  it('starts with every sloppy line, logs one warning per sloppy line, whitelists with greydaemon\'s meaning, also after SIGHUP', async () => {
    const d0 = dir();
    const wl = join(d0, 'greywhite');
    writeFileSync(wl, GREYWHITE);
    const d = await start(['-m', '2', '-w', wl, '127.0.0.1:0', join(d0, 'state')]);
    assert.match(d.lines.find((l) => l.startsWith('start '))!, / whitelist-entries=7 /);
    const warnings = d.lines.filter((l) => l.startsWith('warning whitelist='));
    assert.deepEqual(warnings, [
      `warning whitelist=${wl}:2 text="127." read-as=127.0.0.0/8 why="the trailing dot is ignored"`,
      `warning whitelist=${wl}:3 text="10.9.9." read-as=10.9.9.0/24 why="the trailing dot is ignored"`,
      `warning whitelist=${wl}:4 text="192.168.1.0/24 mailhost" read-as=192.168.1.0/24 why="the rest of the line (\\x22mailhost\\x22) is ignored"`,
      `warning whitelist=${wl}:5 text="mx2 172.16.5.5   backup mx" read-as=172.16.5.5/32 why="the text before the address (\\x22mx2\\x22) is ignored; the rest of the line (\\x22backup mx\\x22) is ignored"`,
      `warning whitelist=${wl}:6 text="198.51.100.77/24" read-as=198.51.100.0/24 why="host bits are set; read as the whole /24 network"`,
      `warning whitelist=${wl}:7 text="203.0.113.9." read-as=203.0.113.9/32 why="the trailing dot is ignored"`,
    ]);
    const verdicts: Array<[string, string]> = [
      ['127.1.2.3', '0101'],
      ['10.9.9.200', '0101'],
      ['10.9.10.1', '0001'],
      ['192.168.1.99', '0101'],
      ['192.168.2.1', '0001'],
      ['172.16.5.5', '0101'],
      ['172.16.5.6', '0001'],
      ['198.51.100.1', '0101'],
      ['203.0.113.9', '0101'],
      ['203.0.113.10', '0001'],
      ['::ffff:10.9.9.5', '0101'],
      // greydaemon would have matched these against its IPv4 ranges by accident
      ['10:9:9::5', '0001'],
      ['127::1', '0001'],
    ];
    for (const [ip, reply] of verdicts) assert.equal(await query(d.port, ip, 'a@x.example', ['b@y.example']), reply, ip);

    writeFileSync(wl, '127.0.0.1\n192.0.2.\n');
    d.proc.kill('SIGHUP');
    await d.waitForLine(/^whitelist reloaded file=.* entries=2$/);
    assert.ok(d.lines.includes(`warning whitelist=${wl}:2 text="192.0.2." read-as=192.0.2.0/24 why="the trailing dot is ignored"`));
    assert.equal(await query(d.port, '192.0.2.99', 'a@x.example', ['b@y.example']), '0101');
    assert.equal(await query(d.port, '10.9.9.201', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(await d.stop(), 0);
  });

  it('refuses at start-up only a line greydaemon dies on (no address in it), naming file and line', async () => {
    const d0 = dir();
    const wl = join(d0, 'greywhite');
    writeFileSync(wl, GREYWHITE + 'mail.example.org\n');
    const r = await runDaemon(['-w', wl, '127.0.0.1:0', join(d0, 'state')]);
    assert.equal(r.code, 100);
    assert.match(r.stderr, new RegExp(`^qgreyd: whitelist ${wl}:9: "mail.example.org" has no address in it`));
  });

  it('qgreyctl whitelist check reads it as the daemon does and names each sloppy line on stderr', async () => {
    const d0 = dir();
    const wl = join(d0, 'greywhite');
    writeFileSync(wl, GREYWHITE);
    const r = await ctlInProcess(['whitelist', 'check', wl, '10.9.9.7']);
    assert.deepEqual([r.code, r.stdout], [0, `10.9.9.7 matches ${wl}:3: 10.9.9.\n`]);
    const warnings = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(warnings.length, 6);
    assert.equal(warnings[1], `qgreyctl: warning: ${wl}:3: "10.9.9." read as 10.9.9.0/24 (the trailing dot is ignored)`);
    const miss = await ctlInProcess(['whitelist', 'check', wl, '10.9.10.7']);
    assert.equal(miss.code, 1);
  });
});

/** A save file as greydaemon writes it (hash order, one record a line), times relative to now. */
function greydaemonSaveFile(now: number): string {
  const lines = [
    `G ${now - 600} 192.0.2.20 alice@example.com bob@example.org`, // retried 10 min later: passes
    `I ${now - 20 * DAY} 192.0.2.10`, // known good under -t 30 (dead under the default 7)
    `G ${now - 30} 192.0.2.21 carol@example.com dave@example.org`, // too soon under -m 2
    `I ${now - 40 * DAY} 192.0.2.11`, // dead under -t 30
    `G ${now - 20 * HOUR} 192.0.2.23 gina@example.com hank@example.org`, // live under -g 24 (dead under 12)
    `G ${now - 30 * HOUR} 192.0.2.22 erin@example.com frank@example.org`, // dead under -g 24
    `G ${now - 900} 192.0.2.24 . postmaster@example.org`, // a bounce
  ];
  for (let i = 0; i < 300; i++) {
    lines.splice((i * 7) % lines.length, 0, i % 3 === 0 ? `I ${now - (i % 29) * DAY} 198.18.${i >> 8}.${i & 255}` : `G ${now - i * 60} 198.18.${i >> 8}.${i & 255} s${i}@example.net r${i}@example.org`);
  }
  return lines.join('\n') + '\n';
}

/** greydaemon's service directory: run script arguments are relative to it. */
function serviceDir(saveText: string): { svc: string; savefile: string; store: string } {
  const svc = dir();
  mkdirSync(join(svc, 'save'));
  writeFileSync(join(svc, 'greywhite'), GREYWHITE);
  writeFileSync(join(svc, 'save', 'savefile'), saveText);
  return { svc, savefile: join(svc, 'save', 'savefile'), store: join(svc, 'save', 'savefile.qgreyd') };
}

describe("greydaemon's save file as the state path", () => {
  it("runs greydaemon's command line: imports once (times kept, dead records dropped), leaves the save file alone, does not re-import", async () => {
    const now = unixNow();
    const text = greydaemonSaveFile(now);
    const { svc, savefile, store } = serviceDir(text);
    const before = statSync(savefile);
    // greydaemon's documented run line, with the port free for the test (-u is tested below)
    const args = (port: number) => ['-m', '2', '-g', '24', '-t', '30', '-w', 'greywhite', `127.0.0.1:${port}`, 'save/savefile'];
    let d = await start(args(0), svc);
    const imp = d.lines.find((l) => l.startsWith('import '));
    assert.match(imp ?? '', new RegExp(`^import savefile=${savefile} state=${store} lines=307 records=307 imported=305 dead=2 kept=0 skipped=0 ms=\\d+$`));
    assert.match(d.lines.find((l) => l.startsWith('start '))!, new RegExp(` state=${store} `));

    const v = (ip: string, from: string, to: string) => query(d.port, ip, from, [to]);
    assert.equal(await v('192.0.2.20', 'Alice@Example.COM', 'bob@example.org'), '0103', 'first seen 10 min ago: passes');
    assert.equal(await v('192.0.2.10', 'new@example.com', 'new@example.org'), '0102', 'known good 20 days ago, -t 30');
    assert.equal(await v('192.0.2.21', 'carol@example.com', 'dave@example.org'), '0002', 'first seen 30 s ago, -m 2');
    assert.equal(await v('192.0.2.11', 'new@example.com', 'new@example.org'), '0001', 'known good 40 days ago: dead');
    assert.equal(await v('192.0.2.23', 'gina@example.com', 'hank@example.org'), '0103', 'first seen 20 h ago, -g 24');
    assert.equal(await v('192.0.2.22', 'erin@example.com', 'frank@example.org'), '0001', 'first seen 30 h ago: dropped, so new (0003 had it been kept)');
    assert.equal(await v('192.0.2.24', '', 'postmaster@example.org'), '0103', 'the bounce triplet');
    assert.equal(await v('198.18.1.44', 's300@example.net', 'r300@example.org'), '0001');
    assert.equal(await v('198.18.0.4', 's4@example.net', 'r4@example.org'), '0103', 'a filler triplet, first seen 4 min ago');
    assert.equal(await v('10.9.9.9', 'a@b', 'c@d'), '0101', 'the whitelist');
    assert.equal(await d.stop(), 0);

    assert.equal(readFileSync(savefile, 'latin1'), text, 'the save file is byte-identical');
    const afterRun = statSync(savefile);
    assert.equal(afterRun.mtimeMs, before.mtimeMs);
    assert.equal(afterRun.ino, before.ino);
    assert.deepEqual(readdirSync(join(svc, 'save')).sort(), ['savefile', 'savefile.qgreyd']);

    // a record added to the save file now would be imported by a second import
    appendFileSync(savefile, `I ${now} 192.0.2.30\n`);
    d = await start(args(0), svc);
    assert.ok(d.lines.includes(`savefile=${savefile} state=${store} imported earlier; the save file is not read again`));
    assert.ok(!d.lines.some((l) => l.startsWith('import ')));
    assert.equal(await query(d.port, '192.0.2.30', 'a@x.example', ['b@y.example']), '0001', 'not re-imported');
    assert.equal(await query(d.port, '192.0.2.20', 'other@x.example', ['other@y.example']), '0102', 'the first run\'s decisions kept');
    assert.equal(await query(d.port, '192.0.2.21', 'carol@example.com', ['dave@example.org']), '0002', 'imported time kept, not restarted');
    // qgreyctl takes the path qgreyd was given
    const dumped = await ctl(['--state', 'save/savefile', 'dump', '--ip', '192.0.2.21'], { cwd: svc });
    assert.equal(dumped.code, 0, dumped.stderr);
    assert.match(dumped.stdout, /^triplet 192\.0\.2\.21 <carol@example\.com> <dave@example\.org> first-seen=/);
    // answered by the daemon, through the admin socket in the imported store
    await d.waitForLine(/^admin op=dump /);
    assert.equal(await d.stop(), 0);
  });

  it('skips a line greydaemon would skip ("? Strange save entry"), naming file and line, and imports the rest', async () => {
    const now = unixNow();
    const { svc, savefile } = serviceDir(`I ${now - 60} 192.0.2.40\nthis is not a record\nG ${now - 600} 192.0.2.41 a@x.example b@y.example\nG 12x 192.0.2.42 a b\n`);
    const d = await start(['127.0.0.1:0', 'save/savefile'], svc);
    assert.ok(d.lines.includes(`warning savefile=${savefile}:2 skipped, not a record: "starts with \\x22this\\x22, not I or G"`), d.lines.join('\n'));
    assert.ok(d.lines.some((l) => l.startsWith(`warning savefile=${savefile}:4 skipped, not a record: "time \\x2212x\\x22 is not Unix seconds"`)));
    assert.match(d.lines.find((l) => l.startsWith('import '))!, / lines=4 records=2 imported=2 dead=0 kept=0 skipped=2 /);
    assert.equal(await query(d.port, '192.0.2.40', 'a@x.example', ['b@y.example']), '0102');
    assert.equal(await query(d.port, '192.0.2.41', 'a@x.example', ['b@y.example']), '0103');
    assert.equal(await d.stop(), 0);
  });

  it('takes an empty save file (a new greydaemon installation) as no state; qgreyctl does not create its store first', async () => {
    const { svc, store } = serviceDir('');
    const early = await ctl(['--state', 'save/savefile', 'allow', '192.0.2.51'], { cwd: svc });
    assert.equal(early.code, 100);
    assert.match(early.stderr, /--state save\/savefile: a greydaemon save file that qgreyd has not imported yet; start qgreyd with it/);
    assert.equal(existsSync(store), false);
    const d = await start(['127.0.0.1:0', 'save/savefile'], svc);
    assert.match(d.lines.find((l) => l.startsWith('import '))!, / lines=0 records=0 imported=0 /);
    assert.ok(statSync(store).isDirectory());
    assert.equal(await query(d.port, '192.0.2.50', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(await d.stop(), 0);
  });

  it('never leaves half an import: killed mid-import, nothing is in place, and the next start imports it all', async () => {
    const now = unixNow();
    let text = '';
    const N = 200_000;
    for (let i = 0; i < N; i++) text += `I ${now - 60} 10.${i >> 16}.${(i >> 8) & 255}.${i & 255}\n`;
    const { svc, store } = serviceDir(text);
    const saveDir = join(svc, 'save');
    // whichever appears first: the import's working directory, or (were the import not
    // atomic) the store directory itself
    const importing = new Promise<void>((resolve) => {
      const w = watch(saveDir, (_event, name) => {
        if (name === 'savefile.qgreyd.importing' || name === 'savefile.qgreyd') {
          w.close();
          resolve();
        }
      });
    });
    const proc = spawn(process.execPath, [QGREYD, '127.0.0.1:0', 'save/savefile'], { cwd: svc, stdio: 'ignore' });
    const exited = new Promise((r) => proc.on('exit', r));
    await importing;
    proc.kill('SIGKILL');
    await exited;
    assert.equal(existsSync(store), false, 'the store directory appears only complete');
    assert.ok(existsSync(store + '.importing'), 'the unfinished import was where it is built');

    const d = await start(['127.0.0.1:0', 'save/savefile'], svc);
    assert.match(d.lines.find((l) => l.startsWith('import '))!, new RegExp(` records=${N} imported=${N} `));
    assert.equal(existsSync(store + '.importing'), false);
    assert.equal(await query(d.port, `10.${(N - 1) >> 16}.${((N - 1) >> 8) & 255}.${(N - 1) & 255}`, 'a@x.example', ['b@y.example']), '0102');
    assert.equal(await d.stop(), 0);
  });

  const ROOT = process.getuid?.() === 0;
  it('with -u, the store directory made from the save file belongs to the user', { skip: ROOT ? false : 'needs root (to create a user)' }, async () => {
    const name = `qgreyd-f${process.pid % 10000}${Math.floor(Math.random() * 1000)}`;
    execFileSync('useradd', ['-r', '-M', '-U', '-s', '/bin/false', name]);
    try {
      const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
      const now = unixNow();
      const { svc, store, savefile } = serviceDir(`G ${now - 600} 192.0.2.60 a@x.example b@y.example\n`);
      const saveBefore = statSync(savefile);
      // greydaemon's user writes its save file there, so it can reach that directory
      chmodSync(svc, 0o755);
      const d = await start(['-u', name, '-m', '2', '127.0.0.1:0', 'save/savefile'], svc);
      assert.match(d.lines.find((l) => l.startsWith('start '))!, new RegExp(` user=${name} `));
      assert.equal(statSync(store).uid, uid);
      for (const f of readdirSync(store)) assert.equal(statSync(join(store, f)).uid, uid, f);
      assert.equal(await query(d.port, '192.0.2.60', 'a@x.example', ['b@y.example']), '0103');
      assert.equal(await query(d.port, '192.0.2.61', 'a@x.example', ['b@y.example']), '0001', 'the user can write the store');
      assert.equal(await d.stop(), 0);
      assert.equal(statSync(savefile).uid, saveBefore.uid, 'the save file keeps its owner');
    } finally {
      try {
        execFileSync('userdel', [name], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  });
});

// greydaemon's service directory under daemontools' supervise, with only the program's path
// changed in its run script
const SUPERVISE = ['supervise', 'svc', 'svstat'].every((p) => spawnSync('sh', ['-c', `command -v ${p}`]).status === 0);
const SUPERVISE_SKIP = SUPERVISE || process.env.QGREYD_REQUIRE_DAEMONTOOLS === '1' ? false : 'daemontools is not installed (apt-get install daemontools)';

describe("greydaemon's run script under supervise", () => {
  it('works with only the program path changed', { skip: SUPERVISE_SKIP }, async () => {
    const asRoot = process.getuid?.() === 0;
    const user = asRoot ? `qgreyd-s${process.pid % 10000}${Math.floor(Math.random() * 1000)}` : null;
    if (user !== null) execFileSync('useradd', ['-r', '-M', '-U', '-s', '/bin/false', user]);
    let sup: ReturnType<typeof spawn> | null = null;
    let svcDir = '';
    try {
      const now = unixNow();
      const text = greydaemonSaveFile(now);
      const { svc, savefile, store } = serviceDir(text);
      svcDir = svc;
      chmodSync(svc, 0o755);
      if (user !== null) execFileSync('chown', [user, join(svc, 'save')]);
      const port = await freePort('udp');
      // greydaemon's documented line; the port is the test's, as 1999 may be taken here
      const flags = `-m 2 -g 24 -t 30${user === null ? '' : ` -u ${user}`} -w greywhite 127.0.0.1:${port} save/savefile`;
      writeFileSync(join(svc, 'run'), `#!/bin/sh\nexec ${process.execPath} ${QGREYD} ${flags} 2>&1\n`, { mode: 0o755 });
      const s = spawn('supervise', [svc], { stdio: ['ignore', 'pipe', 'pipe'] });
      sup = s;
      let out = '';
      const started = new Promise<void>((resolve, reject) => {
        s.stdout!.on('data', (c: Buffer) => {
          out += c.toString('latin1');
          if (/^start /m.test(out)) resolve();
        });
        s.on('exit', () => reject(new Error(`supervise exited: ${out}`)));
      });
      await started;
      assert.match(out, new RegExp(`^import savefile=${savefile} state=${store} lines=307 records=307 imported=305 dead=2 `, 'm'));
      assert.match(out, /^warning whitelist=greywhite:3 text="10\.9\.9\." read-as=10\.9\.9\.0\/24 /m);
      assert.match(spawnSync('svstat', [svc], { encoding: 'utf8' }).stdout, /: up \(pid \d+\)/);
      assert.equal(await query(port, '192.0.2.20', 'alice@example.com', ['bob@example.org']), '0103');
      assert.equal(await query(port, '192.0.2.22', 'erin@example.com', ['frank@example.org']), '0001');
      assert.equal(await query(port, '10.9.9.1', 'a@x.example', ['b@y.example']), '0101');
      if (user !== null) assert.equal(statSync(store).uid, Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim()));
      const exited = new Promise((r) => s.on('exit', r));
      spawnSync('svc', ['-dx', svc]);
      await exited;
      sup = null;
      assert.match(out, /^stopped /m);
      assert.equal(readFileSync(savefile, 'latin1'), text);
    } finally {
      if (sup !== null) {
        // stop the service first, so that no daemon outlives the test
        spawnSync('svc', ['-dx', svcDir]);
        sup.kill('SIGKILL');
      }
      if (user !== null) spawnSync('userdel', [user]);
    }
  });
});
