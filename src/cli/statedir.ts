// A state directory nobody else controls, as OpenSSH's StrictModes asks of ~/.ssh: the
// directory and every directory above it must be owned by root or the daemon's user and not
// writable by group or others; a symbolic link on the way must be owned by root or the
// daemon's user too. Otherwise another local user could swap the store, plant a symbolic link
// for LevelDB to write through (as root, over any file), or race the admin socket.
//
// One exception: a world-writable directory with the sticky bit (/tmp) may be a parent, since
// no one else can then rename or delete the entries we own in it. The state directory itself
// may never be group- or world-writable.
import { execFileSync } from 'node:child_process';
import { lchownSync, lstatSync, readlinkSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { makeStateDir, StoreError } from '../store/leveldb.js';
import { UsageError } from './args.js';
import type { Account } from './privileges.js';

const MAX_LINKS = 40;

/** Throws UsageError (exit 100) naming the first path another user controls. Stops at the
 *  first component that does not exist yet (it will be created by us, under checked parents). */
export function checkStateDir(dir: string, uid: number, userName: string): void {
  const top = resolve(dir);
  const refuse = (why: string, fix: string): never => {
    throw new UsageError(`state directory ${top}: ${why}, so another user could take over the store; ${fix}`);
  };
  const trusted = (st: Stats) => st.uid === 0 || st.uid === uid;
  const who = uid === 0 ? 'root' : `root or ${userName}`;
  const checkDir = (path: string, st: Stats, last: boolean) => {
    if (!st.isDirectory()) return; // the store says what is wrong with a non-directory
    if (!trusted(st)) refuse(`${path} is owned by ${nameOf(st.uid)}, not ${who}`, `give a state directory that, with all its parents, is owned by ${who}`);
    const writable = st.mode & 0o022;
    if (writable !== 0 && (last || (st.mode & 0o1000) === 0)) {
      const by = st.mode & 0o002 ? 'everyone' : `group ${groupOf(st.gid)}`;
      refuse(`${path} is writable by ${by} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`, `run chmod go-w ${path}, or give another state directory`);
    }
  };

  checkDir('/', lstatSync('/'), top === '/');
  const pending = top.split('/').filter(Boolean);
  let cur = '/';
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      cur = dirname(cur);
      continue;
    }
    const next = join(cur, part);
    let st: Stats;
    try {
      st = lstatSync(next);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      throw new UsageError(`state directory ${top}: cannot examine ${next} (${code}); check the permissions of its parent directories`);
    }
    if (st.isSymbolicLink()) {
      if (!trusted(st)) refuse(`${next} is a symbolic link owned by ${nameOf(st.uid)}, not ${who}`, `give the real path of a directory only ${who} controls`);
      if (++links > MAX_LINKS) throw new UsageError(`state directory ${top}: too many symbolic links on the way; give the real path`);
      const target = readlinkSync(next);
      pending.unshift(...target.split('/').filter(Boolean));
      if (target.startsWith('/')) cur = '/';
      continue;
    }
    checkDir(next, st, pending.length === 0);
    cur = next;
  }
}

/** Checks the state directory, creates it if missing (for the account, before privileges are
 *  dropped), and checks it again, now that it exists: nobody can have slipped their own
 *  directory in between, or it is refused. */
export function secureStateDir(dir: string, account: Account | null): void {
  const { uid, name } = daemonUser(account);
  checkStateDir(dir, uid, name);
  const path = resolve(dir);
  let exists = true;
  try {
    lstatSync(path);
  } catch {
    exists = false;
  }
  if (!exists) {
    try {
      makeStateDir(path);
    } catch (e) {
      if (e instanceof StoreError) throw new UsageError(e.message);
      throw e;
    }
    if (account) {
      try {
        chownDir(path, account);
      } catch (e) {
        throw new UsageError(`state directory ${path}: cannot give it to user ${account.name} (${(e as NodeJS.ErrnoException).code}); create it by hand, owned by ${account.name}`);
      }
    }
  }
  checkStateDir(dir, uid, name);
}

/** Checks the state directory's path for the daemon's user without creating anything: for a
 *  place qgreyd is about to write in before secureStateDir() can run (a save file's import). */
export function checkStatePath(dir: string, account: Account | null): void {
  const { uid, name } = daemonUser(account);
  checkStateDir(dir, uid, name);
}

function daemonUser(account: Account | null): { uid: number; name: string } {
  const uid = account?.uid ?? process.geteuid?.() ?? 0;
  return { uid, name: account?.name ?? (uid === 0 ? 'root' : nameOf(uid)) };
}

/** lchown: whatever is at the path now, a link is never followed */
function chownDir(path: string, account: Account): void {
  if (!lstatSync(path).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
  lchownSync(path, account.uid, account.gid);
}

function nameOf(uid: number): string {
  return lookup('passwd', uid, 'uid');
}

function groupOf(gid: number): string {
  return lookup('group', gid, 'gid');
}

function lookup(db: 'passwd' | 'group', id: number, label: string): string {
  try {
    const line = execFileSync('getent', [db, String(id)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const name = line.split(':')[0];
    if (name) return `${name} (${label} ${id})`;
  } catch {
    // no such entry
  }
  return `${label} ${id}`;
}
