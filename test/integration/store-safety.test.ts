// A store is never destroyed by starting on it, one process holds a store at a time (even with
// LevelDB's LOCK deleted), and a corrupt block gives a clean message. Real daemons, real
// qgreyctl, real LevelDB.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { processStart } from '../../src/store/lock.js';
import { ctl } from '../ctl-helpers.js';
import { query, removeDir, runDaemon, startDaemon, tempDir } from '../helpers.js';

const IPS = 500;
const TRIPLETS = 3000;

/** A save file of IPS known-good IPs and TRIPLETS triplets, all recent; returns its lines. */
function saveFile(dir: string): { file: string; lines: string[] } {
  const now = Math.floor(Date.now() / 1000);
  const lines: string[] = [];
  for (let i = 0; i < IPS; i++) lines.push(`I ${now - 60 - i} 198.51.${Math.floor(i / 250)}.${i % 250}`);
  for (let i = 0; i < TRIPLETS; i++) lines.push(`G ${now - 120 - i} 192.0.2.${i % 250} sender${i}@x.example rcpt${i % 7}@y.example`);
  const file = join(dir, 'savefile');
  writeFileSync(file, lines.join('\n') + '\n');
  return { file, lines };
}

/** A stopped store holding the save file's records in table files (not only in the log). */
async function populated(dir: string): Promise<{ state: string; lines: string[] }> {
  const { file, lines } = saveFile(dir);
  const state = join(dir, 'state');
  const r = await ctl(['import', file, '--state', state]);
  assert.equal(r.code, 0, r.stderr);
  // opening again turns the import's log into a table file
  const d = await startDaemon(['127.0.0.1:0', state]);
  assert.equal(await d.stop(), 0);
  assert.ok(readdirSync(state).some((f) => f.endsWith('.ldb')), `a table file: ${readdirSync(state).join(' ')}`);
  return { state, lines };
}

/** Every file that holds data, with a hash of its bytes. */
function snapshot(state: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of readdirSync(state)) {
    if (!/^(MANIFEST-\d+|\d+\.(ldb|sst|log))$/.test(f)) continue;
    out.set(f, createHash('sha256').update(readFileSync(join(state, f))).digest('hex'));
  }
  return out;
}

function sorted(text: string): string[] {
  return text.split('\n').filter(Boolean).sort();
}

