// qgreyctl's (and qgreyd's) rough edges: one meaning per option name, the daemon's recorded
// settings used while it is stopped (a dry run agrees with the real import), --state on a
// file, negative values in messages, report on a terminal, an import with no readable line,
// and the bounce sender spelled <> wherever a person reads it.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readSettings, writeSettings } from '../../src/cli/recorded-settings.js';
import { ctlInProcess, QGREYCTL } from '../ctl-helpers.js';
import { query, removeDir, runDaemon, startDaemon, tempDir } from '../helpers.js';

const NOW = () => Math.floor(Date.now() / 1000);

describe('one name per meaning: --timeout is days, --wait is seconds', () => {
  it('query and spf-whitelist take --wait SECONDS and refuse --timeout with the new name', async () => {
    for (const args of [
      ['query', '--timeout', '3', '192.0.2.1', 'a@b', 'c@d'],
      ['query', '--timeout=3', '192.0.2.1', 'a@b', 'c@d'],
      ['spf-whitelist', '--timeout', '3', 'example.org'],
    ]) {
      const r = await ctlInProcess(args);
      assert.equal(r.code, 100, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /--timeout is not an option here \(.*means the daemon's -t, in days\).*--wait SECONDS/, args.join(' '));
    }
    // --wait is the UDP wait of query: a port nobody answers on gives up after it
    const r = await ctlInProcess(['query', '--server', '127.0.0.1:9', '--wait', '0.2', '192.0.2.1', 'a@b', 'c@d']);
    assert.equal(r.code, 111, r.stderr);
    assert.match(r.stderr, /no answer from 127\.0\.0\.1:9 within 0\.2 s/);
  });

  it('dump, stats and import keep -t/--timeout DAYS', async () => {
    const dir = tempDir();
    try {
      const r = await ctlInProcess(['stats', '--timeout', '30', '--state', join(dir, 'state')]);
      // a missing state directory: the option itself was taken
      assert.equal(r.code, 100, r.stderr);
      assert.doesNotMatch(r.stderr, /unknown option|not an option/);
      const file = join(dir, 'save');
      writeFileSync(file, `I ${NOW() - 10 * 86400} 192.0.2.1\n`);
      const d = await ctlInProcess(['import', '--dry-run', '--timeout', '30', file, '--state', join(dir, 'state')]);
      assert.equal(d.code, 0, d.stderr);
      assert.match(d.stdout, /dead by timeout 30d, grey-window 12h, min-resend 5m: 0 known-good IPs/);
    } finally {
      removeDir(dir);
    }
  });
});

describe("offline commands use the settings qgreyd recorded", () => {
  it('writes the file through a fresh 0600 file and a rename: a planted link is replaced, never written through', () => {
    const dir = tempDir();
    try {
      const target = join(dir, 'target');
      writeFileSync(target, 'untouched\n');
      const state = join(dir, 'state');
      mkdirSync(state, { mode: 0o700 });
      symlinkSync(target, join(state, 'qgreyd.settings'));
      symlinkSync(target, join(state, 'qgreyd.settings.tmp'));
      writeSettings(state, { timeoutDays: 30, greyHours: 48, minResendMinutes: 0.5 }, 'test');
      assert.equal(readFileSync(target, 'utf8'), 'untouched\n');
      const st = lstatSync(join(state, 'qgreyd.settings'));
      assert.ok(st.isFile());
      assert.equal(st.mode & 0o777, 0o600);
      assert.deepEqual(readSettings(state), { timeoutDays: 30, greyHours: 48, minResendMinutes: 0.5 });
      writeFileSync(join(state, 'qgreyd.settings'), 'timeout-days 30\n');
      assert.match(String(readSettings(state)), /not the settings qgreyd writes/);
      assert.equal(readSettings(join(dir, 'none')), null);
    } finally {
      removeDir(dir);
    }
  });

  it('qgreyd records -t/-g/-m in the state directory (0600); stats, dump and a dry run use them, and the dry run agrees with the real import', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    try {
      const now = NOW();
      const file = join(dir, 'save');
      // dead by qgreyd's defaults (-t 7, -g 12), alive by -t 30 -g 48
      writeFileSync(file, `I ${now - 10 * 86400} 192.0.2.1\nG ${now - 20 * 3600} 192.0.2.2 a@x.example b@y.example\n`);

      const d = await startDaemon(['-t', '30', '-g', '48', '127.0.0.1:0', state]);
      let dry: string;
      try {
        const settingsFile = join(state, 'qgreyd.settings');
        const st = lstatSync(settingsFile);
        assert.ok(st.isFile());
        assert.equal(st.mode & 0o777, 0o600);
        assert.equal(existsSync(join(state, 'qgreyd.settings.tmp')), false);
        assert.match(readFileSync(settingsFile, 'utf8'), /^timeout-days 30\ngrey-window-hours 48\nmin-resend-minutes 5\n$/m);

        const r1 = await ctlInProcess(['import', '--dry-run', file, '--state', state]);
        assert.equal(r1.code, 0, r1.stderr);
        dry = r1.stdout;
        assert.match(dry, /dead by timeout 30d, grey-window 48h, min-resend 5m \(the running daemon's\): 0 known-good IPs, 0 triplets/);
        const real = await ctlInProcess(['import', file, '--state', state]);
        assert.equal(real.code, 0, real.stderr);
        assert.match(real.stdout, /2 records; 2 written, 0 skipped as dead/);
      } finally {
        await d.stop();
      }

      // stopped: the recorded settings, not the defaults
      const off = await ctlInProcess(['import', '--dry-run', file, '--state', state]);
      assert.equal(off.code, 0, off.stderr);
      assert.match(off.stdout, /dead by timeout 30d, grey-window 48h, min-resend 5m: 0 known-good IPs, 0 triplets/);
      const stats = await ctlInProcess(['stats', '--state', state]);
      assert.equal(stats.code, 0, stats.stderr);
      assert.match(stats.stdout, /^settings +timeout 30d, grey-window 48h, min-resend 5m \(recorded by qgreyd at its last start, .*qgreyd\.settings\)$/m);
      assert.match(stats.stdout, /^known-good IPs +1 \(dead, not yet swept: 0\)/m);
      const dump = await ctlInProcess(['dump', '--state', state]);
      assert.equal(dump.code, 0, dump.stderr);
      assert.doesNotMatch(dump.stdout, / dead$/m);
      // flags still win
      const flags = await ctlInProcess(['stats', '-t', '7', '--state', state]);
      assert.match(flags.stdout, /^settings +timeout 7d, grey-window 48h, min-resend 5m \(from -t\/-g\/-m\)$/m);
      assert.match(flags.stdout, /^known-good IPs +1 \(dead, not yet swept: 1\)/m);

      // a state directory qgreyd never ran on: the defaults, and they say so
      const fresh = await ctlInProcess(['import', '--dry-run', file, '--state', join(dir, 'fresh')]);
      assert.match(fresh.stdout, /dead by timeout 7d, grey-window 12h, min-resend 5m: 1 known-good IPs, 1 triplets/);
    } finally {
      removeDir(dir);
    }
  });
});

describe('--state that is not a directory', () => {
  it('is named, exit 100 (not a temporary cannot-connect)', async () => {
    const dir = tempDir();
    try {
      const file = join(dir, 'file');
      writeFileSync(file, 'not a store\n');
      for (const [state, re] of [
        ['/dev/null', /^qgreyctl: --state \/dev\/null: \/dev\/null is a character device, not a directory; give the daemon's state directory/],
        [join(file, 'sub'), /^qgreyctl: --state .*\/file\/sub: a part of that path is a file, not a directory/],
      ] as const) {
        for (const cmd of [['stats'], ['dump'], ['allow', '192.0.2.1'], ['export']]) {
          const r = await ctlInProcess([...cmd, '--state', state]);
          assert.equal(r.code, 100, `${cmd[0]} ${state}: ${r.stderr}`);
          assert.match(r.stderr, re);
        }
      }
    } finally {
      removeDir(dir);
    }
  });
});

describe('negative values are named in the message', () => {
  it('qgreyd: every numeric flag', async () => {
    for (const [flag, value] of [
      ['-m', '-5'],
      ['--min-resend', '-5'],
      ['-s', '-1'],
      ['-t', '-2'],
      ['-g', '-3'],
      ['--cache-size', '-1'],
      ['--metrics', '-9'],
      ['--ipv4-prefix', '-24'],
      ['--ipv6-prefix', '-64'],
      ['--max-pending', '-1'],
      ['-m', '-.5'],
    ]) {
      const r = await runDaemon([flag, value, '127.0.0.1:0', '/nonexistent/x']);
      assert.equal(r.code, 100, `${flag} ${value}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`"${value}"`), `${flag} ${value}: ${r.stderr}`);
    }
  });

  it('qgreyctl: every numeric option', async () => {
    for (const args of [
      ['stats', '-t', '-2'],
      ['dump', '-g', '-1'],
      ['import', '--dry-run', '-m', '-5', 'x'],
      ['stats', '--wait', '-3'],
      ['query', '--wait', '-1', '192.0.2.1', 'a@b', 'c@d'],
      ['report', '--retry', '-5'],
      ['report', '--top', '-1'],
      ['spf-whitelist', '--wait', '-1', 'example.org'],
      ['spf-whitelist', '--max-lookups', '-2', 'example.org'],
    ]) {
      const r = await ctlInProcess(args);
      assert.equal(r.code, 100, `${args.join(' ')}: ${r.stderr}`);
      const value = args.find((x) => /^-\d/.test(x))!;
      assert.ok(r.stderr.includes(`"${value}"`), `${args.join(' ')}: ${r.stderr}`);
    }
  });
});

describe('report on a terminal', () => {
  const haveScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;
  it('with no file and a terminal on standard input: usage, exit 100, at once', { skip: haveScript ? false : 'script (util-linux) is not installed' }, async () => {
    // script gives qgreyctl a real pty as its terminal
    const cmd = `${process.execPath} ${QGREYCTL} report`;
    const r = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const p = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      const t = setTimeout(() => {
        p.kill('SIGKILL');
        reject(new Error(`qgreyctl report waited on the terminal: ${out}`));
      }, 10_000);
      p.on('exit', (code) => {
        clearTimeout(t);
        resolve({ code, out });
      });
    });
    assert.equal(r.code, 100, r.out);
    assert.match(r.out, /qgreyctl: report: give the log files .*or pipe the log in/);
  });

  it('standard input that is not a terminal is still read', async () => {
    const r = await ctlInProcess(['report'], { input: '' });
    assert.equal(r.code, 0, r.stderr);
  });
});

describe('import of a file with no readable line', () => {
  it('exits 100 with --skip-bad, --dry-run, or neither, and writes nothing', async () => {
    const dir = tempDir();
    try {
      const file = join(dir, 'junk');
      writeFileSync(file, 'hello\nthis is not a save file\n');
      for (const extra of [['--skip-bad'], ['--dry-run'], ['--skip-bad', '--dry-run'], []]) {
        const r = await ctlInProcess(['import', ...extra, file, '--state', join(dir, 'state')]);
        assert.equal(r.code, 100, `${extra.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /no readable record|unreadable line/);
      }
      assert.equal(existsSync(join(dir, 'state')), false, 'no store was created');
      const one = join(dir, 'one');
      writeFileSync(one, `junk\nI ${NOW()} 192.0.2.1\n`);
      const ok = await ctlInProcess(['import', '--skip-bad', one, '--state', join(dir, 'state')]);
      assert.equal(ok.code, 0, ok.stderr);
    } finally {
      removeDir(dir);
    }
  });
});

describe('the bounce sender', () => {
  it('is <> in the log, dump, forget and the admin log line, "" in dump --json, and . only in the save file', async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    const d = await startDaemon(['127.0.0.1:0', state]);
    try {
      assert.equal(await query(d.port, '192.0.2.7', '', ['list@example.org']), '0001');
      await d.waitForLine(/ from=<> to=<list@example\.org> reply=00:01/);
      const dump = await ctlInProcess(['dump', '--state', state]);
      assert.equal(dump.code, 0, dump.stderr);
      assert.match(dump.stdout, /^triplet 192\.0\.2\.7 <> <list@example\.org> first-seen=/m);
      assert.doesNotMatch(dump.stdout, /<\.>/);
      const json = await ctlInProcess(['dump', '--json', '--state', state]);
      assert.equal((JSON.parse(json.stdout.trim()) as { sender: string }).sender, '');
      const filtered = await ctlInProcess(['dump', '--sender', '<>', '--state', state]);
      assert.match(filtered.stdout, /<> <list@example\.org>/);
      const exp = await ctlInProcess(['export', '--state', state]);
      assert.match(exp.stdout, /^G \d+ 192\.0\.2\.7 \. list@example\.org$/m);
      const f = await ctlInProcess(['forget', '192.0.2.7', '<>', 'list@example.org', '--state', state]);
      assert.equal(f.code, 0, f.stderr);
      assert.match(f.stdout, /^forgot triplet 192\.0\.2\.7 <> <list@example\.org>/);
      await d.waitForLine(/^admin op=forget ip=192\.0\.2\.7 sender=<> rcpt=<list@example\.org> deleted=1$/);
    } finally {
      await d.stop();
      removeDir(dir);
    }
  });
});
