// A state directory nobody else controls: qgreyd refuses one that another local user owns or
// can write (or a parent of it, or a symbolic link on the way), never writes through a
// symbolic link planted in the store, and makes its files 0600. As root, with throwaway users.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lchownSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ctl } from '../ctl-helpers.js';
import { query, removeDir, runDaemon, startDaemon, tempDir } from '../helpers.js';

const ROOT = process.getuid?.() === 0;
const SKIP = ROOT ? false : 'needs root (to create users and give them files)';

interface User {
  name: string;
  uid: number;
  gid: number;
}

function makeUser(role: string): User {
  const name = `qgsd${role}${process.pid % 10000}${Math.floor(Math.random() * 100)}`;
  execFileSync('useradd', ['-r', '-M', '-U', '-s', '/bin/false', name]);
  const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { name, uid: id('-u'), gid: id('-g') };
}

function removeUser(u: User): void {
  for (const [cmd, arg] of [['userdel', u.name], ['groupdel', u.name]]) {
    try {
      execFileSync(cmd, [arg], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

async function refused(args: string[], re: RegExp): Promise<void> {
  const r = await runDaemon(args);
  assert.equal(r.code, 100, r.stderr);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
}

test('a state directory, or a parent, that another user owns or can write is refused, naming the path and the owner', { skip: SKIP }, async () => {
  const mallory = makeUser('m');
  const daemon = makeUser('d');
  const dir = tempDir();
  chmodSync(dir, 0o755);
  try {
    // owned by another user
    const owned = join(dir, 'owned');
    mkdirSync(owned, { mode: 0o700 });
    chownSync(owned, mallory.uid, mallory.gid);
    await refused(['127.0.0.1:0', owned], new RegExp(`^qgreyd: state directory ${owned}: ${owned} is owned by ${mallory.name} \\(uid ${mallory.uid}\\), not root, so another user could take over the store`));
    // a parent writable by everyone, without the sticky bit
    const open = join(dir, 'open');
    mkdirSync(join(open, 'state'), { recursive: true, mode: 0o700 });
    chmodSync(open, 0o777);
    await refused(['127.0.0.1:0', join(open, 'state')], new RegExp(`${open} is writable by everyone \\(mode 0777\\).*chmod go-w ${open}`));
    // a parent writable by a group, and a state directory that does not exist yet under it
    const grp = join(dir, 'grp');
    mkdirSync(grp, { mode: 0o775 });
    chmodSync(grp, 0o775);
    chownSync(grp, 0, mallory.gid);
    await refused(['127.0.0.1:0', join(grp, 'new')], new RegExp(`${grp} is writable by group ${mallory.name} \\(gid ${mallory.gid}\\) \\(mode 0775\\)`));
    assert.deepEqual(readdirSync(grp), [], 'nothing was created there');
    // a greydaemon save file as the state path, in a group-writable directory: refused before
    // its store directory is made beside it
    const saveDir = join(dir, 'save');
    mkdirSync(saveDir, { mode: 0o775 });
    chmodSync(saveDir, 0o775);
    chownSync(saveDir, 0, mallory.gid);
    writeFileSync(join(saveDir, 'savefile'), 'I 1700000000 192.0.2.1\n');
    await refused(['127.0.0.1:0', join(saveDir, 'savefile')], new RegExp(`${saveDir} is writable by group ${mallory.name}`));
    assert.deepEqual(readdirSync(saveDir), ['savefile'], 'no store directory was made beside the save file');
    // the state directory itself is never allowed to be writable by others, sticky or not
    const sticky = join(dir, 'sticky');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    await refused(['127.0.0.1:0', sticky], new RegExp(`${sticky} is writable by everyone \\(mode 1777\\)`));
    // a symbolic link another user owns, in a sticky directory, pointing to a good directory
    const good = join(dir, 'good');
    mkdirSync(good, { mode: 0o700 });
    const link = join(sticky, 'link');
    symlinkSync(good, link);
    lchownSync(link, mallory.uid, mallory.gid);
    await refused(['127.0.0.1:0', link], new RegExp(`${link} is a symbolic link owned by ${mallory.name} \\(uid ${mallory.uid}\\), not root`));
    const c = await ctl(['stats', '--state', link]);
    assert.equal(c.code, 100, c.stderr);
    assert.match(c.stderr, new RegExp(`^qgreyctl: state directory ${link} is a symbolic link owned by uid ${mallory.uid}, not root or this user`));
    assert.deepEqual(readdirSync(good), [], 'nothing was written through it');
    // our own directory in a sticky world-writable parent is fine (as under /tmp)
    const ours = join(sticky, 'ours');
    const d = await startDaemon(['127.0.0.1:0', ours]);
    assert.equal(await query(d.port, '192.0.2.1', 'a@x.example', ['b@y.example']), '0001');
    assert.equal(await d.stop(), 0);

    // with -u, the daemon's user may own the state directory and its parents; another may not
    const home = join(dir, 'home');
    mkdirSync(join(home, 'state'), { recursive: true, mode: 0o700 });
    chownSync(home, daemon.uid, daemon.gid);
    chownSync(join(home, 'state'), daemon.uid, daemon.gid);
    const du = await startDaemon(['-u', daemon.name, '127.0.0.1:0', join(home, 'state')]);
    assert.equal(await du.stop(), 0);
    await refused(['-u', daemon.name, '127.0.0.1:0', owned], new RegExp(`${owned} is owned by ${mallory.name} \\(uid ${mallory.uid}\\), not root or ${daemon.name},`));
  } finally {
    removeDir(dir);
    removeUser(mallory);
    removeUser(daemon);
  }
});

test('a symbolic link planted in a store is refused; the file it points to is untouched', { skip: SKIP }, async () => {
  const mallory = makeUser('m');
  const dir = tempDir();
  try {
    const state = join(dir, 'state');
    const d = await startDaemon(['127.0.0.1:0', state]);
    assert.equal(await d.stop(), 0);
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'root only\n', { mode: 0o600 });
    // the names LevelDB creates next: a new log, table and manifest at each open
    for (let n = 1; n < 40; n++) {
      for (const name of [`${String(n).padStart(6, '0')}.log`, `${String(n).padStart(6, '0')}.ldb`, `MANIFEST-${String(n).padStart(6, '0')}`]) {
        try {
          symlinkSync(secret, join(state, name));
          lchownSync(join(state, name), mallory.uid, mallory.gid);
        } catch {
          // a file of the store has that name
        }
      }
    }
    await refused(['127.0.0.1:0', state], new RegExp(`^qgreyd: state directory ${state}: ${state}/\\S+ is a symbolic link, which a store never holds`));
    const c = await ctl(['stats', '--state', state]);
    assert.equal(c.code, 100, c.stderr);
    assert.match(c.stderr, /is a symbolic link, which a store never holds/);
    assert.equal(readFileSync(secret, 'utf8'), 'root only\n');
  } finally {
    removeDir(dir);
    removeUser(mallory);
  }
});

test('store files are 0600 whatever the umask qgreyd or qgreyctl is started with', async () => {
  const dir = tempDir();
  const old = process.umask(0o022);
  try {
    const state = join(dir, 'state');
    const d = await startDaemon(['127.0.0.1:0', state]);
    for (let i = 0; i < 50; i++) assert.equal(await query(d.port, '192.0.2.1', `s${i}@x.example`, ['b@y.example']), '0001');
    assert.equal(await d.stop(), 0);
    const save = join(dir, 'save');
    writeFileSync(save, `I ${Math.floor(Date.now() / 1000)} 203.0.113.1\n`);
    const other = join(dir, 'other');
    const r = await ctl(['import', save, '--state', other]);
    assert.equal(r.code, 0, r.stderr);
    for (const s of [state, other]) {
      assert.equal(statSync(s).mode & 0o777, 0o700, s);
      const files = readdirSync(s);
      assert.ok(files.some((f) => f.endsWith('.log')) && files.includes('CURRENT'), files.join(' '));
      for (const f of files) assert.equal(statSync(join(s, f)).mode & 0o777, 0o600, `${s}/${f}`);
    }
  } finally {
    process.umask(old);
    removeDir(dir);
  }
});