test('a store that lost CURRENT is refused by qgreyd and by every qgreyctl command, untouched, and --repair brings back every record', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  try {
    const { state, lines } = await populated(dir);
    unlinkSync(join(state, 'CURRENT'));
    const before = snapshot(state);
    assert.ok(before.size >= 2, 'table and manifest files to protect');
    const advice = `run: qgreyd --repair ${state}`;

    // twice, as supervise would restart it
    for (let i = 0; i < 2; i++) {
      const r = await runDaemon(['127.0.0.1:0', state]);
      assert.equal(r.code, 100, r.stderr);
      assert.equal(r.stderr, `qgreyd: state directory ${state}: the store is corrupt (its CURRENT file is missing); stop every process using it and ${advice}\n`);
    }
    const save = join(dir, 'one');
    writeFileSync(save, `I ${Math.floor(Date.now() / 1000)} 203.0.113.1\n`);
    for (const args of [['stats'], ['dump'], ['export'], ['import', save], ['allow', '203.0.113.2'], ['forget', '198.51.0.1'], ['forget', '192.0.2.0', 'sender0@x.example', 'rcpt0@y.example']]) {
      const r = await ctl([...args, '--state', state]);
      assert.equal(r.code, 100, `qgreyctl ${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.stderr.includes(advice) && r.stderr.split('\n').length === 2, `qgreyctl ${args.join(' ')}: one line with the advice: ${r.stderr}`);
      assert.equal(r.stdout, '', `qgreyctl ${args.join(' ')} printed nothing`);
    }
    assert.equal(existsSync(join(state, 'CURRENT')), false, 'no new database was created');
    assert.deepEqual(snapshot(state), before, 'no table, log or manifest file was changed or deleted');

    const rep = await runDaemon(['--repair', state]);
    assert.equal(rep.code, 0, rep.stderr);
    assert.equal(rep.stdout, `repair ok state=${state} ips=${IPS} triplets=${TRIPLETS}\n`);
    const exp = await ctl(['export', '--state', state]);
    assert.equal(exp.code, 0, exp.stderr);
    assert.deepEqual(sorted(exp.stdout), sorted(lines.join('\n')), 'every record, with its time');
  } finally {
    removeDir(dir);
  }
});

test('an empty existing directory is initialised; one holding other files is refused, unchanged', async () => {
  const dir = tempDir();
  try {
    const empty = join(dir, 'empty');
    mkdirSync(empty, { mode: 0o700 });
    const d = await startDaemon(['127.0.0.1:0', empty]);
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(await d.stop(), 0);
    assert.ok(existsSync(join(empty, 'CURRENT')));
    // a directory with someone's files but no store
    const r0 = await ctl(['stats', '--state', dir]);
    assert.equal(r0.code, 100, r0.stderr);
    assert.match(r0.stderr, /holds files but no store .*give qgreyd an empty or new directory of its own\n$/);
    writeFileSync(join(dir, 'other'), 'x');
    const r = await runDaemon(['127.0.0.1:0', dir]);
    assert.equal(r.code, 100, r.stderr);
    assert.match(r.stderr, new RegExp(`^qgreyd: state directory ${dir} holds files but no store`));
    assert.equal(existsSync(join(dir, 'CURRENT')), false);
  } finally {
    removeDir(dir);
  }
});

test('one process per store, even with LOCK deleted: a second qgreyd, an offline qgreyctl and --repair are refused naming the pid; a stale pid file does not block', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const state = join(dir, 'state');
  const a = await startDaemon(['127.0.0.1:0', state]);
  try {
    assert.equal(await query(a.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
    unlinkSync(join(state, 'LOCK'));
    const holder = `(qgreyd pid ${a.proc.pid})`;
    const r = await runDaemon(['127.0.0.1:0', state]);
    assert.equal(r.code, 111, r.stderr);
    assert.equal(r.stderr, `qgreyd: state directory ${state} is locked by another process ${holder}; stop that process or give another directory\n`);
    const rep = await runDaemon(['--repair', state]);
    assert.equal(rep.code, 111, rep.stderr);
    assert.ok(rep.stderr.includes(holder), rep.stderr);
    // without the admin socket, qgreyctl would open the store itself
    unlinkSync(join(state, 'admin.sock'));
    const save = join(dir, 'one');
    writeFileSync(save, `I ${Math.floor(Date.now() / 1000)} 203.0.113.1\n`);
    for (const args of [['import', save], ['allow', '203.0.113.2'], ['forget', '192.0.2.1'], ['stats'], ['export']]) {
      const c = await ctl([...args, '--state', state]);
      assert.equal(c.code, 111, `qgreyctl ${args.join(' ')}: ${c.stderr}`);
      assert.ok(c.stderr.includes(`is locked by another process ${holder} and no daemon answers`), `qgreyctl ${args.join(' ')}: ${c.stderr}`);
    }
    assert.equal(await query(a.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0002', 'the running daemon was not disturbed');
  } finally {
    await a.stop('SIGKILL');
  }
  try {
    // killed: its pid file is left, naming a process that is gone
    assert.ok(existsSync(join(state, 'qgreyd.pid')));
    let b = await startDaemon(['127.0.0.1:0', state]);
    assert.equal(await query(b.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0002', 'the store survived');
    await b.stop('SIGKILL');
    // a pid file naming a live process (this one) but another start time: the pid was reused
    writeFileSync(join(state, 'qgreyd.pid'), `${process.pid} 1 qgreyd\n`);
    b = await startDaemon(['127.0.0.1:0', state]);
    assert.equal(await b.stop(), 0);
    assert.equal(existsSync(join(state, 'qgreyd.pid')), false, 'removed at a clean stop');
    // the same live process with its real start time holds the store
    writeFileSync(join(state, 'qgreyd.pid'), `${process.pid} ${processStart(process.pid)} qgreyd\n`);
    const r = await runDaemon(['127.0.0.1:0', state]);
    assert.equal(r.code, 111, r.stderr);
    assert.match(r.stderr, new RegExp(`locked by another process \\(qgreyd pid ${process.pid}\\)`));
  } finally {
    removeDir(dir);
  }
});

test('a corrupt data block: qgreyctl export and stats exit 111 with one line and the repair advice, no stack trace', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  try {
    const { state } = await populated(dir);
    const table = readdirSync(state).find((f) => f.endsWith('.ldb'))!;
    const size = statSync(join(state, table)).size;
    const fd = openSync(join(state, table), 'r+');
    writeSync(fd, Buffer.alloc(64, 0x55), 0, 64, Math.floor(size / 4));
    closeSync(fd);
    for (const cmd of ['export', 'stats']) {
      const r = await ctl([cmd, '--state', state]);
      assert.equal(r.code, 111, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^qgreyctl: state directory ${state}: Corruption: [^\\n]*; stop qgreyd and run: qgreyd --repair ${state}\\n$`), cmd);
    }
  } finally {
    removeDir(dir);
  }
});

test('processes starting at once on a stale pid file: exactly one takes the store', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  try {
    const lockModule = new URL('../../src/store/lock.js', import.meta.url).href;
    // each waits for the same instant, takes the lock, says whether it got it, and holds it
    // until told to go; each pauses between finding the file stale and taking it over, so
    // that all of them find it stale before any takes it over
    const script = `
      const { StoreLock } = await import(${JSON.stringify(lockModule)});
      const at = Number(process.argv[1]);
      while (Date.now() < at);
      const beforeTakeover = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
      const r = StoreLock.acquire(process.argv[2], 'racer', { beforeTakeover });
      process.stdout.write(r.ok ? 'ok\\n' : 'refused\\n');
      process.stdin.resume();
      process.stdin.on('end', () => process.exit(0));`;
    const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
    for (let round = 0; round < 3; round++) {
      writeFileSync(join(dir, 'qgreyd.pid'), `${gone} 1 qgreyd\n`);
      const at = Date.now() + 700;
      const procs = Array.from({ length: 6 }, () => spawn(process.execPath, ['--input-type=module', '-e', script, String(at), dir], { stdio: ['pipe', 'pipe', 'inherit'] }));
      const answers = await Promise.all(
        procs.map(
          (p) =>
            new Promise<string>((res) => {
              let out = '';
              p.stdout!.on('data', (c: Buffer) => {
                out += c.toString();
                if (out.endsWith('\n')) res(out.trim());
              });
            }),
        ),
      );
      for (const p of procs) p.stdin!.end();
      await Promise.all(procs.map((p) => new Promise((res) => p.on('exit', res))));
      assert.equal(answers.filter((a) => a === 'ok').length, 1, `round ${round}: ${answers.join(' ')}`);
      assert.deepEqual(readdirSync(dir), ['qgreyd.pid'], 'no file was left aside');
    }
  } finally {
    removeDir(dir);
  }
});
